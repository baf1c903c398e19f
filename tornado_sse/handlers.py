"""HTTP handlers: thin adapters between Tornado and the :class:`~tornado_sse.gateway.Gateway`.

Every error leaves as the JSON shape of the wire contract (see :class:`JSONErrorMixin`); the
decisions live in the gateway, registry and protocol modules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, cast

import tornado
from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.web import HTTPError, RequestHandler

from . import history, protocol, routes
from .connection import Connection
from .errors import (
    GatewayError,
    HeadersTooLarge,
    InvalidChannel,
    InvalidLimit,
    InvalidSince,
    InvalidUser,
    NotFound,
    Unauthorized,
    code_for_status,
    error_json,
)
from .gateway import Gateway
from .log import fields
from .writer import ChunkEncoder, SocketWriter

log = logging.getLogger("tornado_sse.handlers")

#: The ``Server`` header of every answer, as Tornado's own.
_SERVER = "TornadoServer/%s" % tornado.version


class JSONErrorMixin(RequestHandler):
    """JSON errors for every failure, and no traceback in logs for expected ones."""

    gateway: Gateway

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def clear(self) -> None:
        """Tornado's reset of the response (the same default headers, status 200, no body),
        with ``Date`` formatted at most once a second by the application's ``date`` instead of
        once per request."""
        date = getattr(self.application, "date", None)
        headers = httputil.HTTPHeaders()
        headers["Server"] = _SERVER
        headers["Content-Type"] = "text/html; charset=UTF-8"
        headers["Date"] = date.now() if date is not None else httputil.format_timestamp(time.time())
        self._headers = headers
        self.set_default_headers()
        self._write_buffer = []
        self._status_code = 200
        self._reason = httputil.responses[200]

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
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        self.write_encoded(body, status)

    def write_encoded(self, body: bytes, status: int = 200) -> None:
        """Answer ``status`` with ``body``, JSON encoded already."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


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
                "Access-Control-Allow-Headers", self.gateway.settings.cors_allow_headers
            )
            self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)
        self.finish()


class StreamHandler(PublicHandler):
    """``GET {SSE_PATH_PREFIX}...``: the connect callback, then the event stream.

    Once the stream's head is written, the handler holds only what the open stream needs:
    no coroutine waits for its end (Tornado's automatic finish is turned off and
    :meth:`_ended` finishes the response when the writer reports the end or the client
    leaves), and what Tornado keeps per request for other handlers (the parsed query, the
    request and response headers, the template namespace) is dropped. The request snapshot
    of the callbacks was captured before.
    """

    conn: Connection | None = None
    #: Set once the end of an open stream is scheduled (see :meth:`_ended`).
    _ending = False

    def initialize(self, gateway: Gateway, chunks: ChunkEncoder | None = None) -> None:
        super().initialize(gateway)
        self.chunks = chunks or ChunkEncoder()
        # No template is rendered here, and Tornado's namespace for them refers back to the
        # handler: a cycle only the garbage collector would break.
        self.ui = None  # type: ignore[assignment]

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
        chunks = self.chunks if request.version == "HTTP/1.1" else None
        writer = SocketWriter(self._http, chunks, self._ended, early=self.write)
        self._auto_finish = False  # the stream is finished by _ended, not after get()
        replay = gw.open(conn, writer)  # its first frames go out with the head
        writer.uncork()
        self.flush()
        self._drop_request_state()
        if replay is not None:
            await replay

    def _drop_request_state(self) -> None:
        """Forget what Tornado keeps per request that an open stream never reads again: the
        parsed query arguments, the request's headers (the snapshot holds what the callbacks
        send; Tornado reads them only to write the head, done by now) and the response's."""
        request = self.request
        request.arguments.clear()
        request.query_arguments.clear()
        request.headers.clear()
        self._headers = httputil.HTTPHeaders()

    def _answer_retry(self, error: GatewayError) -> None:
        """Open and at once end a stream with a ``retry:`` hint, so that a browser retries a
        transient failure by itself (it gives up for good on any non-200 answer)."""
        self._set_stream_headers()
        self.write(protocol.encode_comment("%s %s" % (error.status, error.code)))
        self.write(self.gateway.retry_frame())
        self._end_stream()

    def _set_stream_headers(self) -> None:
        self.set_header("Content-Type", protocol.STREAM_CONTENT_TYPE)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        if self.request.version == "HTTP/1.1":
            self.set_header("Connection", "keep-alive")
        else:
            # An HTTP/1.0 stream has neither a length nor chunks: only closing the connection
            # ends it. Tornado would answer a 1.0 `Connection: keep-alive` with `Keep-Alive`
            # and then wait for a next request; the request's own header is what it reads.
            self.request.headers.pop("Connection", None)
            self.set_header("Connection", "close")

    def _end_stream(self) -> None:
        """Finish the response; over HTTP/1.0 also close the connection once it is written,
        since nothing else tells that client the stream has ended."""
        written = self.finish()
        if self.request.version != "HTTP/1.1":
            written.add_done_callback(lambda _: self._http.close())

    def get(self, *args: str) -> None:
        """Nothing left to do: an open stream is finished by :meth:`_ended`; one whose client
        left during the connect is finished by Tornado once this returns."""

    @property
    def _http(self) -> HTTP1Connection:
        return cast(HTTP1Connection, self.request.connection)

    def on_connection_close(self) -> None:
        if self.conn is not None:
            self.gateway.client_left(self.conn)
        self._ended()

    def _ended(self) -> None:
        """The open stream ended (its writer says so, or the client left): finish the
        response once, on the next turn of the event loop (the caller may be in the middle of
        the registry's work). A stream that never opened is finished by Tornado instead."""
        if self._auto_finish or self._ending:
            return
        self._ending = True
        asyncio.get_running_loop().call_soon(self._finish_stream)

    def _finish_stream(self) -> None:
        if self._finished:
            return
        if self._http.stream.closed():
            self.finish()  # nothing reaches the client, but the request is logged and counted
        else:
            self._end_stream()


class InternalHandler(JSONErrorMixin):
    """Base of ``/internal/*`` and ``/metrics``: with ``INTERNAL_SECRET`` set, 401 without
    the secret in ``Authorization`` (:func:`~tornado_sse.protocol.credentials_match`: Bearer,
    or a browser's Basic with the secret as the password); no CORS.

    The 401 names both schemes in ``WWW-Authenticate`` (RFC 9110 11.6.1), Basic with a realm,
    so that a browser opening an internal page asks its user for the secret in its own login
    dialog, and then sends it with every request of that page under ``/internal/``.
    """

    def prepare(self) -> None:
        secret = self.gateway.settings.internal_secret
        if secret is None:
            return
        if not protocol.credentials_match(self.request.headers.get("Authorization"), secret):
            raise Unauthorized()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info", (None, None, None))[1], Unauthorized):
            for challenge in AUTH_CHALLENGES:
                self.add_header("WWW-Authenticate", challenge)
        super().write_error(status_code, **kwargs)


#: The ``WWW-Authenticate`` challenges of the internal API's 401, one header line each.
AUTH_CHALLENGES = (
    'Bearer realm="tornado_sse internal API"',
    'Basic realm="tornado_sse internal API", charset="UTF-8"',
)


class ConnectionsHandler(InternalHandler):
    """``GET /internal/connections[?limit=<n>][&user=<id>]``: how many streams are open, and
    up to ``limit`` of them; with ``user``, only that user's, cluster-wide."""

    async def get(self) -> None:
        try:
            limit = int(self.get_query_argument("limit", "100"))
        except ValueError:
            limit = -1
        if limit < 0:
            raise InvalidLimit()
        user = self.get_query_argument("user", None)
        if user is not None and not protocol.is_valid_user(user):
            raise InvalidUser()
        self.write_json(await self.gateway.connections(limit, user))


class PresenceHandler(InternalHandler):
    """``GET /internal/presence?channel=<c>``: the channel's users (with their stream counts
    and info) and anonymous streams, cluster-wide."""

    async def get(self) -> None:
        channel = self.get_query_argument("channel", "")
        if not protocol.is_valid_channel(channel):
            raise InvalidChannel()
        self.write_encoded(await self.gateway.presence_of(channel))


class HistoryHandler(InternalHandler):
    """``GET /internal/history?channel=<c>[&since=<id>][&limit=<n>]``: a channel's kept
    events, oldest first (at most 1000 at a time; page on with ``since`` = the last id)."""

    async def get(self) -> None:
        channel = self.get_query_argument("channel", "")
        if not protocol.is_valid_channel(channel):
            raise InvalidChannel()
        since_text = self.get_query_argument("since", None)
        since = None
        if since_text is not None:
            since = history.parse_event_id(since_text)
            if since is None:
                raise InvalidSince()
        limit_text = self.get_query_argument("limit", "100")
        limit = int(limit_text) if limit_text.isdigit() else 0
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise InvalidLimit("'limit' must be a whole number from 1 to %d" % MAX_HISTORY_LIMIT)
        self.write_json(await self.gateway.history(channel, since, limit))


#: Most events one ``/internal/history`` answer lists.
MAX_HISTORY_LIMIT = 1000


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
