"""Wiring: ``make_app(settings)`` builds the gateway and the Tornado application(s) around it.

Nothing here is global: every call builds a fresh registry, backend client and broker (unless
given), so tests and embedders can run several gateways in one process.
"""

from __future__ import annotations

import re
from typing import Any

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
    SendHandler,
    StreamHandler,
    SubscriptionHandler,
    UnsubscriptionHandler,
)
from .jwt_auth import verifier_for
from .metrics import Metrics
from .ops import HealthHandler, MetricsHandler, ReadyHandler, log_request
from .publish_socket import PublishSocketHandler
from .registry import Registry
from .writer import ChunkEncoder

#: The handler of each route of :data:`tornado_sse.routes.ROUTES`, by name.
HANDLERS: dict[str, type] = {
    "health": HealthHandler,
    "ready": ReadyHandler,
    "send": SendHandler,
    "connections": ConnectionsHandler,
    "history": HistoryHandler,
    "presence": PresenceHandler,
    "subscribe": SubscriptionHandler,
    "unsubscribe": UnsubscriptionHandler,
    "socket": PublishSocketHandler,
    "metrics": MetricsHandler,
    "stats": StatsHandler,
    "dashboard": DashboardHandler,
}

RouteSpec = tuple[str, type, dict[str, Any]]


class GatewayApplication(Application):
    """A Tornado application serving (part of) a :class:`Gateway`.

    Requests whose head is larger than ``MAX_HEADER_BYTES`` get 431 here, before routing.
    """

    gateway: Gateway

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        if head_size(request) > self.gateway.settings.max_header_bytes:
            return self.get_handler_delegate(
                request, HeadersTooLargeHandler, {"gateway": self.gateway}
            )
        return super().find_handler(request, **kwargs)


class App(GatewayApplication):
    """The main application. ``internal_app`` is the one to serve on ``INTERNAL_PORT``
    (``None`` when the internal API shares the main port)."""

    internal_app: GatewayApplication | None


def head_size(request: HTTPServerRequest) -> int:
    """The size in bytes of a request's head, as it came on the wire (near enough)."""
    size = len(request.method or "") + len(request.uri or "") + len(request.version) + 4
    for name, value in request.headers.get_all():
        size += len(name) + len(value) + 4
    return size


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
    if settings.internal_port is None:
        app = App([(p, h, {**kwargs, **extra}) for p, h, extra in internal + public], **options)
        app.internal_app = None
    else:
        app = App([(p, h, {**kwargs, **extra}) for p, h, extra in public], **options)
        app.internal_app = GatewayApplication(
            [(p, h, {**kwargs, **extra}) for p, h, extra in internal], **options
        )
        app.internal_app.gateway = gateway
    app.gateway = gateway
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
    return [(re.escape(r.path), HANDLERS[r.name], {}) for r in routes.ROUTES if r.internal]
