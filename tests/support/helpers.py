"""Small helpers for the stream-endpoint integration tests (PROTOCOL.md sections 1-3).

They check shapes the contract fixes (JSON errors, UUID4 tokens, a clean end of a chunked
body) and the network trick some tests need (a second listener for the fake backend). Every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any, Protocol

from tornado.netutil import bind_sockets

from .backend import Callback, FakeBackend
from .raw_http import Headers, read_chunk
from .sse_client import SSEStream


def is_uuid4(text: object) -> bool:
    """Whether ``text`` is a UUID4 in its canonical lower-case, hyphenated string form."""
    if not isinstance(text, str):
        return False
    try:
        value = uuid.UUID(text)
    except ValueError:
        return False
    return value.version == 4 and str(value) == text


async def assert_json_error(
    stream: SSEStream, status: int, code: str, *, cors: bool = True
) -> dict[str, Any]:
    """Read ``stream``'s body and check it is the contract's JSON error ``code`` with ``status``.

    The body must be exactly ``{"error": {"code": code, "message": <non-empty str>}}`` with
    ``Content-Type: application/json``. With ``cors`` (errors of the stream endpoint, default
    ``CORS_ORIGINS=*``) it must also carry ``Access-Control-Allow-Origin: *``. Returns the body.
    """
    # Check the status first: a stream accepted by mistake would never end.
    assert stream.status == status, (stream.status, stream.headers)
    raw = await stream.read_to_end()
    content_type = stream.headers.get("content-type", "")
    assert content_type.split(";")[0].strip().lower() == "application/json", (content_type, raw)
    body = json.loads(raw)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"].strip(), body
    if cors:
        assert stream.headers.get("access-control-allow-origin") == "*", stream.headers
    return body


def listen_also_on(backend: FakeBackend, port: int) -> None:
    """Make ``backend`` also accept callbacks on ``port`` of 127.0.0.1 (e.g. a port that was
    closed a moment ago), so a gateway configured with that port reaches it from now on."""
    sockets = bind_sockets(port, "127.0.0.1")
    backend._server.add_sockets(sockets)  # the fake exposes no public way to add a listener


async def read_to_clean_end(stream: SSEStream, timeout: float = 5.0) -> bool:
    """Read the rest of a chunked body into ``stream`` (``raw``, ``events``); True if it ended
    with the terminating zero-size chunk, False if the connection was cut instead.

    :meth:`SSEStream.read_to_end` treats both the same; the contract's clean end (a browser sees
    the stream end and reconnects) is the terminating chunk.
    """
    assert stream.headers.get("transfer-encoding", "").lower() == "chunked", stream.headers

    async def loop() -> bool:
        while True:
            data = await read_chunk(stream.reader)
            if data is None:
                return False
            if not data:
                return True
            stream.raw += data
            stream.events.extend(stream.parser.feed(data))

    try:
        return await asyncio.wait_for(loop(), timeout)
    finally:
        stream.ended = True


def connects_for(backend: FakeBackend, url: str) -> list[Callback]:
    """The connect callbacks recorded for the request target ``url``."""
    return [c for c in backend.of("connect") if c.body["request"]["url"] == url]


class OpensStreams(Protocol):
    """A gateway under test: the ``gateway`` fixture's, or one in a process of its own."""

    async def stream(self, path: str, headers: Headers | None = None) -> SSEStream:
        """Open a stream on ``path`` (any status)."""
        ...


async def open_with_token(
    gw: OpensStreams,
    backend: FakeBackend,
    path: str = "/sse/test",
    headers: Headers | None = None,
) -> tuple[SSEStream, str]:
    """Open a stream on ``gw``; return it and its token, read from the connect callback
    ``backend`` recorded for it.

    The stream must be accepted (200), and streams must be opened one at a time: the token is
    that of the first connect callback recorded after the call, which must be for ``path``.
    """
    before = len(backend.of("connect"))
    stream = await gw.stream(path, headers)
    assert stream.status == 200, (stream.status, await stream.read_to_end())
    calls = await backend.wait_for_calls("connect", count=before + 1)
    connect = calls[before]
    assert connect.body["request"]["url"] == path, (path, connect.body)
    return stream, connect.token


async def open_and_close_another(gw: OpensStreams, backend: FakeBackend, path: str) -> Callback:
    """Open an accepted stream on ``path``, leave, and wait for its disconnect callback.

    Proves an absence: a disconnect the gateway would have sent for an earlier stream was
    scheduled before this one's and has had its chance to arrive. No other stream may be opening
    meanwhile, and ``backend`` must accept this one. Returns the disconnect callback received.
    """
    stream, token = await open_with_token(gw, backend, path)
    await stream.aclose()
    (disconnect,) = await backend.wait_for_calls("disconnect", token=token)
    return disconnect
