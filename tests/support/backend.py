"""A fake backend: a real HTTP server on loopback that records every callback it receives.

Tests tell it how to answer connect callbacks (status, body, delay, or drop the connection) and
await what it recorded (``await backend.wait_for_calls(action="disconnect", count=1)``) instead
of sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from tornado_sse_client import verify

from .waiting import wait_until


@dataclass
class Answer:
    """How the fake backend answers one callback."""

    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the TCP connection instead of answering
    chunked: bool = False  # send the body in flushed 64 KiB pieces, without a Content-Length


@dataclass(frozen=True)
class Callback:
    """One callback as the backend received it."""

    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]

    @property
    def action(self) -> str:
        return str(self.body.get("action"))

    @property
    def token(self) -> str:
        return str(self.body.get("token"))


class FakeBackend:
    """Records callbacks; answers connects with :attr:`connect_answer` (or :attr:`answer_for`)."""

    def __init__(self, *, idle_timeout: float | None = None, drop_reused: bool = False) -> None:
        """``idle_timeout`` closes kept-alive connections idle that long (as gunicorn's
        keep-alive does); ``drop_reused`` answers only the first request of each connection
        and closes the connection right after reading any later one, without answering."""
        self.calls: list[Callback] = []
        self.connect_answer = Answer()
        self.disconnect_answer = Answer()
        #: Answers for the next disconnect callbacks, used up in order before
        #: :attr:`disconnect_answer`.
        self.disconnect_answers: list[Answer] = []
        self.drop_reused = drop_reused
        self._requests_seen: dict[int, int] = {}
        #: If set, decides the answer to each connect callback from its body.
        self.answer_for: Callable[[dict[str, Any]], Answer] | None = None
        #: Called with each connect body as it arrives (before the answer), e.g. to send events.
        self.on_connect: Callable[[dict[str, Any]], Any] | None = None
        #: If set, a callback whose ``X-SSE-Signature`` does not verify with this secret is
        #: recorded and answered 401, as a backend that checks signatures does.
        self.secret: str | None = None
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        sock, self.port = bind_unused_port()
        self._server = HTTPServer(
            # Like a real web application: callbacks on /callback, 404 everywhere else.
            Application([(r"/callback", _CallbackHandler, {"backend": self})]),
            idle_connection_timeout=idle_timeout,
        )
        self._server.add_sockets([sock])

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d/callback" % self.port

    def is_reused(self, connection: object) -> bool:
        """Count a request on ``connection``; True if it is not the connection's first."""
        seen = self._requests_seen.get(id(connection), 0)
        self._requests_seen[id(connection)] = seen + 1
        return seen > 0

    def record(self, callback: Callback) -> None:
        self.calls.append(callback)
        self._changed.set()

    def of(self, action: str, token: str | None = None) -> list[Callback]:
        """Callbacks recorded for ``action`` (and ``token``)."""
        return [c for c in self.calls if c.action == action and (token is None or c.token == token)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking after each callback; fail at timeout."""
        await wait_until(predicate, self._changed, timeout)

    async def wait_for_calls(
        self, action: str, count: int = 1, token: str | None = None, timeout: float = 5.0
    ) -> list[Callback]:
        """Wait until at least ``count`` ``action`` callbacks (for ``token``) were recorded."""
        await self.wait_for(lambda: len(self.of(action, token)) >= count, timeout)
        return self.of(action, token)

    async def pause(self, seconds: float) -> None:
        """The backend "thinking" for ``seconds``; cut short when the backend is closed."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass

    def close(self) -> None:
        self._closing.set()
        self._server.stop()


class _CallbackHandler(RequestHandler):
    def initialize(self, backend: FakeBackend) -> None:
        self.backend = backend

    async def post(self) -> None:
        raw = self.request.body
        body = json.loads(raw)
        headers = {k.lower(): v for k, v in self.request.headers.get_all()}
        self.backend.record(Callback(body=body, raw=raw, headers=headers))
        secret = self.backend.secret
        if secret is not None and not verify(raw, headers.get("x-sse-signature"), secret):
            self.set_status(401)
            self.finish(b'{"error": "bad signature"}')
            return
        if self.backend.drop_reused and self.backend.is_reused(self.request.connection):
            self.request.connection.close()  # type: ignore[union-attr]
            return
        if body.get("action") == "connect":
            if self.backend.on_connect is not None:
                result = self.backend.on_connect(body)
                if asyncio.iscoroutine(result):
                    await result
            chooser = self.backend.answer_for
            answer = chooser(body) if chooser is not None else self.backend.connect_answer
        elif self.backend.disconnect_answers:
            answer = self.backend.disconnect_answers.pop(0)
        else:
            answer = self.backend.disconnect_answer
        if answer.delay:
            await self.backend.pause(answer.delay)
        if answer.drop:
            self.request.connection.close()  # type: ignore[union-attr]
            return
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        if answer.chunked:
            for start in range(0, len(answer.body), 65536):  # bounded by the body's size
                self.write(answer.body[start : start + 65536])
                try:
                    await self.flush()
                except StreamClosedError:
                    return  # the gateway stopped reading, as it should past its limit
        self.finish(b"" if answer.chunked else answer.body)
