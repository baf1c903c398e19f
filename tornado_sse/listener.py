"""Reading requests, with the guards a server open to anyone needs.

Tornado's ``HTTPServer`` reads requests and hands them to the application; what it leaves out:
**requests still being received are counted.** A connection that has not yet sent its first
complete request, and a request whose head has arrived but whose declared body has not, hold a
socket and memory while the gateway cannot see them as streams. :class:`GatewayHTTPServer`
counts them in :attr:`Registry.receiving <tornado_sse.registry.Registry.receiving>`, where they
take places under ``MAX_CONNECTIONS`` (the metric ``tornado_sse_requests_receiving``).
``HEADER_TIMEOUT_SECONDS`` bounds the wait for a head (Tornado's ``idle_connection_timeout``,
which also bounds the idle time of a kept-alive connection between requests) and
``BODY_TIMEOUT_SECONDS`` the wait for a declared body (Tornado's ``body_timeout``); past either
the connection is closed.
"""

from __future__ import annotations

from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from .registry import Registry


class GatewayHTTPServer(HTTPServer):
    """Tornado's HTTP server, counting the requests still being received in
    ``registry.receiving``.

    A connection counts from the moment it is accepted until its first request has arrived
    whole (head and declared body); a later request on a kept-alive connection counts from its
    head until its body has arrived. The count drops as soon as the request is complete, before
    the application sees it, so a stream request never counts against itself.
    """

    def initialize(  # type: ignore[override]
        self,
        request_callback: Any,
        *,
        registry: Registry,
        **kwargs: Any,
    ) -> None:
        super().initialize(request_callback, **kwargs)
        self.registry = registry
        self._receiving: set[IOStream] = set()

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        self.receiving(stream, True)
        super().handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        stream = server_conn.stream  # type: ignore[attr-defined]
        return _TrackedRequest(delegate, self, stream)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        assert isinstance(server_conn, HTTP1ServerConnection)
        self.receiving(server_conn.stream, False)

    def receiving(self, stream: IOStream, now: bool) -> None:
        """Mark whether ``stream`` is receiving a request (idempotent)."""
        if now == (stream in self._receiving):
            return
        if now:
            self._receiving.add(stream)
            self.registry.receiving += 1
        else:
            self._receiving.discard(stream)
            self.registry.receiving -= 1


class _TrackedRequest(httputil.HTTPMessageDelegate):
    """Wraps the application's delegate for one request, to follow its reception."""

    def __init__(
        self, delegate: httputil.HTTPMessageDelegate, server: GatewayHTTPServer, stream: IOStream
    ) -> None:
        self._delegate = delegate
        self._server = server
        self._stream = stream

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Any:
        self._server.receiving(self._stream, True)
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._server.receiving(self._stream, False)
        self._delegate.finish()

    def on_connection_close(self) -> None:
        self._server.receiving(self._stream, False)
        self._delegate.on_connection_close()
