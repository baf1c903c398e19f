"""HTTP handlers: thin adapters between Tornado and the :class:`~tornado_sse.gateway.Gateway`.

Every error leaves as the JSON shape of the wire contract (see :class:`JSONErrorMixin`); the
decisions live in the gateway, registry and protocol modules.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from typing import Any, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError
from tornado.web import HTTPError, RequestHandler, stream_request_body

from . import protocol
from .backend import Outcome
from .connection import State
from .errors import (
    GatewayError,
    NotFound,
    ServiceNotConfigured,
    ServiceUnavailable,
    Unauthorized,
    code_for_status,
    error_json,
)
from .gateway import Gateway
from .registry import CLIENT_CLOSED

log = logging.getLogger("tornado_sse.handlers")

_REQUEST_ID_RE = re.compile(r"[!-~]{1,128}")
_JSON_TYPE_RE = re.compile(r"^application/([a-z0-9.+-]+\+)?json\s*(;.*)?$", re.IGNORECASE)


class JSONErrorMixin(RequestHandler):
    """JSON errors for every failure, and no traceback in logs for expected ones."""

    gateway: Gateway

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, GatewayError):
            self.set_status(exc.status)
            status_code = exc.status
            code, message = exc.code, exc.message
        elif isinstance(exc, HTTPError):
            code = code_for_status(status_code)
            message = exc.log_message or httputil.responses.get(status_code, "error")
            if exc.args and "%" in message:
                message = message % exc.args
        else:
            code, message = (
                code_for_status(status_code),
                httputil.responses.get(status_code, "error"),
            )
        if status_code == 304 or status_code < 200:
            self.finish()  # these statuses cannot carry a body
            return
        self.set_header("Content-Type", "application/json")
        self.finish(error_json(code, message))

    def send_gateway_error(self, error: GatewayError) -> None:
        """Answer with ``error`` (its status and JSON body)."""
        self.send_error(error.status, exc_info=(type(error), error, None))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, GatewayError):
            log.debug("request refused status=%d code=%s", value.status, value.code)
        else:
            super().log_exception(typ, value, tb)

    def write_json(self, value: Any, status: int = 200) -> None:
        """Answer ``status`` with ``value`` as compact JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


class PublicHandler(JSONErrorMixin):
    """Base of the endpoints pages may call: CORS headers and ``OPTIONS`` preflights."""

    def initialize(self, gateway: Gateway) -> None:
        super().initialize(gateway)
        self._set_cors_headers()

    def set_default_headers(self) -> None:
        # Tornado calls this before initialize() and again after clear() on errors.
        if hasattr(self, "gateway"):
            self._set_cors_headers()

    def _set_cors_headers(self) -> None:
        origins = self.gateway.settings.cors_origin_list
        if not origins:
            return
        if origins == ("*",):
            self.set_header("Access-Control-Allow-Origin", "*")
            return
        origin = self.request.headers.get("Origin")
        self.set_header("Vary", "Origin")
        if origin is not None and origin in origins:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Credentials", "true")

    def options(self, *args: str) -> None:
        if self.gateway.settings.cors_origin_list:
            self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
            self.set_header(
                "Access-Control-Allow-Headers", "Content-Type, Cache-Control, Last-Event-ID"
            )
            self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()


class ChunkEncoder:
    """HTTP/1.1 chunk framing of SSE frames that remembers the last frame it framed, so that a
    fan-out or a heartbeat round, which writes one shared frame to every stream, frames it once.
    """

    __slots__ = ("_frame", "_chunk")

    def __init__(self) -> None:
        self._frame = b""
        self._chunk = b""

    def __call__(self, frame: bytes) -> bytes:
        if frame is not self._frame:
            self._frame, self._chunk = frame, b"%x\r\n%b\r\n" % (len(frame), frame)
        return self._chunk


class StreamHandler(PublicHandler):
    """``GET {SSE_PATH_PREFIX}...``: the connect callback, then the event stream.

    Also the :class:`~tornado_sse.connection.StreamWriter` of its connection.
    """

    conn = None
    _done: asyncio.Future[None] | None = None
    _stream: IOStream
    _chunked = False
    _direct = False

    def initialize(self, gateway: Gateway, chunks: ChunkEncoder | None = None) -> None:
        super().initialize(gateway)
        self.chunks = chunks or ChunkEncoder()

    async def prepare(self) -> None:
        if self.request.method != "GET":
            return
        try:
            await self._open_stream()
        except GatewayError as error:
            if self._retryable(error):
                self._answer_retry(error)
                return
            raise

    def _retryable(self, error: GatewayError) -> bool:
        """Whether ``error`` is transient and ``RETRY_ON_UNAVAILABLE`` asks for a retry stream."""
        return (
            self.gateway.settings.retry_on_unavailable
            and error.status in (503, 504)
            and error.code != ServiceNotConfigured.code
            and not self._http.stream.closed()
        )

    async def _open_stream(self) -> None:
        gw = self.gateway
        if not gw.configured:
            raise ServiceNotConfigured("CALLBACK_URL is not set: no stream can be authorised")
        if gw.draining:
            raise ServiceUnavailable("the gateway is shutting down", code="SHUTTING_DOWN")
        if gw.full:
            raise ServiceUnavailable(
                "the gateway holds its maximum of streams", code="TOO_MANY_CONNECTIONS"
            )
        request = self.request
        conn = self.conn = gw.new_connection(
            request.uri or "/",
            protocol.capture_headers(request.headers.get_all()),
            _request_id(request.headers.get("X-Request-ID")),
            _last_event_id(request),
        )
        outcome = await gw.connect(conn)
        if outcome.outcome is not Outcome.ACCEPTED:
            raise _connect_error(outcome.outcome, outcome.status, outcome.message)
        if conn.state is State.CLOSED:
            # The client left, or the gateway began draining, while the backend answered.
            await gw.open(conn, self)  # reports the end to the backend
            if conn.close_reason == CLIENT_CLOSED:
                return  # nobody is left to answer
            raise ServiceUnavailable("the gateway is shutting down", code="SHUTTING_DOWN")
        self._set_stream_headers()
        self._done = asyncio.get_running_loop().create_future()
        self._stream = self._http.stream
        self._chunked = self.request.version == "HTTP/1.1"
        # Direct socket writes only on a plain TCP stream (not TLS, not a wrapper).
        self._direct = type(self._stream) is IOStream
        self.flush()
        log.info("stream opened token=%s request_id=%s", conn.token, conn.request_id)
        await gw.open(conn, self)

    def _answer_retry(self, error: GatewayError) -> None:
        """Open and at once end a stream with a ``retry:`` hint, so that a browser retries a
        transient failure by itself (it gives up for good on any non-200 answer)."""
        self._set_stream_headers()
        self.write(protocol.encode_comment("%s %s" % (error.status, error.code)))
        self.write(protocol.encode_retry(self.gateway.retry_hint_ms()))
        self.finish()

    def _set_stream_headers(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Connection", "keep-alive")
        self.set_header("X-Accel-Buffering", "no")

    async def get(self, *args: str) -> None:
        if self._done is not None:
            await self._done
        if not self._http.stream.closed():
            self.finish()

    @property
    def _http(self) -> HTTP1Connection:
        return cast(HTTP1Connection, self.request.connection)

    def on_connection_close(self) -> None:
        if self.conn is not None:
            self.gateway.registry.close(self.conn, CLIENT_CLOSED)
        self._resolve()

    def on_finish(self) -> None:
        self._resolve()

    def _resolve(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- StreamWriter -------------------------------------------------------------------------

    def write_frame(self, frame: bytes) -> int:
        """Write ``frame``; return the bytes still waiting for the socket.

        When nothing is queued before it (the usual case) the frame goes straight to the
        socket: no future, no callback, no copy into Tornado's buffer, which is what makes a
        heartbeat round or a fan-out to 10,000 streams cheap. Whatever the socket does not take
        at once goes to the IOStream, which sends it in order as the socket drains.
        """
        stream = self._stream
        if self._chunked:  # Tornado frames an HTTP/1.1 body in chunks
            frame = self.chunks(frame)
        # Tornado has no public accessor for an IOStream's unsent bytes. These two counters
        # (Tornado >= 5) give the exact backlog: bytes queued minus bytes the socket accepted.
        if self._direct and stream._total_write_index == stream._total_write_done_index:
            sock = stream.socket
            if sock is None:  # closed
                raise StreamClosedError()
            try:
                sent = sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                stream.close(exc_info=exc)
                raise StreamClosedError(real_error=exc) from None
            if sent == len(frame):
                return 0
            frame = frame[sent:]
        stream.write(frame)  # raises StreamClosedError if the client is gone
        return stream._total_write_index - stream._total_write_done_index

    def end(self) -> None:
        self._resolve()

    def abort(self) -> None:
        self._http.close()
        self._resolve()


def _request_id(value: str | None) -> str:
    """The client's ``X-Request-ID`` if it is sane, else a fresh one."""
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return value
    return uuid.uuid4().hex


def _last_event_id(request: httputil.HTTPServerRequest) -> str | None:
    """``Last-Event-ID`` from the header, else from the ``lastEventId`` query parameter."""
    value = request.headers.get("Last-Event-ID")
    if value is None:
        values = request.query_arguments.get("lastEventId")
        if values:
            value = values[-1].decode("utf-8", "replace")
    return value


def _connect_error(outcome: Outcome, status: int | None, message: str) -> GatewayError:
    """The error a client gets for a connect callback that did not accept."""
    if outcome is Outcome.TIMEOUT:
        return GatewayError(message, status=504, code="GATEWAY_TIMEOUT")
    if outcome is Outcome.UNAVAILABLE:
        return GatewayError(message, status=503, code="BACKEND_UNAVAILABLE")
    if outcome is Outcome.BAD_ANSWER:
        return GatewayError(
            "the backend's connect answer is unusable: %s" % message,
            status=502,
            code="BAD_CALLBACK_RESPONSE",
        )
    assert status is not None
    if status == 401:
        return GatewayError(
            "the backend refused the credentials", status=401, code="BACKEND_AUTH_FAILED"
        )
    if status == 403:
        return GatewayError("the backend forbade this stream", status=403, code="BACKEND_FORBIDDEN")
    return GatewayError("the backend answered %d" % status, status=status, code="BACKEND_ERROR")


class InternalHandler(JSONErrorMixin):
    """Base of ``/internal/*``: bearer secret check, no CORS."""

    def prepare(self) -> None:
        secret = self.gateway.settings.internal_secret
        if secret is None:
            return
        given = self.request.headers.get("Authorization", "")
        expected = "Bearer " + secret
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("a valid 'Authorization: Bearer <INTERNAL_SECRET>' is required")


@stream_request_body
class SendHandler(InternalHandler):
    """``POST /internal/send``: one send, or a JSON array of them (a batch)."""

    _body: bytearray

    def prepare(self) -> None:
        super().prepare()
        self._body = bytearray()
        limit = self.gateway.settings.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        content_type = self.request.headers.get("Content-Type")
        if content_type is not None and not _JSON_TYPE_RE.match(content_type.strip()):
            raise GatewayError(
                "the body must be JSON (Content-Type: application/json)",
                status=415,
                code="UNSUPPORTED_MEDIA_TYPE",
            )

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return  # already answered 413; the rest of the body is discarded
        self._body += chunk
        limit = self.gateway.settings.max_body_bytes
        if len(self._body) > limit:
            # Answer now (Tornado does not route exceptions raised here to write_error), then
            # Tornado closes the connection instead of reading the rest of the body.
            self._body = bytearray()
            self.send_gateway_error(_too_large(limit))

    async def post(self) -> None:
        if self._finished:
            return
        try:
            body = protocol.decode_json(bytes(self._body))
        except GatewayError as error:
            self.send_gateway_error(error)
            return
        if isinstance(body, list):
            results = []
            for item in body:
                status, answer = await self._send_one(item)
                results.append({"status": status, "body": answer})
            self.write_json({"results": results})
            return
        if not isinstance(body, dict):
            self.send_gateway_error(
                GatewayError(
                    "the body must be a JSON object or array", status=400, code="INVALID_JSON"
                )
            )
            return
        status, answer = await self._send_one(body)
        self.write_json(answer, status)

    async def _send_one(self, item: Any) -> tuple[int, dict[str, Any]]:
        """Validate and deliver one send: its HTTP status and JSON body."""
        try:
            request = protocol.validate_send(item)
            result = await self.gateway.broker.send(request)
        except GatewayError as error:
            return error.status, error.to_dict()
        return 200, {"status": result}


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        "the body is larger than MAX_BODY_BYTES (%d bytes)" % limit,
        status=413,
        code="PAYLOAD_TOO_LARGE",
    )


class ConnectionsHandler(InternalHandler):
    """``GET /internal/connections``: how many streams are open, and up to ``limit`` of them."""

    def get(self) -> None:
        try:
            limit = int(self.get_query_argument("limit", "100"))
        except ValueError:
            limit = -1
        if limit < 0:
            raise GatewayError(
                "'limit' must be a whole number >= 0", status=400, code="INVALID_LIMIT"
            )
        registry = self.gateway.registry
        listed: list[dict[str, Any]] = []
        for conn in registry.connections():
            if len(listed) >= limit:
                break
            listed.append(
                {
                    "token": conn.token,
                    "url": conn.url,
                    "channels": list(conn.channels),
                    "connected_at": _iso(conn.connected_at),
                }
            )
        self.write_json({"count": registry.open_count, "connections": listed})


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


class NotFoundHandler(JSONErrorMixin):
    """Every unmatched route: 404 JSON."""

    def prepare(self) -> None:
        raise NotFound("no route for %s %s" % (self.request.method, self.request.path))


class HeadersTooLargeHandler(PublicHandler):
    """Any request whose head is over ``MAX_HEADER_BYTES``: 431 JSON (with CORS headers on
    the public endpoints, which pages call, and none on the internal API)."""

    def _set_cors_headers(self) -> None:
        path = self.request.path
        if not (path.startswith("/internal/") or path == "/metrics"):
            super()._set_cors_headers()

    def prepare(self) -> None:
        raise GatewayError(
            "the request headers are larger than %d bytes" % self.gateway.settings.max_header_bytes,
            status=431,
            code="REQUEST_HEADER_FIELDS_TOO_LARGE",
        )
