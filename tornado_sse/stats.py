"""``GET /internal/stats``: this process's counters as one small JSON object, for the dashboard.

The figures are those of ``/metrics`` (read from the same Prometheus registry, so the two never
disagree), grouped for a page to draw: cumulative counts since the process started, which a
reader turns into rates by taking two snapshots and dividing the differences by the time between
them (``now`` is in each snapshot). Each process answers for itself: with ``--processes N`` or
several machines, ask each one (with ``INTERNAL_PORT`` P, process i also serves P + 1 + i).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry

#: The connect outcomes and disconnect reasons always listed (at 0 before their first count),
#: so a chart has the same series from the first snapshot on.
CONNECT_OUTCOMES = ("accepted", "rejected", "timeout", "unavailable", "bad_answer")
DISCONNECT_REASONS = ("client_closed", "server_closed", "error")
CALLBACK_ACTIONS = ("connect", "disconnect")


def snapshot(registry: CollectorRegistry, started: float) -> dict[str, Any]:
    """The stats of the process whose metrics are in ``registry``; ``started`` is its start
    time (``time.time()``).

    ``{"pid", "started", "now", "open_streams", "connects": {outcome: n},
    "disconnects": {reason: n}, "slow_consumer_closes", "events", "heartbeats", "bytes",
    "callbacks": {action: {"count", "seconds", "buckets": [[le, cumulative count], ...]}}}``;
    every count is cumulative. ``buckets`` are the callback latency histogram's, the last
    ``le`` being ``"+Inf"``.
    """
    connects = dict.fromkeys(CONNECT_OUTCOMES, 0)
    disconnects = dict.fromkeys(DISCONNECT_REASONS, 0)
    frames: dict[str, int] = defaultdict(int)
    callbacks: dict[str, dict[str, Any]] = {
        action: {"count": 0, "seconds": 0.0, "buckets": {}} for action in CALLBACK_ACTIONS
    }
    figures = {"open_streams": 0, "slow_consumer_closes": 0, "bytes": 0}
    for metric in registry.collect():
        for sample in metric.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "tornado_sse_open_streams":
                figures["open_streams"] = int(value)
            elif name == "tornado_sse_connects_total":
                connects[labels["outcome"]] = connects.get(labels["outcome"], 0) + int(value)
            elif name == "tornado_sse_disconnects_total":
                reason = labels["reason"]
                disconnects[reason] = disconnects.get(reason, 0) + int(value)
            elif name == "tornado_sse_slow_consumer_closes_total":
                figures["slow_consumer_closes"] = int(value)
            elif name == "tornado_sse_frames_written_total":
                frames[labels["kind"]] += int(value)
            elif name == "tornado_sse_bytes_written_total":
                figures["bytes"] = int(value)
            elif name.startswith("tornado_sse_callback_duration_seconds"):
                _add_callback_sample(callbacks, name, labels, value)
    for entry in callbacks.values():
        ordered = sorted(entry["buckets"].items(), key=lambda item: _bound(item[0]))
        entry["buckets"] = [[le, count] for le, count in ordered]
    return {
        "pid": os.getpid(),
        "started": round(started, 3),
        "now": round(time.time(), 3),
        **figures,
        "connects": connects,
        "disconnects": disconnects,
        "events": frames["event"],
        "heartbeats": frames["heartbeat"],
        "callbacks": callbacks,
    }


def _add_callback_sample(
    callbacks: dict[str, dict[str, Any]], name: str, labels: dict[str, str], value: float
) -> None:
    """Sum one callback histogram sample over its outcomes, into ``callbacks[action]``."""
    entry = callbacks.setdefault(labels["action"], {"count": 0, "seconds": 0.0, "buckets": {}})
    if name.endswith("_count"):
        entry["count"] += int(value)
    elif name.endswith("_sum"):
        entry["seconds"] += value
    elif name.endswith("_bucket"):
        le = labels["le"]
        entry["buckets"][le] = entry["buckets"].get(le, 0) + int(value)


def _bound(le: str) -> float:
    return float("inf") if le == "+Inf" else float(le)
