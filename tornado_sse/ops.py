"""Operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics``, and the access log."""

from __future__ import annotations

import logging

from tornado.web import RequestHandler

from .handlers import JSONErrorMixin, PublicHandler

access_log = logging.getLogger("tornado_sse.access")


class HealthHandler(PublicHandler):
    """``GET /healthz``: 200 while the process runs."""

    def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyHandler(PublicHandler):
    """``GET /readyz``: 200 when the gateway can take streams, else 503 with the reasons."""

    def get(self) -> None:
        gw = self.gateway
        reasons = []
        if not gw.configured:
            reasons.append("CALLBACK_URL is not set")
        if not gw.broker.ready:
            reasons.append("the broker (Redis) is unreachable")
        if gw.draining:
            reasons.append("the gateway is shutting down")
        if reasons:
            self.write_json(
                {"status": "not_ready", "configured": gw.configured, "reasons": reasons}, 503
            )
        else:
            self.write_json(
                {"status": "ready", "configured": True, "connections": gw.registry.open_count}
            )


class MetricsHandler(JSONErrorMixin):
    """``GET /metrics``: Prometheus text format (served beside the internal API)."""

    def get(self) -> None:
        body, content_type = self.gateway.metrics.render()
        self.set_header("Content-Type", content_type)
        self.finish(body)


def log_request(handler: RequestHandler) -> None:
    """The access log: one line per request, without the query string (it may hold secrets).

    Also counts internal API requests by route and status. Streams are logged by the gateway
    when they open and close, so they are left out here unless they failed.
    """
    status = handler.get_status()
    path = handler.request.path
    gateway = getattr(handler, "gateway", None)
    if gateway is not None and path.startswith("/internal/"):
        route = path if path in ("/internal/send", "/internal/connections") else "other"
        gateway.metrics.internal_requests.labels(route, str(status)).inc()
    if status < 400 and not path.startswith("/internal/"):
        return
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    access_log.log(
        level,
        "request status=%d method=%s path=%s duration_ms=%.1f",
        status,
        handler.request.method,
        path,
        1000.0 * handler.request.request_time(),
    )
