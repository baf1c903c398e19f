"""``python -m benchmarks.channels``: what per-channel history and per-channel Redis
subscriptions cost, measured on real processes.

Three parts (``--parts``, default all), each run ``--runs`` times on freshly started processes
(gateways as :class:`benchmarks.targets.Gateway` starts them, the mock backend of
:mod:`benchmarks.backend`, and a ``redis-server`` on a free loopback port, all stopped by PID);
this process is the load generator.

``bystanders``
    Three gateway instances A, B and C share one Redis. ``subscribers`` streams of one channel
    are all on A; B and C each hold ``bystanders`` streams of a channel of their own that
    nobody publishes to. Over an idle window, then over an equal window in which this process
    publishes ``rate`` events/s on the channel to A's ``/internal/send`` (JSON arrays of
    ``batch`` channel sends, posted on a fixed schedule over ``conns`` keep-alive
    connections), it reads the CPU time (``/proc/<pid>/task/*/schedstat``:
    what ``utime + stime`` count, in ns) of A, B, C and Redis. Reported: B's and C's CPU while
    publishing against idle, A's CPU per delivered event, and what Redis's ``PUBSUB NUMSUB``
    says of who subscribes to what. ``--compare REV`` runs the same against the gateway of
    another git revision, interleaved (each run its own Redis).

``replay``
    One gateway process, once with Redis and once without (its history in memory). Three
    channels get ``replay_events`` events each; then, ``reps`` times alternately: a stream of
    those three channels without replay (time until its head), a stream of the same channels
    with ``?lastEventId=`` of an id issued just before their events (time until the last
    replayed event arrived; the replay cost is the difference of the medians), and
    ``GET /internal/history?channel=`` of each. Then ``fill_channels`` other channels get
    ``fill_events`` events each (JSON-array sends) and the same is measured again, so that a
    replay cost growing with unrelated channels shows as a ratio.

``memory``
    One single-process gateway per payload size: ``memory_events`` events of that many bytes
    of data are published round-robin over ``memory_channels`` channels in four equal steps,
    with the gateway's ``VmRSS`` read after each. The slope from the first step to the last
    (the channels already exist then) is the memory per kept event, set beside what
    :data:`tornado_sse.history.ENTRY_OVERHEAD` assumes: the event's bytes plus that constant.

Prints tables and writes every run as JSON (``--json``; default
``benchmarks/results/channels-<time>.json``). Exit status 1 when a run failed or a check failed
(deliveries exactly once and in order, replays complete and without a gap); a goal not met
does not change it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import eventloop, procstat
from .runner import fmt, machine_info, render, wait_quiet, write_results
from .targets import Checkout, Gateway, MockBackend, Redis, redis_binary
from .wire import HTTPConnection, Sink, SSEStream, get_json, open_stream, open_streams, perf

HOST = "127.0.0.1"
CURRENT = "tornado_sse"
PARTS = ("bystanders", "replay", "memory")

#: Full-run and smoke parameters (``--param NAME=VALUE`` overrides one).
PARAMS: dict[str, dict[str, Any]] = {
    "full": {
        "subscribers": 10,
        "bystanders": 100,
        "rate": 2000,
        "batch": 20,
        "conns": 4,
        "window": 10.0,
        "settle": 2.5,
        "replay_channels": 3,
        "replay_events": 100,
        "reps": 15,
        "fill_channels": 10000,
        "fill_events": 100,
        "fill_batch": 1000,
        "memory_sizes": "100,1024",
        "memory_events": 200000,
        "memory_channels": 1000,
    },
    "smoke": {
        "subscribers": 5,
        "bystanders": 5,
        "rate": 200,
        "batch": 10,
        "conns": 2,
        "window": 1.0,
        "settle": 1.5,
        "replay_channels": 3,
        "replay_events": 10,
        "reps": 3,
        "fill_channels": 100,
        "fill_events": 10,
        "fill_batch": 500,
        "memory_sizes": "100",
        "memory_events": 4000,
        "memory_channels": 100,
    },
}

#: Gateway settings of every part: one process each; nothing expires or is evicted while it is
#: measured; no heartbeat round falls into a measured window (the first comes half an interval
#: after a stream opens at the soonest), so an idle window and a busy one differ only by the
#: publishes.
SETTINGS = {
    "PROCESSES": "1",
    "HISTORY_TTL_SECONDS": "3600",
    "HISTORY_MAX_BYTES": str(4 * 1024**3),
    "MAX_CONNECTIONS": "20000",
    "HEARTBEAT_INTERVAL_SECONDS": "120",
}

#: A bystander's publishing-window CPU may exceed its idle CPU by this share (the goal).
IDLE_MARGIN = 0.10
#: The replay cost goal, in ms.
REPLAY_GOAL_MS = 5.0


# -- helpers -----------------------------------------------------------------------------------


#: The longest one measurement may take (processes started, events sent, all received), in s.
BOUND = 900.0

T = TypeVar("T")


def bounded(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on the load side's event loop; TimeoutError after :data:`BOUND` seconds."""

    async def run() -> T:
        return await asyncio.wait_for(main, BOUND)

    return eventloop.run(run())


def median(values: list[float]) -> float:
    """The median of ``values``; NaN for none."""
    return statistics.median(values) if values else float("nan")


def stream_path(tag: str, name: str, channels: list[str], since: int | None = None) -> str:
    """A stream URL whose connect the mock backend answers with ``channels``."""
    path = "/sse/%s/%s?ch=%s" % (tag, name, ",".join(channels))
    return path if since is None else path + "&lastEventId=%d" % since


def sends(channel: str, values: range | list[int], data: Callable[[int], str] = str) -> list[Any]:
    """Channel sends of ``data(v)`` for each value, as a batch body's items."""
    return [{"channel": channel, "event": {"data": data(v)}} for v in values]


async def post_batch(conn: HTTPConnection, items: list[Any]) -> int:
    """POST ``items`` as one JSON array to ``/internal/send``; how many were answered 200.
    RuntimeError when the request itself was refused."""
    status, answer = await conn.request("POST", "/internal/send", json.dumps(items).encode())
    if status != 200:
        raise RuntimeError("a batch send answered %d: %s" % (status, answer[:200]))
    return sum(1 for r in json.loads(answer)["results"] if r["status"] == 200)


async def open_or_fail(port: int, paths: list[str], sink: Sink | None = None) -> list[SSEStream]:
    """Open a stream per path on ``port`` (100 connects in flight, 90 s at most), each
    recording its events; RuntimeError, with every stream closed, unless all answered 200."""
    streams = await open_streams(HOST, port, paths, 100, sink, True, deadline=perf() + 90)
    bad = sorted({s.status for s in streams if s.status != 200})
    if bad or len(streams) != len(paths):
        for s in streams:
            s.close()
        missing = len(paths) - len(streams) + sum(1 for s in streams if s.status != 200)
        raise RuntimeError("%d of %d streams did not open (%s)" % (missing, len(paths), bad))
    return streams


def close_all(streams: list[SSEStream]) -> None:
    """Close every stream (the gateway then sends their disconnect callbacks)."""
    for s in streams:
        s.close()


class Stack:
    """Processes started for one run, stopped in reverse order by :meth:`stop`."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.started: list[Gateway | MockBackend | Redis] = []

    def redis(self) -> Redis:
        redis = Redis(self.workdir, None)
        redis.start()
        self.started.append(redis)
        return redis

    def backend(self) -> MockBackend:
        backend = MockBackend(self.workdir, None, eventloop.loop_name() == "uvloop")
        backend.start()
        self.started.append(backend)
        return backend

    def gateway(
        self, backend: MockBackend, redis: Redis | None, source: Checkout | None
    ) -> Gateway:
        settings = dict(SETTINGS)
        if redis is not None:
            settings["REDIS_URL"] = redis.url
        gateway = Gateway(
            self.workdir,
            None,
            backend.port,
            settings,
            ready_path="/readyz" if redis is not None else "/healthz",
            source=source,
        )
        gateway.start()
        self.started.append(gateway)
        return gateway

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()


# -- part 1: bystander instances -----------------------------------------------------------------


async def publish_paced(
    port: int, channel: str, rate: float, batch: int, duration: float, conns: int
) -> dict[str, Any]:
    """Publish ``rate`` events/s on ``channel`` for ``duration`` s: POST ``j`` carries the
    values ``j * batch`` to ``(j + 1) * batch - 1`` and is due at ``j * batch / rate`` s; it
    goes on connection ``j % conns``, each of which sends its next POST once the previous one
    is answered (so each connection's values are published in order). Returns the values
    accepted, how late a POST was sent at most (behind its due time), and the time it
    took."""
    queues: list[asyncio.Queue[int | None]] = [asyncio.Queue() for _ in range(conns)]
    accepted: list[int] = []
    refused = 0
    lag = 0.0
    posts = max(1, int(rate * duration / batch))

    async def sender(conn: HTTPConnection, queue: asyncio.Queue[int | None]) -> None:
        nonlocal refused
        nonlocal lag
        while (j := await queue.get()) is not None:
            lag = max(lag, perf() - (start + j * batch / rate))
            values = list(range(j * batch, (j + 1) * batch))
            body = json.dumps(sends(channel, values)).encode()
            status, answer = await conn.request("POST", "/internal/send", body)
            if status != 200:
                refused += batch
                continue
            for value, result in zip(values, json.loads(answer)["results"], strict=True):
                if result["status"] == 200:
                    accepted.append(value)
                else:
                    refused += 1

    async def schedule() -> None:
        for j in range(posts):
            delay = start + j * batch / rate - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            queues[j % conns].put_nowait(j)
        for queue in queues:
            queue.put_nowait(None)

    pool = [await HTTPConnection(HOST, port).connect() for _ in range(conns)]
    start = perf()
    try:
        await asyncio.gather(schedule(), *(sender(c, q) for c, q in zip(pool, queues, strict=True)))
    finally:
        for c in pool:
            c.close()
    elapsed = perf() - start
    return {"accepted": accepted, "refused": refused, "lag_s": lag, "elapsed_s": elapsed}


def delivery_check(
    accepted: list[int], streams: list[SSEStream], batch: int, conns: int
) -> dict[str, Any]:
    """Whether every stream received each accepted value exactly once, and each publishing
    connection's values in the order it sent them (the order between connections is not
    defined)."""
    want = sorted(accepted)
    missing = duplicates = out_of_order = 0
    for stream in streams:
        got = stream.events
        if sorted(got) != want:
            seen = set(got)
            duplicates += len(got) - len(seen)
            missing += len(set(want) - seen)
        last = [-1] * conns
        for value in got:
            k = value // batch % conns
            if value < last[k]:
                out_of_order += 1
            last[k] = value
    return {
        "exactly_once_in_order": not (missing or duplicates or out_of_order),
        "missing": missing,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
    }


def pubsub_subscribers(redis: Redis) -> dict[str, int]:
    """Redis's pub/sub channels and how many connections subscribe to each (the channels
    each gateway instance has for itself, for sends to its tokens and link probes, as one
    count: ``instance channels``)."""
    channels = redis.command("PUBSUB", "CHANNELS", "*")
    assert isinstance(channels, list)
    if not channels:
        return {}
    reply = redis.command("PUBSUB", "NUMSUB", *[str(c) for c in channels])
    assert isinstance(reply, list)
    found = {str(reply[i]): int(str(reply[i + 1])) for i in range(0, len(reply), 2)}
    out = {k: v for k, v in found.items() if ":instance:" not in k and ":probe:" not in k}
    out["instance channels"] = len(found) - len(out)
    return out


async def bystanders_measure(
    a: Gateway,
    b: Gateway,
    c: Gateway,
    redis: Redis,
    backend: MockBackend,
    p: dict[str, Any],
    tag: str,
) -> dict[str, Any]:
    """One bystanders measurement on running processes (see the module docstring): streams
    opened, an idle window, a publishing window; the record's ``metrics``, ``checks``,
    ``pubsub`` and raw CPU windows. Every stream is closed before it returns."""
    channel = "busy-%s" % tag
    sink = Sink()
    subs = await open_or_fail(
        a.port, [stream_path(tag, "a%d" % i, [channel]) for i in range(p["subscribers"])], sink
    )
    others: list[SSEStream] = []
    try:
        for gw, name in ((b, "b"), (c, "c")):
            quiet = ["quiet-%s-%s" % (name, tag)]
            paths = [stream_path(tag, "%s%d" % (name, i), quiet) for i in range(p["bystanders"])]
            others += await open_or_fail(gw.port, paths)
        await asyncio.sleep(p["settle"])
        pids = {"a": a.pid, "b": b.pid, "c": c.pid, "redis": redis.pid, "backend": backend.pid}
        idle = procstat.CPUWindow(pids)
        idle.start()
        await asyncio.sleep(p["window"])
        idle_cpu = idle.stop()
        busy = procstat.CPUWindow(pids)
        busy.start()
        sent = await publish_paced(a.port, channel, p["rate"], p["batch"], p["window"], p["conns"])
        accepted = sent["accepted"]
        delivered_all = await sink.wait_for(len(accepted) * len(subs), 30)
        busy_cpu = busy.stop()
        subscribed = pubsub_subscribers(redis)
        checks = delivery_check(accepted, subs, p["batch"], p["conns"])
    finally:
        close_all(subs)
        close_all(others)
    checks.update(
        {
            "all_delivered": delivered_all,
            "refused": sent["refused"],
            "bystanders_lost": sum(1 for s in others if s.lost),
        }
    )
    deliveries = sink.count
    metrics: dict[str, float] = {
        "publishes_per_s": len(accepted) / sent["elapsed_s"],
        "publish_seconds": sent["elapsed_s"],
        "schedule_lag_ms": sent["lag_s"] * 1000,
        "deliveries": deliveries,
        "a_cpu_us_per_delivery": busy_cpu["a_ns"] / 1000 / deliveries if deliveries else 0.0,
        "a_cpu_us_per_publish": busy_cpu["a_ns"] / 1000 / len(accepted) if accepted else 0.0,
        "loadgen_cpu_pct": busy_cpu["self_cpu_pct"],
    }
    for name in ("a", "b", "c", "redis"):
        metrics[name + "_idle_cpu_pct"] = idle_cpu[name + "_cpu_pct"]
        metrics[name + "_busy_cpu_pct"] = busy_cpu[name + "_cpu_pct"]
    for name in ("b", "c"):
        idle_pct = metrics[name + "_idle_cpu_pct"]
        metrics[name + "_busy_vs_idle"] = (
            metrics[name + "_busy_cpu_pct"] / idle_pct if idle_pct else float("nan")
        )
        # The extra CPU per event published, whether or not it had anyone to deliver it to.
        extra_ns = busy_cpu[name + "_ns"] - idle_cpu[name + "_ns"] * (
            busy_cpu["wall_s"] / idle_cpu["wall_s"]
        )
        metrics[name + "_extra_cpu_us_per_publish"] = (
            extra_ns / 1000 / len(accepted) if accepted else 0.0
        )
    ncpu = os.cpu_count() or 1
    ours = sum(busy_cpu[k + "_cpu_pct"] for k in (*pids, "self"))
    metrics["foreign_cpu_pct"] = max(0.0, busy_cpu["machine_busy_pct"] * ncpu - ours)
    return {
        "metrics": metrics,
        "checks": checks,
        "pubsub": subscribed,
        "cpu_idle": idle_cpu,
        "cpu_busy": busy_cpu,
    }


def bystanders_run(
    workdir: str, p: dict[str, Any], source: Checkout | None, tag: str
) -> dict[str, Any]:
    """Start a Redis, the mock backend and three gateways (of ``source``, or of the current
    tree), measure, and stop them all."""
    stack = Stack(workdir)
    try:
        redis = stack.redis()
        backend = stack.backend()
        a, b, c = (stack.gateway(backend, redis, source) for _ in range(3))
        return bounded(bystanders_measure(a, b, c, redis, backend, p, tag))
    finally:
        stack.stop()


# -- part 2: replay ------------------------------------------------------------------------------


async def last_id(port: int, channel: str) -> int:
    """The id of the newest event ``/internal/history`` lists for ``channel``."""
    found = await get_json(HOST, port, "/internal/history?channel=%s&limit=1000" % channel)
    assert isinstance(found, dict) and found["events"], found
    return int(found["events"][-1]["id"])


async def fill(port: int, channels: int, events: int, batch: int, tag: str) -> dict[str, float]:
    """Publish ``events`` events on each of ``channels`` other channels, round-robin, in JSON
    arrays of ``batch`` sends over four connections; the time it took."""
    total = channels * events
    conns = [await HTTPConnection(HOST, port).connect() for _ in range(4)]
    next_start = 0
    accepted = 0

    async def worker(conn: HTTPConnection) -> None:
        nonlocal next_start, accepted
        while next_start < total:
            first = next_start
            next_start = min(total, first + batch)
            items = [
                {"channel": "other-%s-%d" % (tag, k % channels), "event": {"data": str(k)}}
                for k in range(first, next_start)
            ]
            done = await post_batch(conn, items)
            accepted += done

    t0 = perf()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    elapsed = perf() - t0
    if accepted != total:
        raise RuntimeError("fill: %d of %d sends accepted" % (accepted, total))
    return {"fill_s": elapsed, "fill_events_per_s": total / elapsed}


async def replay_series(
    port: int, channels: list[str], since: int, expected: list[int], reps: int, tag: str
) -> dict[str, Any]:
    """``reps`` times: a plain stream (time to its head), a replaying stream (time to its
    last replayed event) and the channels' ``/internal/history``; the timings in ms."""
    plain: list[float] = []
    replay: list[float] = []
    history: list[float] = []
    history_all: list[float] = []
    bad: list[str] = []
    conn = await HTTPConnection(HOST, port).connect()
    try:
        for r in range(reps):
            s = await open_stream(HOST, port, stream_path(tag, "plain%d" % r, channels))
            if s.status != 200:
                bad.append("plain stream answered %d" % s.status)
            else:
                plain.append((s.t_open - s.t_start) * 1000)
            s.close()
            sink = Sink()
            path = stream_path(tag, "replay%d" % r, channels, since)
            s = await open_stream(HOST, port, path, sink)
            arrived = s.status == 200 and await sink.wait_for(len(expected), 10)
            # One more event or a history_gap would show here: give it a moment to arrive.
            await asyncio.sleep(0.02)
            if not arrived or s.events != expected:
                bad.append(
                    "replay %d: status %d, %d events (%d expected), first %s"
                    % (r, s.status, len(s.events), len(expected), s.events[:3])
                )
            else:
                replay.append((s.times[len(expected) - 1] - s.t_start) * 1000)
            s.close()
            t_all = perf()
            for channel in channels:
                t0 = perf()
                status, body = await conn.request(
                    "GET", "/internal/history?channel=%s&limit=1000" % channel
                )
                history.append((perf() - t0) * 1000)
                if status != 200 or len(json.loads(body)["events"]) != len(expected) // len(
                    channels
                ):
                    bad.append("history of %s: status %d" % (channel, status))
            history_all.append((perf() - t_all) * 1000)
    finally:
        conn.close()
    return {
        "plain_ms": plain,
        "replay_ms": replay,
        "history_ms": history,
        "history_all_ms": history_all,
        "problems": bad,
    }


async def replay_measure(port: int, p: dict[str, Any], tag: str) -> dict[str, Any]:
    channels = ["replay-%s-%d" % (tag, k) for k in range(p["replay_channels"])]
    conn = await HTTPConnection(HOST, port).connect()
    try:
        mark = "mark-%s" % tag
        await post_batch(conn, sends(mark, [0]))
        since = await last_id(port, mark)
        expected = list(range(p["replay_events"] * len(channels)))
        items = [sends(channels[v % len(channels)], [v])[0] for v in expected]
        if await post_batch(conn, items) != len(items):
            raise RuntimeError("not every replay event was accepted")
    finally:
        conn.close()
    before = await replay_series(port, channels, since, expected, p["reps"], tag)
    filled = await fill(port, p["fill_channels"], p["fill_events"], p["fill_batch"], tag)
    after = await replay_series(port, channels, since, expected, p["reps"], tag)
    return {"before": before, "after": after, "fill": filled, "events": len(expected)}


def replay_run(workdir: str, p: dict[str, Any], redis: bool, tag: str) -> dict[str, Any]:
    """Start one gateway (with a Redis of its own if ``redis``) and the mock backend, measure
    replay before and after the fill, stop them; medians of the repetitions as metrics."""
    stack = Stack(workdir)
    try:
        store = stack.redis() if redis else None
        backend = stack.backend()
        gateway = stack.gateway(backend, store, None)
        raw = bounded(replay_measure(gateway.port, p, tag))
        raw["rss_kib"] = procstat.rss_kib(gateway.pid)
    finally:
        stack.stop()
    metrics: dict[str, float] = dict(raw.pop("fill"))
    for when in ("before", "after"):
        series = raw[when]
        metrics[when + "_plain_ms"] = median(series["plain_ms"])
        metrics[when + "_replay_ms"] = median(series["replay_ms"])
        metrics[when + "_replay_cost_ms"] = (
            metrics[when + "_replay_ms"] - metrics[when + "_plain_ms"]
        )
        metrics[when + "_history_ms"] = median(series["history_ms"])
        metrics[when + "_history_all_ms"] = median(series["history_all_ms"])
    problems = raw["before"]["problems"] + raw["after"]["problems"]
    return {
        "metrics": metrics,
        "checks": {"replays_complete": not problems, "problems": problems[:10]},
        "series": raw,
    }


# -- part 3: memory per kept event -----------------------------------------------------------------


async def memory_measure(
    port: int, pid: int, size: int, events: int, channels: int, tag: str
) -> dict[str, Any]:
    """Publish ``events`` events of ``size`` data bytes in four steps; RSS after each."""
    conn = await HTTPConnection(HOST, port).connect()
    batch = max(1, min(500, (512 * 1024) // (size + 64)))
    rss = [procstat.memory_kib(pid)]
    steps = 4
    try:
        for step in range(steps):
            first, last = events * step // steps, events * (step + 1) // steps
            for start in range(first, last, batch):
                values = range(start, min(last, start + batch))
                items = [
                    {
                        "channel": "mem-%s-%d" % (tag, v % channels),
                        "event": {"data": "%0*d" % (size, v)},
                    }
                    for v in values
                ]
                if await post_batch(conn, items) != len(items):
                    raise RuntimeError("not every memory event was accepted")
            await asyncio.sleep(0.5)
            rss.append(procstat.memory_kib(pid))
    finally:
        conn.close()
    return {"rss": rss, "steps": steps}


def memory_run(
    workdir: str, p: dict[str, Any], size: int, tag: str, overhead: int
) -> dict[str, Any]:
    """Start one Redis-less gateway, publish ``memory_events`` events of ``size`` data bytes,
    stop it; the RSS per kept event against the event's bytes plus ``overhead``."""
    stack = Stack(workdir)
    try:
        backend = stack.backend()
        gateway = stack.gateway(backend, None, None)
        events, channels = p["memory_events"], p["memory_channels"]
        raw = bounded(memory_measure(gateway.port, gateway.pid, size, events, channels, tag))
    finally:
        stack.stop()
    rss = [m["VmRSS"] for m in raw["rss"]]
    steps = raw["steps"]
    slope = (rss[-1] - rss[1]) * 1024 / (events * (steps - 1) / steps)
    tail = len(b"data: ") + size + len(b"\n\n")
    return {
        "metrics": {
            "bytes_per_event": slope,
            "bytes_per_event_from_start": (rss[-1] - rss[0]) * 1024 / events,
            "assumed_bytes_per_event": tail + overhead,
            "tail_bytes": tail,
            "measured_overhead_bytes": slope - tail,
            "measured_vs_assumed": slope / (tail + overhead),
            "rss_growth_kib": rss[-1] - rss[0],
        },
        "checks": {},
        "rss_kib": rss,
    }


# -- driver ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.channels", description=__doc__)
    p.add_argument("--parts", default=",".join(PARTS), help="a subset of: %s" % ", ".join(PARTS))
    p.add_argument("--runs", type=int, default=None, help="runs per target (default 3; smoke 1)")
    p.add_argument("--smoke", action="store_true", help="small sizes, seconds")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="REV",
        help="also run bystanders against the gateway of git revision REV (repeatable)",
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a parameter (%s)" % ", ".join(PARAMS["full"]),
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be idle (default 10)",
    )
    p.add_argument("--json", default=None, help="write results here")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if set(args.parts) - set(PARTS):
        p.error("unknown part(s): %s" % ", ".join(sorted(set(args.parts) - set(PARTS))))
    args.compare = [r.strip() for item in args.compare for r in item.split(",") if r.strip()]
    params = dict(PARAMS["smoke" if args.smoke else "full"])
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or name not in params:
            p.error("--param %s: expected NAME=VALUE with a known name" % item)
        params[name] = type(params[name])(value)
    args.params = params
    if args.runs is None:
        args.runs = 1 if args.smoke else 3
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.smoke else 10.0
    return args


def attempt(what: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``, with a failure recorded instead of raised."""
    t0 = time.monotonic()
    try:
        record = run()
    except Exception as exc:
        record = {"error": "%s: %s" % (type(exc).__name__, exc)}
    record["what"] = what
    record["seconds"] = round(time.monotonic() - t0, 1)
    line = "[%s %.0fs]" % (what, record["seconds"])
    if "error" in record:
        line += " FAILED: " + record["error"]
    else:
        line += " " + " ".join(
            "%s=%s" % (k, fmt(v))
            for k, v in record["metrics"].items()
            if isinstance(v, (int, float)) and not k.startswith(("before_plain", "after_plain"))
        )
    print(line, flush=True)
    return record


def medians(records: list[dict[str, Any]]) -> dict[str, float]:
    """The median of every metric over the records that did not fail."""
    good = [r for r in records if "error" not in r]
    if not good:
        return {}
    out = {}
    for name in good[0]["metrics"]:
        values = [
            r["metrics"][name] for r in good if isinstance(r["metrics"].get(name), (int, float))
        ]
        if values:
            out[name] = statistics.median(values)
    return out


def comparison(
    groups: dict[str, list[dict[str, Any]]], shown: list[tuple[str, str]], ratios: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Medians per group (columns) of the ``shown`` metrics (rows); with ``ratios`` and two
    groups or more, the ratio of the first to each other."""
    names = list(groups)
    meds = {n: medians(groups[n]) for n in names}
    others = names[1:] if ratios else []
    header = ["metric", *names] + ["%s / %s" % (names[0], n) for n in others]
    rows = []
    for metric, label in shown:
        row = [label] + [fmt(meds[n].get(metric)) for n in names]
        first = meds[names[0]].get(metric)
        for n in others:
            other = meds[n].get(metric)
            row.append("%.2fx" % (first / other) if first is not None and other else "-")
        rows.append(row)
    return header, rows


BYSTANDER_ROWS = [
    ("publishes_per_s", "publishes/s accepted by A"),
    ("schedule_lag_ms", "a POST sent late by, at most (ms)"),
    ("deliveries", "events delivered by A"),
    ("a_cpu_us_per_delivery", "A: CPU per delivered event (µs)"),
    ("a_cpu_us_per_publish", "A: CPU per publish (µs)"),
    ("a_busy_cpu_pct", "A: CPU while publishing (% of a core)"),
    ("b_idle_cpu_pct", "B: CPU idle (% of a core)"),
    ("b_busy_cpu_pct", "B: CPU while A publishes (% of a core)"),
    ("b_busy_vs_idle", "B: publishing / idle"),
    ("b_extra_cpu_us_per_publish", "B: extra CPU per publish (µs)"),
    ("c_idle_cpu_pct", "C: CPU idle (% of a core)"),
    ("c_busy_cpu_pct", "C: CPU while A publishes (% of a core)"),
    ("c_busy_vs_idle", "C: publishing / idle"),
    ("c_extra_cpu_us_per_publish", "C: extra CPU per publish (µs)"),
    ("redis_busy_cpu_pct", "Redis: CPU while A publishes (% of a core)"),
    ("foreign_cpu_pct", "other processes while publishing (% of a core)"),
]

REPLAY_ROWS = [
    ("before_plain_ms", "connect, no replay (ms)"),
    ("before_replay_ms", "connect + replay (ms)"),
    ("before_replay_cost_ms", "replay cost (ms)"),
    ("before_history_ms", "GET /internal/history, one channel (ms)"),
    ("before_history_all_ms", "GET /internal/history, all replayed channels (ms)"),
    ("fill_events_per_s", "fill: channel events/s in batches"),
    ("after_plain_ms", "filled: connect, no replay (ms)"),
    ("after_replay_ms", "filled: connect + replay (ms)"),
    ("after_replay_cost_ms", "filled: replay cost (ms)"),
    ("after_history_ms", "filled: GET /internal/history, one channel (ms)"),
    ("after_history_all_ms", "filled: GET /internal/history, all replayed channels (ms)"),
]

MEMORY_ROWS = [
    ("bytes_per_event", "RSS per kept event, slope (bytes)"),
    ("bytes_per_event_from_start", "RSS per kept event, from the start (bytes)"),
    ("tail_bytes", "the event's bytes (data: ... and the blank line)"),
    ("assumed_bytes_per_event", "assumed: event bytes + ENTRY_OVERHEAD"),
    ("measured_overhead_bytes", "measured overhead beyond the event's bytes"),
    ("measured_vs_assumed", "measured / assumed"),
]


def goals(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[list[str]]:
    """``[goal, measured, verdict]`` rows for the goals the results allow judging."""
    out = []
    current = medians(results.get("bystanders", {}).get(CURRENT, []))
    for name in ("b", "c"):
        ratio = current.get(name + "_busy_vs_idle")
        if ratio is not None:
            out.append(
                [
                    "%s's CPU while A publishes within %d%% of idle"
                    % (name.upper(), IDLE_MARGIN * 100),
                    "%.2f%% vs %.2f%% of a core (%.2fx)"
                    % (current[name + "_busy_cpu_pct"], current[name + "_idle_cpu_pct"], ratio),
                    "met" if ratio <= 1 + IDLE_MARGIN else "NOT MET",
                ]
            )
    for setup, group in results.get("replay", {}).items():
        meds = medians(group)
        if "after_replay_cost_ms" in meds:
            cost = max(meds["after_replay_cost_ms"], 0.0)
            out.append(
                [
                    "replay (%s) with unrelated channels under %g ms" % (setup, REPLAY_GOAL_MS),
                    "%.2f ms (%.2f ms before they were filled)"
                    % (meds["after_replay_cost_ms"], meds["before_replay_cost_ms"]),
                    "met" if cost < REPLAY_GOAL_MS else "NOT MET",
                ]
            )
    return out


def check_failures(records: list[dict[str, Any]]) -> list[str]:
    """What failed: runs that raised, and checks that did not hold."""
    bad = []
    for r in records:
        if "error" in r:
            bad.append("%s: %s" % (r["what"], r["error"]))
            continue
        checks = r["checks"]
        for name in ("exactly_once_in_order", "all_delivered", "replays_complete"):
            if name in checks and not checks[name]:
                bad.append("%s: %s failed %s" % (r["what"], name, checks.get("problems", "")))
    return bad


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    p = args.params
    workdir = tempfile.mkdtemp(prefix="sse-channels-")
    revisions: dict[str, Checkout] = {}
    try:
        for rev in args.compare:
            checkout = Checkout(rev)
            try:
                checkout.create(workdir)
            except ValueError as exc:
                print("benchmarks.channels: --compare %s: %s" % (rev, exc), file=sys.stderr)
                shutil.rmtree(workdir, ignore_errors=True)
                return 2
            revisions["%s@%s" % (CURRENT, checkout.label)] = checkout
            problem = checkout.missing()
            if problem is not None:
                print("benchmarks.channels: " + problem, file=sys.stderr)
                shutil.rmtree(workdir, ignore_errors=True)
                return 2
        return run(args, p, workdir, revisions)
    finally:
        for checkout in revisions.values():
            checkout.remove()


def run(
    args: argparse.Namespace, p: dict[str, Any], workdir: str, revisions: dict[str, Checkout]
) -> int:
    from tornado_sse.history import ENTRY_OVERHEAD

    info = machine_info(eventloop.loop_name() == "uvloop")
    info["compare"] = [
        {"target": t, "rev": c.rev, "commit": c.commit} for t, c in revisions.items()
    ]
    print(
        "machine: %s CPUs (%s), %s GiB; Python %s, Tornado %s; gateway %s"
        % (
            info["nproc"],
            info.get("cpu", "?"),
            info.get("memory_gib", "?"),
            info["python"],
            info["tornado"],
            (info.get("gateway_git_head") or "?")[:12],
        ),
        flush=True,
    )
    has_redis = redis_binary() is not None
    if not has_redis:
        print("redis-server is not installed: the parts that need Redis are skipped", flush=True)
    started = time.monotonic()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    records: list[dict[str, Any]] = []

    def record(part: str, group: str, what: str, job: Callable[[], dict[str, Any]]) -> None:
        busy = wait_quiet(args.quiet_wait) if args.quiet_wait else 0.0
        rec = attempt(what, job)
        rec["foreign_cpu_pct_before"] = busy
        results.setdefault(part, {}).setdefault(group, []).append(rec)
        records.append(rec)

    if "bystanders" in args.parts and has_redis:
        targets: dict[str, Checkout | None] = {CURRENT: None, **revisions}
        for run_no in range(1, args.runs + 1):
            for target, source in targets.items():
                tag = "r%d" % run_no
                record(
                    "bystanders",
                    target,
                    "bystanders run %d/%d %s" % (run_no, args.runs, target),
                    lambda s=source, t=tag: bystanders_run(workdir, p, s, t),
                )
    if "replay" in args.parts:
        setups = (["1 process + Redis"] if has_redis else []) + ["1 process"]
        for run_no in range(1, args.runs + 1):
            for setup in setups:
                record(
                    "replay",
                    setup,
                    "replay run %d/%d %s" % (run_no, args.runs, setup),
                    lambda r="Redis" in setup, t="r%d" % run_no: replay_run(workdir, p, r, t),
                )
    if "memory" in args.parts:
        sizes = [int(x) for x in str(p["memory_sizes"]).split(",") if x.strip()]
        for run_no in range(1, args.runs + 1):
            for size in sizes:
                record(
                    "memory",
                    "%d B" % size,
                    "memory run %d/%d %d B" % (run_no, args.runs, size),
                    lambda z=size, t="r%d" % run_no: memory_run(workdir, p, z, t, ENTRY_OVERHEAD),
                )

    print()
    if "bystanders" in results:
        print(
            "bystanders: %d subscribers on A, %d publishes/s in batches of %d for %g s; "
            "%d streams of a quiet channel on each of B and C; medians of %d run(s)"
            % (p["subscribers"], p["rate"], p["batch"], p["window"], p["bystanders"], args.runs)
        )
        print(render(*comparison(results["bystanders"], BYSTANDER_ROWS)))
        for target, group in results["bystanders"].items():
            for r in group:
                if "pubsub" in r:
                    print("  %s %s pub/sub subscribers: %s" % (target, r["what"], r["pubsub"]))
                    break
        print()
    if "replay" in results:
        print(
            "replay: %d channels x %d events replayed; then %d other channels x %d events; "
            "medians of %d repetitions per run, then of %d run(s)"
            % (
                p["replay_channels"],
                p["replay_events"],
                p["fill_channels"],
                p["fill_events"],
                p["reps"],
                args.runs,
            )
        )
        print(render(*comparison(results["replay"], REPLAY_ROWS)))
        print()
    if "memory" in results:
        print(
            "memory: %d events over %d channels, one process, ENTRY_OVERHEAD = %d; medians of "
            "%d run(s)" % (p["memory_events"], p["memory_channels"], ENTRY_OVERHEAD, args.runs)
        )
        print(render(*comparison(results["memory"], MEMORY_ROWS, ratios=False)))
        print()
    found = goals(results)
    if found:
        print(render(["goal", "measured", "verdict"], found))
        print()
    out_path = write_results(
        args.json,
        "channels",
        {
            "machine": info,
            "args": vars(args),
            "entry_overhead": ENTRY_OVERHEAD,
            "seconds": round(time.monotonic() - started, 1),
            "medians": {
                part: {group: medians(recs) for group, recs in groups.items()}
                for part, groups in results.items()
            },
            "goals": found,
            "runs": records,
        },
    )
    print("results written to %s (%.0f s)" % (out_path, time.monotonic() - started))
    failures = check_failures(records)
    for line in failures:
        print("FAILED: " + line)
    if failures:
        print("logs are in %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
