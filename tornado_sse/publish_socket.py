"""The publish socket, ``GET /internal/ws`` (wire contract 4.5): ``/internal/send`` over one
WebSocket, for backends that send many events.

Each text message is what ``/internal/send`` takes (an object or a batch array), plus an
optional top-level ``"ref"`` on an object; each is answered, in order, by one text message
``{"ref", "status", "body"}``: the status and body that ``/internal/send`` would have answered,
decided by the same code (:meth:`~tornado_sse.gateway.Gateway.answer_body`). Messages are
processed one after the other, each to its end (a send that waits, for Redis or a buffer, holds
back the next), so they are applied and answered in the order they came.

Answers are framed here (uncompressed text frames: the socket never negotiates
permessage-deflate) and the answers of the messages that arrived together leave in one socket
write, once those messages are applied: a backend that pipelines gets one write, not one per
message, and every answer still goes out in order and before any control frame (a close
included) that follows it.

Everything is decided before the upgrade, and refused with a JSON error: the bearer secret
(401), a draining gateway (503), a request that is not a WebSocket handshake (400, 426), a page
of another origin (403). Once open, the socket is closed by the gateway with

- 1009 for a message over ``MAX_BODY_BYTES`` (Tornado's ``max_message_size``),
- 1007 for a text message that is not UTF-8 (RFC 6455 8.1),
- 1003 for a binary message (the protocol is JSON text),
- 1008 when more than ``MAX_QUEUED_BYTES`` of answers are written but not accepted by the
  socket (a backend that stopped reading its answers), and
- 1001 when the gateway shuts down.
"""

from __future__ import annotations

import collections
import logging
import time
from asyncio import Future
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.websocket import (
    WebSocketHandler,
    WebSocketProtocol,
    WebSocketProtocol13,
    _WebSocketParams,
)

from tornado_sse_client.websocket import OP_TEXT, encode_frame

from . import protocol
from .errors import (
    CrossOriginRefused,
    GatewayError,
    NotAWebSocket,
    ShuttingDown,
    WebSocketVersionUnsupported,
)
from .gateway import Answered
from .handlers import InternalHandler
from .log import fields
from .writer import write_all

log = logging.getLogger("tornado_sse.socket")

#: Close codes (RFC 6455 7.4.1) the gateway ends a publish socket with.
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NOT_UTF8 = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009  # written by Tornado itself, see PublishSocketHandler.max_message_size
#: The ``why`` of ``tornado_sse_publish_socket_closes_total`` for the closes that
#: :class:`PublishProtocol` decides.
PROTOCOL_CLOSES = {CLOSE_TOO_BIG: "too_big", CLOSE_NOT_UTF8: "not_utf8"}


class PublishProtocol(WebSocketProtocol13):
    """Tornado's RFC 6455 protocol, with two things the publish socket needs on top: a text
    message that is not UTF-8 ends the socket with 1007 and a close frame (RFC 6455 8.1), not
    with a bare TCP close; and the first close code sent is kept (``sent_code``), so that the
    closes Tornado decides itself (1009) are counted like the gateway's own."""

    sent_code: int | None = None
    #: Called before any frame Tornado writes itself (a pong, a ping, a close), so that the
    #: answers the handler holds leave before it.
    before_frame: Any = None

    def _write_frame(self, fin: bool, opcode: int, data: bytes, flags: int = 0) -> Future[None]:
        if self.before_frame is not None:
            self.before_frame()
        return super()._write_frame(fin, opcode, data, flags)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if self.sent_code is None and not self.server_terminated:
            self.sent_code = code
        super().close(code, reason)

    def _handle_message(self, opcode: int, data: bytes) -> Future[None] | None:
        if opcode == 0x1 and not self.client_terminated and not self._frame_compressed:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.close(CLOSE_NOT_UTF8, "text messages must be UTF-8")
                self._abort()
                return None
        return super()._handle_message(opcode, data)


def handshake_problem(headers: Any) -> GatewayError | None:
    """Why the request headers ``headers`` are not a WebSocket opening handshake that a server
    may accept (RFC 6455 4.2.1, and not from a page of another origin), or ``None``.

    A request with an ``Origin`` that is not the ``Host`` it was sent to, or that a browser
    marks ``Sec-Fetch-Site: cross-site``/``same-site``, comes from a page: refused. Servers
    send no ``Origin`` at all.
    """
    if headers.get("Upgrade", "").lower() != "websocket":
        return NotAWebSocket("send 'Upgrade: websocket'")
    connection = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
    if "upgrade" not in connection:
        return NotAWebSocket("send 'Connection: Upgrade'")
    if not headers.get("Sec-WebSocket-Key"):
        return NotAWebSocket("send 'Sec-WebSocket-Key'")
    if headers.get("Sec-WebSocket-Version") != "13":
        return WebSocketVersionUnsupported()
    site = headers.get("Sec-Fetch-Site")
    origin = headers.get("Origin")
    if site in ("same-origin", "none"):
        return None
    if site is not None:
        return CrossOriginRefused()
    if origin is not None and urlsplit(origin).netloc.lower() != headers.get("Host", "").lower():
        return CrossOriginRefused()
    return None


class PublishSocketHandler(InternalHandler, WebSocketHandler):
    """``GET /internal/ws``: the publish socket (see the module's docstring)."""

    _opened_at = 0.0
    _messages = 0
    _closed_by: str | None = None
    #: The protocol object of the upgrade (Tornado drops its own reference before on_close).
    _protocol: PublishProtocol | None = None

    def prepare(self) -> None:
        super().prepare()  # INTERNAL_SECRET: 401 before anything else
        if self.gateway.draining:
            raise ShuttingDown()
        problem = handshake_problem(self.request.headers)
        if problem is not None:
            raise problem
        #: Answers written but not yet accepted by the socket: (write future, size), oldest
        #: first; the frames of answers not yet written; and the size of both together.
        self._unwritten: collections.deque[tuple[Future[None], int]] = collections.deque()
        self._frames: list[bytes] = []
        self._unwritten_bytes = 0
        self._limit = self.gateway.settings.max_queued_bytes
        self._counters: dict[int, Counter] = {}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info", (None, None, None))[1], WebSocketVersionUnsupported):
            self.set_header("Sec-WebSocket-Version", "13")
        super().write_error(status_code, **kwargs)

    def check_origin(self, origin: str) -> bool:
        return True  # decided in prepare(), with a JSON answer (handshake_problem)

    @property
    def max_message_size(self) -> int:
        """``MAX_BODY_BYTES``: a bigger message closes the socket with 1009."""
        return self.gateway.settings.max_body_bytes

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's choice (version 13 only), with :class:`PublishProtocol`, without
        compression (the answers are framed here, unmasked and uncompressed)."""
        if self.request.headers.get("Sec-WebSocket-Version") != "13":
            return None
        params = _WebSocketParams(
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            max_message_size=self.max_message_size,
            compression_options=None,
        )
        self._protocol = PublishProtocol(self, False, params)
        self._protocol.before_frame = self._flush
        return self._protocol

    def open(self, *args: str, **kwargs: str) -> None:
        self._opened_at = time.monotonic()
        self.set_nodelay(True)  # each answer leaves at once: backends wait for them
        self.gateway.socket_opened(self)
        log.info("publish socket opened", extra=fields(peer=self.request.remote_ip))

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """Apply one message and answer it. A send that must wait (for the broker) is
        answered by the coroutine returned, which Tornado awaits before it reads the next
        message; the others are answered here and then.

        A message that comes after the gateway began to close the socket is not applied: it
        could not be answered."""
        if self.ws_connection is None or self.ws_connection.is_closing():
            return None
        if isinstance(message, bytes):
            self._close(CLOSE_UNSUPPORTED_DATA, "binary", "text messages only (JSON)")
            return None
        ref = None
        try:
            ref, body = protocol.split_ref(protocol.decode_json(message))
        except GatewayError as error:
            answered: Answered | Awaitable[Answered] = (error.status, error.to_dict())
        else:
            answered = self.gateway.answer_body(body)
        if isinstance(answered, tuple):
            self._answer(ref, answered)
            return None
        return self._answer_later(ref, answered)

    async def _answer_later(self, ref: Any, waiting: Awaitable[Answered]) -> None:
        self._answer(ref, await waiting)

    def _count(self, status: int) -> None:
        counter = self._counters.get(status)
        if counter is None:
            counter = self._counters[status] = self.gateway.metrics.socket_messages.labels(
                str(status)
            )
        counter.inc()

    def _answer(self, ref: Any, answered: Answered) -> None:
        """Count one answer and queue its frame for :meth:`_flush` (soon, once the messages
        that arrived with this one are applied), unless the socket is closing; close the
        socket when the answers it has not accepted yet are over the bound."""
        status, body = answered
        self._messages += 1
        self._count(status)
        if self.ws_connection is None or self.ws_connection.is_closing():
            return  # closed while the send was applied: nobody is left to tell
        answer = protocol.encode_socket_answer(ref, status, body).encode("utf-8")
        frame = encode_frame(OP_TEXT, answer, mask=False)
        if not self._frames:
            IOLoop.current().add_callback(self._flush)
        self._frames.append(frame)
        self._unwritten_bytes += len(frame)
        if self._unwritten_bytes > self._limit and self._reap() > self._limit:
            log.warning(
                "publish socket closed: its answers are not read",
                extra=fields(peer=self.request.remote_ip, unwritten=self._unwritten_bytes),
            )
            self._close(CLOSE_POLICY_VIOLATION, "not_reading", "answers not read")

    def _reap(self) -> int:
        """Take the writes the socket has accepted off the bound; what is left unaccepted."""
        unwritten = self._unwritten
        while unwritten and unwritten[0][0].done():  # they are written in order
            done, size = unwritten.popleft()
            self._unwritten_bytes -= size
            _retrieve(done)  # a failed write is the socket's end, seen in on_close
        return self._unwritten_bytes

    def _flush(self) -> None:
        """Write the queued answers in one write: straight to the socket when it takes them
        (:func:`~tornado_sse.writer.write_all`), else through Tornado's buffer."""
        self._reap()
        frames = self._frames
        if not frames or self._protocol is None:
            return
        data = b"".join(frames)
        frames.clear()
        try:
            future = write_all(self._protocol.stream, data)
        except StreamClosedError:
            future = None  # the socket's end, seen in on_close
        if future is None:  # taken by the socket at once (or never to be)
            self._unwritten_bytes -= len(data)
        else:
            self._unwritten.append((future, len(data)))

    def _close(self, code: int, why: str, reason: str) -> None:
        if self._closed_by is None:
            self._closed_by = why
            self.gateway.metrics.socket_closes.labels(why).inc()
        self.close(code, reason)

    def shut_down(self) -> None:
        """End the socket with 1001: the gateway is shutting down."""
        self._close(CLOSE_GOING_AWAY, "shutdown", "the gateway is shutting down")

    def on_close(self) -> None:
        if not self._opened_at:
            return  # refused before the upgrade
        sent = self._protocol.sent_code if self._protocol is not None else None
        if self._closed_by is None and sent in PROTOCOL_CLOSES:
            self._closed_by = PROTOCOL_CLOSES[sent]
            self.gateway.metrics.socket_closes.labels(self._closed_by).inc()
        self.gateway.socket_closed(self)
        for future, _ in getattr(self, "_unwritten", ()):
            future.add_done_callback(_retrieve)  # their failure is this close: nothing to log
        log.info(
            "publish socket closed",
            extra=fields(
                peer=self.request.remote_ip,
                messages=self._messages,
                code=self.close_code,
                by=self._closed_by,
                duration=round(time.monotonic() - self._opened_at, 3),
            ),
        )


def _retrieve(future: Future[None]) -> None:
    if not future.cancelled():
        future.exception()
