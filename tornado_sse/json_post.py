"""The internal API's JSON POST endpoints (``/internal/send``, ``/internal/subscribe``,
``/internal/unsubscribe``), served straight from Tornado's HTTP/1 connection.

These are the requests a backend sends most, one per event, so they skip what a
``RequestHandler`` builds for every request and these endpoints never use (the request object
with its parsed arguments and cookies, the output transforms, the default headers, a
coroutine per step). The contract is the one every internal endpoint keeps (PROTOCOL 4):

- 401 ``UNAUTHORIZED`` without the bearer secret, 405 for another method, 415 for a body that
  is not JSON, 413 for one over ``MAX_BODY_BYTES`` (from ``Content-Length`` at once, or as soon
  as the bytes received pass it). A request refused before its body was read is answered at
  once, then the connection is closed only after a lingering close: what the client still sends
  is read and discarded until the body ends, the client leaves, or :data:`LINGER_SECONDS` or
  :data:`LINGER_MAX_BYTES` run out. Closing at once would leave unread bytes in the kernel,
  which then answers the client with a TCP reset, and a reset destroys the answer before the
  client has read it (RFC 9112 9.6; nginx's lingering close). The answer says
  ``Connection: close``: the rest of the body is never parsed as a next request.
- Every other answer is the JSON its endpoint decides (:class:`PostAnswer`), ``400
  INVALID_JSON`` for a body that is not JSON, ``500 INTERNAL_ERROR`` (logged with its
  traceback) for a bug.
- Each request is counted by route and status, and logged as the access log logs every
  internal request (:func:`tornado_sse.ops.log_access`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from asyncio import Future
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any

from tornado import httputil
from tornado.concurrent import future_add_done_callback
from tornado.http1connection import HTTP1Connection
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError

from . import protocol
from .errors import (
    GatewayError,
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    error_dict,
)
from .gateway import Answered, Gateway
from .handlers import AUTH_CHALLENGES
from .log import fields
from .ops import log_access
from .protocol import SubscriptionRequest
from .writer import write_all

log = logging.getLogger("tornado_sse.handlers")

#: What an endpoint does with a decoded body: its HTTP status and JSON answer, at once when
#: nothing had to wait (a send to a stream of this process), else as an awaitable of it (as
#: :meth:`Gateway.answer_body <tornado_sse.gateway.Gateway.answer_body>` answers). Either may
#: raise a ``GatewayError`` for a refusal.
PostAnswer = Callable[[Any], Answered | Awaitable[Answered]]

#: After refusing a request before its body was read, read and discard what the client still
#: sends for at most this many seconds...
LINGER_SECONDS = 5.0
#: ...and at most this many bytes (more than the largest body a backend sends by mistake), then
#: close the connection.
LINGER_MAX_BYTES = 256 * 1024 * 1024

_JSON_TYPE_RE = re.compile(r"^application/([a-z0-9.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)


class HTTPDate:
    """The ``Date`` header's value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True)
        return self._value


class JSONPost(httputil.HTTPMessageDelegate):
    """One request to a JSON POST endpoint, on one HTTP/1 connection.

    ``answer`` decides the answer of a body read whole (within ``MAX_BODY_BYTES``) and decoded;
    ``route`` is the endpoint's path, the label it is counted under.
    """

    def __init__(
        self,
        gateway: Gateway,
        connection: HTTP1Connection,
        route: str,
        answer: PostAnswer,
        date: HTTPDate,
    ) -> None:
        self._gateway = gateway
        self._connection = connection
        self._route = route
        self._answer = answer
        self._date = date
        self._started = time.monotonic()
        self._method = "POST"
        self._body = bytearray()
        self._lingering = False
        self._discarded = 0
        self._linger_timer: object | None = None
        self._closed = False
        self._version = "HTTP/1.1"
        self._keep_alive = True
        self._task: asyncio.Future[None] | None = None
        #: Whether the answer was written, and the future of Tornado's write of what the
        #: socket did not take at once (``None``: it took it all).
        self._answered = False
        self._written: Future[None] | None = None

    # -- Tornado's HTTPMessageDelegate -------------------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self._method = start_line.method
        self._version = start_line.version
        self._keep_alive = keeps_alive(start_line, headers)
        # This delegate enforces MAX_BODY_BYTES and the linger bounds itself, discarding what it
        # does not keep; Tornado's own limit would cut the connection without an answer.
        self._connection.set_max_body_size(sys.maxsize)
        try:
            self._admit(start_line, headers)
        except GatewayError as error:
            # Tornado would write "100 Continue" after this final answer; a client that asked
            # for it now knows not to send the body at all.
            headers.pop("Expect", None)
            self._refuse(error)

    def data_received(self, chunk: bytes) -> None:
        if self._lingering:
            self._discarded += len(chunk)
            if self._discarded > LINGER_MAX_BYTES:
                self._end_linger(drained=False)
            return
        self._body += chunk
        limit = self._gateway.settings.max_body_bytes
        if len(self._body) > limit:
            self._body = bytearray()
            self._refuse(PayloadTooLarge(limit))

    def finish(self) -> None:
        if self._lingering:
            self._end_linger(drained=True)  # the refused body has been read to its end
            return
        try:
            answered = self._answer(protocol.decode_json(bytes(self._body)))
        except Exception as exc:  # noqa: BLE001 - every failure is an answer (_failed)
            answered = self._failed(exc)
        if isinstance(answered, tuple):
            self._reply(answered)
        else:  # it waits (for the broker): answered when it is done, in a task
            self._task = asyncio.ensure_future(self._reply_later(answered))

    def on_connection_close(self) -> None:
        self._closed = True
        self._end_linger(drained=False)

    # -- the request ------------------------------------------------------------------------

    def _admit(self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> None:
        """Raise the refusal a request gets on its head alone, if any."""
        settings = self._gateway.settings
        if start_line.method != "POST":
            raise MethodNotAllowed()
        if settings.internal_secret is not None and not protocol.credentials_match(
            headers.get("Authorization"), settings.internal_secret
        ):
            raise Unauthorized()
        length = headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            raise PayloadTooLarge(settings.max_body_bytes)
        content_type = headers.get("Content-Type")
        if content_type is not None and not _JSON_TYPE_RE.match(content_type.strip()):
            raise UnsupportedMediaType()

    async def _reply_later(self, waiting: Awaitable[Answered]) -> None:
        try:
            answered = await waiting
        except Exception as exc:  # noqa: BLE001 - every failure is an answer (_failed)
            answered = self._failed(exc)
        self._reply(answered)

    def _failed(self, exc: Exception) -> Answered:
        """The answer of a refusal (``GatewayError``), or 500 for a bug, logged."""
        if isinstance(exc, GatewayError):
            return exc.status, exc.to_dict()
        log.error(
            "uncaught exception",
            extra=fields(method=self._method, path=self._route),
            exc_info=exc,
        )
        return 500, error_dict("INTERNAL_ERROR", "Internal Server Error")

    def _reply(self, answered: Answered) -> None:
        """Write the answer, then finish the request on the connection once it is out."""
        status, value = answered
        if self._write(status, protocol.dumps(value)):
            self._once_written(self._connection.finish)

    def _once_written(self, then: Callable[[], None]) -> None:
        """Call ``then()`` once the answer written is out: now if the socket took it all."""
        if self._written is None:
            then()
        else:
            future_add_done_callback(self._written, lambda _: then())

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` now, before the body has been read, then linger (module doc)."""
        log.debug("request refused", extra=fields(status=error.status, code=error.code))
        self._lingering = True
        extra = b""
        if isinstance(error, Unauthorized):
            extra = b"".join(b"WWW-Authenticate: %s\r\n" % c.encode() for c in AUTH_CHALLENGES)
        self._write(error.status, error.to_json(), close=True, extra=extra)
        self._linger_timer = IOLoop.current().call_later(
            LINGER_SECONDS, self._end_linger, drained=False
        )

    def _end_linger(self, *, drained: bool) -> None:
        """End a lingering close: close the connection once the answer is written when the
        whole body was read (``drained``), at once otherwise (a bound ran out, or the client
        left)."""
        if not self._lingering:
            return
        self._lingering = False
        if self._linger_timer is not None:
            IOLoop.current().remove_timeout(self._linger_timer)
            self._linger_timer = None
        if drained and self._answered:
            self._once_written(self._connection.close)
        else:
            self._connection.close()

    def _write(self, status: int, body: bytes, *, close: bool = False, extra: bytes = b"") -> bool:
        """Write the whole answer (head and body) in one piece, count it and log it; whether
        it was written (not if the client had left). The caller finishes the request on the
        connection once the bytes are out (:meth:`_once_written`), or the lingering close
        does."""
        self._gateway.count_request(self._route, status)
        log_access(status, self._method, self._route, time.monotonic() - self._started)
        if self._closed:
            return False
        connection = b""
        if close or not self._keep_alive:
            connection = b"Connection: close\r\n" if self._version == "HTTP/1.1" else b""
        elif self._version == "HTTP/1.0":
            connection = b"Connection: Keep-Alive\r\n"
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            status,
            httputil.responses.get(status, "Unknown").encode("latin-1"),
            len(body),
        )
        try:
            self._written = write_all(
                self._connection.stream,
                b"%sDate: %s\r\n%s%s\r\n%s"
                % (head, self._date.now().encode("latin-1"), extra, connection, body),
            )
        except StreamClosedError:
            return False  # the client left: the connection's close ends the request
        self._answered = True
        return True


def keeps_alive(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> bool:
    """Whether Tornado's HTTP/1 connection keeps the connection open after answering this
    request (its rule: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with
    ``Connection: keep-alive`` and a framed body or none)."""
    connection = (headers.get("Connection") or "").lower()
    if start_line.version == "HTTP/1.1":
        return connection != "close"
    framed = (
        "Content-Length" in headers
        or headers.get("Transfer-Encoding", "").lower() == "chunked"
        or start_line.method in ("HEAD", "GET")
    )
    return framed and connection == "keep-alive"


def answer_send(gateway: Gateway) -> PostAnswer:
    """``/internal/send``: one send (an object) or a batch (an array), PROTOCOL 4.1, as
    :meth:`Gateway.answer_body <tornado_sse.gateway.Gateway.answer_body>` decides."""
    return gateway.answer_body


def answer_subscription(gateway: Gateway, add: bool) -> PostAnswer:
    """``/internal/subscribe`` (``add``) and ``/internal/unsubscribe``, PROTOCOL 4.3."""

    async def change(request: SubscriptionRequest) -> Answered:
        return 200, await gateway.change_subscription(request, add)

    def answer(body: Any) -> Awaitable[Answered]:
        return change(protocol.validate_subscription(body))

    return answer
