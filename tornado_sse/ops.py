"""Operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics``, and the access log."""

from __future__ import annotations

import logging

from tornado.web import RequestHandler

from . import routes
from .handlers import InternalHandler, PublicHandler
from .log import fields

access_log = logging.getLogger("tornado_sse.access")


class HealthHandler(PublicHandler):
    """``GET /healthz``: 200 while the process runs."""

    def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyHandler(PublicHandler):
    """``GET /readyz``: 200 when the gateway can take streams, else 503 with the reasons."""

    def get(self) -> None:
        ready, body = self.gateway.readiness()
        self.write_json(body, 200 if ready else 503)


class MetricsHandler(InternalHandler):
    """``GET /metrics``: Prometheus text format, served beside the internal API and behind
    the same ``INTERNAL_SECRET``."""

    def get(self) -> None:
        body, content_type = self.gateway.render_metrics()
        self.set_header("Content-Type", content_type)
        self.finish(body)


def log_request(handler: RequestHandler) -> None:
    """The access log of requests served by a ``RequestHandler`` (:func:`log_access`).

    Also counts internal API requests by route and status. Streams are logged by the gateway
    when they open and close, so they are left out here unless they failed.
    """
    status = handler.get_status()
    path = handler.request.path
    gateway = getattr(handler, "gateway", None)
    label = routes.metric_label(path)
    if gateway is not None and label is not None:
        gateway.count_request(label, status)
    if status < 400 and label is None:
        return
    log_access(status, handler.request.method, path, handler.request.request_time())


def log_access(status: int, method: str | None, path: str, seconds: float) -> None:
    """One access log line for a request: at INFO, WARNING from 400, ERROR from 500. ``path``
    never holds the query string (it may hold secrets)."""
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return
    access_log.log(
        level,
        "request",
        extra=fields(
            status=status, method=method, path=path, duration_ms=round(1000.0 * seconds, 1)
        ),
    )
