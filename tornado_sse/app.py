"""Wiring: ``make_app(settings)`` builds the gateway and the Tornado application(s) around it.

Nothing here is global: every call builds a fresh registry, backend client and broker (unless
given), so tests and embedders can run several gateways in one process.
"""

from __future__ import annotations

import re
from typing import Any

from tornado.web import Application

from .backend import Backend
from .broker import Broker, LocalBroker
from .config import Settings
from .gateway import Gateway
from .handlers import (
    ConnectionsHandler,
    HealthHandler,
    NotFoundHandler,
    ReadyHandler,
    SendHandler,
    StreamHandler,
)
from .registry import Registry

#: Paths that are never streams, whatever SSE_PATH_PREFIX says.
RESERVED = r"(?!internal/|internal$|healthz$|readyz$|metrics$)"


class App(Application):
    """A Tornado application with its :class:`Gateway`.

    ``internal_app`` is the application to serve on ``INTERNAL_PORT`` (``None`` when the
    internal API shares the main port).
    """

    gateway: Gateway
    internal_app: Application | None


def make_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    broker: Broker | None = None,
    registry: Registry | None = None,
) -> App:
    """Build the gateway for ``settings`` and the application that serves it.

    ``backend``, ``broker`` and ``registry`` replace the defaults built from ``settings``. Call
    ``app.gateway.start()`` once the IOLoop runs (``__main__`` and the tests do).
    """
    if registry is None:
        registry = Registry(
            max_pending_events=settings.max_pending_events,
            max_queued_bytes=settings.max_queued_bytes,
        )
    if backend is None and settings.callback_url:
        backend = Backend(
            settings.callback_url,
            timeout=settings.callback_timeout_seconds,
            max_clients=settings.callback_max_clients,
            secret=settings.callback_secret,
        )
    if broker is None:
        broker = LocalBroker(registry, settings.history_size, settings.history_ttl_seconds)
    gateway = Gateway(settings, registry=registry, backend=backend, broker=broker)

    public = _public_routes(settings)
    internal = _internal_routes()
    kwargs = {"gateway": gateway}
    options: dict[str, Any] = {
        "default_handler_class": NotFoundHandler,
        "default_handler_args": kwargs,
    }
    if settings.internal_port is None:
        app = App([(p, h, kwargs) for p, h in internal + public], **options)
        app.internal_app = None
    else:
        app = App([(p, h, kwargs) for p, h in public], **options)
        app.internal_app = Application([(p, h, kwargs) for p, h in internal], **options)
    app.gateway = gateway
    return app


def _public_routes(settings: Settings) -> list[tuple[str, type]]:
    prefix = re.escape(settings.sse_path_prefix)
    if settings.sse_path_prefix == "/":
        stream = r"/" + RESERVED + r".*"
    else:
        stream = prefix + r".*"
    return [
        (r"/healthz", HealthHandler),
        (r"/readyz", ReadyHandler),
        (stream, StreamHandler),
    ]


def _internal_routes() -> list[tuple[str, type]]:
    return [
        (r"/internal/send", SendHandler),
        (r"/internal/connections", ConnectionsHandler),
    ]
