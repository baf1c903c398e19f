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
from typing import Any, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.web import HTTPError, RequestHandler, stream_request_body

from . import protocol, routes
from .connection import Connection
from .errors import (
    GatewayError,
    HeadersTooLarge,
    InvalidLimit,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    code_for_status,
    error_json,
)
from .gateway import Gateway
from .log import fields
from .writer import ChunkEncoder, SocketWriter

log = logging.getLogger("tornado_sse.handlers")

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
        # Tornado's own lines would name the request target, and so its query string (a JWT, a
        # session token): these name the path only.
        if isinstance(value, GatewayError):
            log.debug("request refused", extra=fields(status=value.status, code=value.code))
        elif isinstance(value, HTTPError):
            if value.log_message:
                log.warning(
                    "request failed",
                    extra=fields(
                        status=value.status_code, method=self.request.method, path=self.request.path
                    ),
                )
        else:
            log.error(
                "uncaught exception",
                extra=fields(method=self.request.method, path=self.request.path),
                exc_info=(typ, value, tb),
            )

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


class StreamHandler(PublicHandler):
    """``GET {SSE_PATH_PREFIX}...``: the connect callback, then the event stream."""

    conn: Connection | None = None
    _done: asyncio.Future[None] | None = None

    def initialize(self, gateway: Gateway, chunks: ChunkEncoder | None = None) -> None:
        super().initialize(gateway)
        self.chunks = chunks or ChunkEncoder()

    async def prepare(self) -> None:
        if self.request.method != "GET":
            return
        try:
            await self._open_stream()
        except GatewayError as error:
            if self.gateway.wants_retry_stream(error) and not self._http.stream.closed():
                self._answer_retry(error)
                return
            raise

    async def _open_stream(self) -> None:
        gw = self.gateway
        request = self.request
        conn = self.conn = gw.admit(
            protocol.capture_request(request.uri or "/", request.headers.get_all())
        )
        if not await gw.connect(conn):
            return  # the client left during the callback: nobody is left to answer
        self._set_stream_headers()
        self._done = asyncio.get_running_loop().create_future()
        chunks = self.chunks if request.version == "HTTP/1.1" else None
        writer = SocketWriter(self._http, chunks, self._resolve)
        self.flush()
        await gw.open(conn, writer)

    def _answer_retry(self, error: GatewayError) -> None:
        """Open and at once end a stream with a ``retry:`` hint, so that a browser retries a
        transient failure by itself (it gives up for good on any non-200 answer)."""
        self._set_stream_headers()
        self.write(protocol.encode_comment("%s %s" % (error.status, error.code)))
        self.write(self.gateway.retry_frame())
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
            self.gateway.client_left(self.conn)
        self._resolve()

    def on_finish(self) -> None:
        self._resolve()

    def _resolve(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)


class InternalHandler(JSONErrorMixin):
    """Base of ``/internal/*``: bearer secret check, no CORS."""

    def prepare(self) -> None:
        secret = self.gateway.settings.internal_secret
        if secret is None:
            return
        given = self.request.headers.get("Authorization", "")
        expected = "Bearer " + secret
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized()


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
            raise PayloadTooLarge(limit)
        content_type = self.request.headers.get("Content-Type")
        if content_type is not None and not _JSON_TYPE_RE.match(content_type.strip()):
            raise UnsupportedMediaType()

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return  # already answered 413; the rest of the body is discarded
        self._body += chunk
        limit = self.gateway.settings.max_body_bytes
        if len(self._body) > limit:
            # Answer now (Tornado does not route exceptions raised here to write_error), then
            # Tornado closes the connection instead of reading the rest of the body.
            self._body = bytearray()
            self.send_gateway_error(PayloadTooLarge(limit))

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
                InvalidRequest("INVALID_JSON", "the body must be a JSON object or array")
            )
            return
        status, answer = await self._send_one(body)
        self.write_json(answer, status)

    async def _send_one(self, item: Any) -> tuple[int, dict[str, Any]]:
        """Validate and deliver one send: its HTTP status and JSON body."""
        try:
            request = protocol.validate_send(item)
            result = await self.gateway.send(request)
        except GatewayError as error:
            return error.status, error.to_dict()
        return 200, {"status": result}


class ConnectionsHandler(InternalHandler):
    """``GET /internal/connections``: how many streams are open, and up to ``limit`` of them."""

    def get(self) -> None:
        try:
            limit = int(self.get_query_argument("limit", "100"))
        except ValueError:
            limit = -1
        if limit < 0:
            raise InvalidLimit()
        self.write_json(self.gateway.connections(limit))


class NotFoundHandler(JSONErrorMixin):
    """Every unmatched route: 404 JSON."""

    def prepare(self) -> None:
        raise NotFound("no route for %s %s" % (self.request.method, self.request.path))


class HeadersTooLargeHandler(PublicHandler):
    """Any request whose head is over ``MAX_HEADER_BYTES``: 431 JSON (with CORS headers on
    the public endpoints, which pages call, and none on the internal API)."""

    def _set_cors_headers(self) -> None:
        if not routes.is_internal(self.request.path):
            super()._set_cors_headers()

    def prepare(self) -> None:
        raise HeadersTooLarge(self.gateway.settings.max_header_bytes)
