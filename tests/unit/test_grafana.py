"""docs/grafana/tornado_sse.json asks Prometheus only for metrics the gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tornado_sse.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "tornado_sse.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def exported_names() -> set[str]:
    """Every sample name a fresh :class:`Metrics` exports (counters with ``_total``, histograms
    with ``_bucket``/``_count``/``_sum``), after one observation of each labelled metric."""
    metrics = Metrics()
    metrics.watch_writes(lambda: (0, 0, 0))
    metrics.connects.labels("accepted").inc()
    metrics.disconnects.labels("client_closed", "").inc()
    metrics.observe_callback("connect", "ok", 0.01)
    metrics.internal_requests.labels("/internal/send", "200").inc()
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def test_every_metric_the_grafana_dashboard_queries_is_exported():
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"tornado_sse_[a-z_]+", target["expr"])
    }
    assert len(queried) >= 9  # every metric of README's table
    assert sorted(queried - exported_names()) == []
