"""Wiring: ``make_app(settings)`` builds the gateway and the Tornado application(s) around it.

Nothing here is global: every call builds a fresh registry, backend client and broker (unless
given), so tests and embedders can run several gateways in one process.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPServerRequest
from tornado.web import Application

from . import routes
from .backend import Backend
from .broker import Broker, LocalBroker
from .config import Settings
from .dashboard import DashboardHandler, StatsHandler
from .gateway import Gateway
from .handlers import (
    ConnectionsHandler,
    HeadersTooLargeHandler,
    HistoryHandler,
    NotFoundHandler,
    PresenceHandler,
    StreamHandler,
)
from .json_post import HTTPDate, JSONPost, PostAnswer, answer_send, answer_subscription
from .jwt_auth import verifier_for
from .metrics import Metrics
from .ops import HealthHandler, MetricsHandler, ReadyHandler, log_request
from .publish_socket import PublishSocketHandler
from .registry import Registry
from .writer import ChunkEncoder

#: The handler of each route of :data:`tornado_sse.routes.ROUTES`, by name, but for the JSON POST
#: endpoints (:data:`POSTS`).
HANDLERS: dict[str, type] = {
    "health": HealthHandler,
    "ready": ReadyHandler,
    "connections": ConnectionsHandler,
    "history": HistoryHandler,
    "presence": PresenceHandler,
    "socket": PublishSocketHandler,
    "metrics": MetricsHandler,
    "stats": StatsHandler,
    "dashboard": DashboardHandler,
}

#: The JSON POST endpoints, by route name: served without a RequestHandler
#: (:mod:`tornado_sse.json_post`).
POSTS: dict[str, Callable[[Gateway], PostAnswer]] = {
    "send": answer_send,
    "subscribe": lambda gateway: answer_subscription(gateway, add=True),
    "unsubscribe": lambda gateway: answer_subscription(gateway, add=False),
}

RouteSpec = tuple[str, type, dict[str, Any]]


class GatewayApplication(Application):
    """A Tornado application serving (part of) a :class:`Gateway`.

    Requests whose head is larger than ``MAX_HEADER_BYTES`` get 431 here, before routing. The
    JSON POST endpoints it serves (``posts``, by path) are answered by a
    :class:`~tornado_sse.json_post.JSONPost`, every other request by Tornado's routing.
    """

    gateway: Gateway
    posts: dict[str, PostAnswer]
    date: HTTPDate

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return _Dispatch(self, server_conn, request_conn)

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        if request_head_size(request) > self.gateway.settings.max_header_bytes:
            return self.get_handler_delegate(
                request, HeadersTooLargeHandler, {"gateway": self.gateway}
            )
        return super().find_handler(request, **kwargs)


class _Dispatch(httputil.HTTPMessageDelegate):
    """Picks, from a request's head, who answers it: a JSON POST endpoint, or Tornado's
    routing (the RequestHandlers), then hands it everything that follows."""

    def __init__(
        self, app: GatewayApplication, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> None:
        self._app = app
        self._server_conn = server_conn
        self._request_conn = request_conn
        self._delegate: httputil.HTTPMessageDelegate | None = None

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        answer = self._app.posts.get(start_line.path.partition("?")[0])
        gateway = self._app.gateway
        if (
            answer is not None
            and isinstance(self._request_conn, HTTP1Connection)
            and head_size(start_line, headers) <= gateway.settings.max_header_bytes
        ):
            path = start_line.path.partition("?")[0]
            self._delegate = JSONPost(gateway, self._request_conn, path, answer, self._app.date)
        else:
            self._delegate = Application.start_request(
                self._app, self._server_conn, self._request_conn
            )
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        assert self._delegate is not None
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        assert self._delegate is not None
        self._delegate.finish()

    def on_connection_close(self) -> None:
        if self._delegate is not None:
            self._delegate.on_connection_close()


class App(GatewayApplication):
    """The main application. ``internal_app`` is the one to serve on ``INTERNAL_PORT``
    (``None`` when the internal API shares the main port)."""

    internal_app: GatewayApplication | None


def head_size(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> int:
    """The size in bytes of a request's head, as it came on the wire (near enough)."""
    size = len(start_line.method) + len(start_line.path) + len(start_line.version) + 4
    for name, value in headers.get_all():
        size += len(name) + len(value) + 4
    return size


def request_head_size(request: HTTPServerRequest) -> int:
    """:func:`head_size` of a request Tornado has parsed."""
    start_line = httputil.RequestStartLine(request.method or "", request.uri or "", request.version)
    return head_size(start_line, request.headers)


def make_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    broker: Broker | None = None,
    registry: Registry | None = None,
    metrics: Metrics | None = None,
) -> App:
    """Build the gateway for ``settings`` and the application that serves it.

    ``backend``, ``broker`` and ``registry`` replace the defaults built from ``settings``. Call
    ``app.gateway.start()`` once the IOLoop runs (``__main__`` and the tests do).
    """
    if registry is None:
        registry = Registry(
            max_pending_events=settings.max_pending_events,
            max_queued_bytes=settings.max_queued_bytes,
            max_total_queued_bytes=settings.max_total_queued_bytes,
        )
    if metrics is None:
        metrics = Metrics()
    metrics.requests_receiving.set_function(lambda: registry.receiving)
    metrics.queued_bytes.set_function(lambda: registry.queued_bytes)
    if backend is None and settings.callback_url:
        backend = Backend(
            settings.callback_url,
            timeout=settings.callback_timeout_seconds,
            max_clients=settings.callback_max_clients,
            secret=settings.callback_secrets or None,
            retry_seconds=settings.disconnect_retry_seconds,
            keepalive_seconds=settings.callback_keepalive_seconds,
            observer=metrics.observe_callback,
        )
    if broker is None:
        broker = make_broker(settings)
    gateway = Gateway(
        settings,
        registry=registry,
        backend=backend,
        broker=broker,
        metrics=metrics,
        verifier=verifier_for(settings),
    )

    return _serve(gateway)


def make_broker(settings: Settings) -> Broker:
    """The broker ``settings`` ask for: Redis with ``REDIS_URL``, else the in-process one."""
    if settings.uses_redis:
        from .cluster.broker import RedisBroker  # redis is an optional extra

        return RedisBroker(
            settings.redis_url or "redis://",
            retention=settings.retention,
            sentinels=settings.redis_sentinels,
            sentinel_master=settings.redis_sentinel_master,
            cluster=settings.redis_cluster,
            instance_ttl=settings.redis_instance_ttl_seconds,
        )
    return LocalBroker(settings.retention)


def _serve(gateway: Gateway) -> App:
    """The application(s) serving ``gateway``: one, or two with ``INTERNAL_PORT``."""
    settings = gateway.settings
    public = _public_routes(settings, ChunkEncoder())
    internal = _internal_routes()
    kwargs = {"gateway": gateway}
    options: dict[str, Any] = {
        "default_handler_class": NotFoundHandler,
        "default_handler_args": kwargs,
        "log_function": log_request,
    }
    posts = {r.path: POSTS[r.name](gateway) for r in routes.ROUTES if r.name in POSTS}
    date = HTTPDate()
    if settings.internal_port is None:
        app = App([(p, h, {**kwargs, **extra}) for p, h, extra in internal + public], **options)
        app.internal_app = None
        app.posts = posts
    else:
        app = App([(p, h, {**kwargs, **extra}) for p, h, extra in public], **options)
        app.posts = {}
        internal_app = GatewayApplication(
            [(p, h, {**kwargs, **extra}) for p, h, extra in internal], **options
        )
        internal_app.gateway, internal_app.posts, internal_app.date = gateway, posts, date
        app.internal_app = internal_app
    app.gateway = gateway
    app.date = date
    return app


def _public_routes(settings: Settings, chunks: ChunkEncoder) -> list[RouteSpec]:
    if settings.sse_path_prefix == "/":
        stream = r"/" + routes.reserved_lookahead() + r".*"
    else:
        stream = re.escape(settings.sse_path_prefix) + r".*"
    fixed: list[RouteSpec] = [
        (re.escape(r.path), HANDLERS[r.name], {}) for r in routes.ROUTES if not r.internal
    ]
    return fixed + [(stream, StreamHandler, {"chunks": chunks})]


def _internal_routes() -> list[RouteSpec]:
    return [
        (re.escape(r.path), HANDLERS[r.name], {})
        for r in routes.ROUTES
        if r.internal and r.name not in POSTS
    ]
