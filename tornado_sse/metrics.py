"""Prometheus metrics on a registry owned by one gateway (no global state).

Hot-path figures (frames and bytes written) are plain integers kept by the
:class:`~tornado_sse.registry.Registry` and read only when ``/metrics`` is scraped; everything
else is an ordinary ``prometheus_client`` metric. Labels hold only small fixed sets of values:
never tokens, paths or channel names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

#: Callback latency buckets, in seconds: from a local backend (ms) to the 5 s default timeout.
CALLBACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _WriteCounters(Collector):
    """Exports the registry's frame and byte counters at scrape time."""

    def __init__(self, read: Callable[[], tuple[int, int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        events, heartbeats, written = self._read()
        frames = CounterMetricFamily(
            "tornado_sse_frames_written", "Frames written to streams, by kind.", labels=["kind"]
        )
        frames.add_metric(["event"], events)
        frames.add_metric(["heartbeat"], heartbeats)
        yield frames
        yield CounterMetricFamily(
            "tornado_sse_bytes_written", "Bytes of SSE frames written to streams.", value=written
        )


class Metrics:
    """The gateway's metrics. ``registry`` defaults to a fresh ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        #: When these metrics began counting (``time.time()``): the process's start, near enough.
        self.started = time.time()
        r = self.registry
        self.open_streams = Gauge(
            "tornado_sse_open_streams", "Streams open now (headers sent).", registry=r
        )
        self.connects = Counter(
            "tornado_sse_connects",
            "Stream requests by connect outcome.",
            ["outcome"],
            registry=r,
        )
        self.disconnects = Counter(
            "tornado_sse_disconnects",
            "Streams ended, by reason and detail.",
            ["reason", "detail"],
            registry=r,
        )
        self.slow_consumers = Counter(
            "tornado_sse_slow_consumer_closes",
            "Streams closed because the client stopped reading.",
            registry=r,
        )
        self.callback_seconds = Histogram(
            "tornado_sse_callback_duration_seconds",
            "Backend callback latency, by action and outcome.",
            ["action", "outcome"],
            buckets=CALLBACK_BUCKETS,
            registry=r,
        )
        self.internal_requests = Counter(
            "tornado_sse_internal_requests",
            "Internal API requests, by route and HTTP status.",
            ["route", "status"],
            registry=r,
        )
        self.socket_messages = Counter(
            "tornado_sse_socket_messages",
            "Publish socket messages answered, by the HTTP status of the answer.",
            ["status"],
            registry=r,
        )
        self.open_sockets = Gauge(
            "tornado_sse_open_publish_sockets", "Publish sockets open now.", registry=r
        )
        self.socket_closes = Counter(
            "tornado_sse_publish_socket_closes",
            "Publish sockets closed by the gateway, by why (too_big, not_utf8, not_reading, "
            "binary, shutdown).",
            ["why"],
            registry=r,
        )
        self.requests_receiving = Gauge(
            "tornado_sse_requests_receiving",
            "Connections still sending a request (head or declared body); they take places "
            "under MAX_CONNECTIONS.",
            registry=r,
        )
        self.queued_bytes = Gauge(
            "tornado_sse_queued_bytes",
            "Memory held by the unsent output of all streams, in bytes (as last measured).",
            registry=r,
        )
        self.accept_pauses = Counter(
            "tornado_sse_accept_pauses",
            "Times accepting paused because the process ran out of file descriptors.",
            registry=r,
        )
        self.connections_shed = Counter(
            "tornado_sse_connections_shed",
            "Connections without a request in progress closed to free file descriptors.",
            registry=r,
        )
        self.broker_up = Gauge(
            "tornado_sse_broker_up",
            "1 while the broker (Redis, if configured) is connected.",
            registry=r,
        )
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        ProcessCollector(registry=r)
        # The labelled children counted on every connect, looked up once each.
        self._connect_children: dict[str, Any] = {}
        self._callback_children: dict[tuple[str, str], Any] = {}

    def watch_writes(self, read: Callable[[], tuple[int, int, int]]) -> None:
        """Export ``read()`` = (events, heartbeats, bytes) written, read at scrape time."""
        self.registry.register(_WriteCounters(read))

    def observe_callback(self, action: str, outcome: str, seconds: float) -> None:
        """Record one backend callback (the :data:`tornado_sse.backend.Observer` signature)."""
        key = (action, outcome)
        child = self._callback_children.get(key)
        if child is None:
            child = self._callback_children[key] = self.callback_seconds.labels(action, outcome)
        child.observe(seconds)

    def count_connect(self, outcome: str) -> None:
        """Count one stream request under its connect ``outcome``."""
        child = self._connect_children.get(outcome)
        if child is None:
            child = self._connect_children[outcome] = self.connects.labels(outcome)
        child.inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
