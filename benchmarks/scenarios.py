"""The scenarios, as run inside the load generator process, and their parameters.

Every scenario is an ``async def`` taking a :class:`~benchmarks.context.Context` (the target,
the mock backend, CPU windows) and its parameters, and returning ``{"metrics": {...},
"checks": {...}, "cpu": {...}}``. Each is bounded in time by its parameters and by deadlines.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from tornado_sse.client import mint_jwt

from . import procstat
from .context import Context, finish
from .wire import HTTPConnection, Sink, SSEStream, WSConnection, open_stream, open_streams, perf

Result = dict[str, Any]

# -- parameters ------------------------------------------------------------------------------

#: The gateway's JWT_SECRET in the ``jwt`` scenario (40 bytes: HS256).
JWT_SECRET = "benchmark-jwt-secret-0123456789abcdefghij"

#: Full-run and smoke parameters of each scenario. ``sizes`` are the default sizes (``--sizes``
#: replaces them); ``heartbeat`` is the interval both servers are started with; ``gateway_env``
#: (optional) is extra environment for the gateway.
PARAMS: dict[str, dict[str, Any]] = {
    "connections": {
        "full": {"sizes": [1000, 5000, 10000], "concurrency": 100, "settle": 1.0, "warm": 100},
        "smoke": {"sizes": [200], "concurrency": 50, "settle": 0.3, "warm": 20},
        "heartbeat": 15,
        "bound": 120,
    },
    "jwt": {
        "full": {"sizes": [1000, 5000, 10000], "concurrency": 100, "settle": 1.0, "warm": 100},
        "smoke": {"sizes": [200], "concurrency": 50, "settle": 0.3, "warm": 20},
        "heartbeat": 15,
        "bound": 120,
        "gateway_env": {"JWT_SECRET": JWT_SECRET},
    },
    "unicast": {
        "full": {
            "sizes": [100],
            "conns": 16,
            "duration": 5.0,
            "rate": 500,
            "lat_duration": 5.0,
        },
        "smoke": {"sizes": [20], "conns": 4, "duration": 1.0, "rate": 500, "lat_duration": 1.0},
        "heartbeat": 15,
        "bound": 90,
    },
    "socket": {
        "full": {"sizes": [100], "window": 256, "duration": 5.0, "rate": 500, "lat_duration": 5.0},
        "smoke": {"sizes": [20], "window": 64, "duration": 1.0, "rate": 500, "lat_duration": 1.0},
        "heartbeat": 15,
        "bound": 90,
    },
    "batch": {
        "full": {"sizes": [100], "conns": 4, "batch": 100, "duration": 5.0},
        "smoke": {"sizes": [20], "conns": 2, "batch": 50, "duration": 1.0},
        "heartbeat": 15,
        "bound": 90,
    },
    "fanout": {
        "full": {"sizes": [1000, 10000], "publishes": 5, "gap": 0.5, "concurrency": 100},
        "smoke": {"sizes": [200], "publishes": 2, "gap": 0.2, "concurrency": 50},
        "heartbeat": 15,
        "bound": 120,
    },
    "heartbeat": {
        "full": {"sizes": [5000], "window": 10.0, "settle": 2.5, "concurrency": 100},
        "smoke": {"sizes": [200], "window": 2.0, "settle": 1.5, "concurrency": 50},
        "heartbeat": 1,
        "bound": 120,
    },
    "churn": {
        "full": {"sizes": [50], "duration": 10.0, "warm": 300, "settle": 1.0},
        "smoke": {"sizes": [10], "duration": 1.5, "warm": 30, "settle": 0.5},
        "heartbeat": 15,
        "bound": 120,
    },
}

ORDER = ["connections", "jwt", "unicast", "socket", "batch", "fanout", "heartbeat", "churn"]

#: What ``size`` means in each scenario (for the table).
SIZE_MEANS = {
    "connections": "streams",
    "jwt": "streams",
    "unicast": "streams",
    "socket": "streams",
    "batch": "streams",
    "fanout": "subscribers",
    "heartbeat": "streams",
    "churn": "parallel clients",
}


# -- helpers ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, nearest-rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def order_check(sent: list[list[int]], streams: list[SSEStream]) -> dict[str, Any]:
    """Compare what each stream received with what was accepted for it, in order."""
    missing = duplicates = out_of_order = unexpected = 0
    for expected, stream in zip(sent, streams, strict=True):
        got = stream.events
        if got == expected:
            continue
        exp_set = set(expected)
        seen: set[int] = set()
        last = -1
        for value in got:
            if value in seen:
                duplicates += 1
                continue
            seen.add(value)
            if value not in exp_set:
                unexpected += 1
                continue
            if value < last:
                out_of_order += 1
            last = value
        missing += len(exp_set - seen)
    return {
        "exactly_once_in_order": not (missing or duplicates or out_of_order or unexpected),
        "missing": missing,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "unexpected": unexpected,
    }


def cpu_us_per_op(cpu: dict[str, float], ops: int) -> float:
    """The server's CPU time over a window (``target_ns``: its threads' run time from
    ``/proc/<pid>/task/*/schedstat``, what ``utime + stime`` counts, in nanoseconds) per
    operation, in microseconds; NaN when there was no operation."""
    return cpu.get("target_ns", 0.0) / 1000.0 / ops if ops else float("nan")


def close_all(streams: list[SSEStream]) -> None:
    for s in streams:
        s.close()


async def _open_or_fail(
    ctx: Context, paths: list[str], concurrency: int, sink: Sink | None = None, record: bool = True
) -> list[SSEStream]:
    streams = await open_streams(
        ctx.host, ctx.port, paths, concurrency, sink, record, deadline=perf() + 90
    )
    bad = [s.status for s in streams if s.status != 200]
    if bad or len(streams) != len(paths):
        close_all(streams)
        raise RuntimeError(
            "%d of %d streams did not open (statuses %s)"
            % (len(paths) - len(streams) + len(bad), len(paths), sorted(set(bad))[:5])
        )
    return streams


async def _settle_disconnects(ctx: Context, count: int, timeout: float = 20.0) -> None:
    """Wait until the backend has heard at least ``count`` disconnects."""
    deadline = perf() + timeout
    while (await ctx.backend_stats())["disconnects_seen"] < count and perf() < deadline:
        await asyncio.sleep(0.1)


async def _settle_callbacks(ctx: Context, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until the backend has heard a disconnect for every connect; its counters."""
    deadline = perf() + timeout
    while True:
        stats = await ctx.backend_stats()
        if stats["disconnects_seen"] >= stats["connects_seen"] or perf() > deadline:
            return stats
        await asyncio.sleep(0.1)


# -- scenarios -------------------------------------------------------------------------------


async def connections(
    ctx: Context, size: int, concurrency: int, settle: float, warm: int
) -> Result:
    """Open ``size`` streams (connect callback included) and hold them: rate and RSS."""
    warm_paths = [ctx.stream_path("w%d" % i, auth=True) for i in range(warm)]
    paths = [ctx.stream_path(i, auth=True) for i in range(size)]
    return await _hold(ctx, warm_paths, paths, concurrency, settle)


def _jwt_path(ctx: Context, i: int | str) -> str:
    """A stream authorised by its own JWT on the gateway (user ``u<i>``, no channels, an hour
    to live); on nchan, a subscriber without any authorisation, its closest equivalent."""
    if not ctx.gateway:
        return ctx.stream_path(i)
    token = mint_jwt("u%s" % i, [], 3600, secret=JWT_SECRET)
    return ctx.stream_path(i) + "?jwt=" + token


async def jwt(ctx: Context, size: int, concurrency: int, settle: float, warm: int) -> Result:
    """As :func:`connections`, each stream authorised by a JWT instead of a connect callback
    (tokens minted before the measured window)."""
    warm_paths = [_jwt_path(ctx, "w%d" % i) for i in range(warm)]
    paths = [_jwt_path(ctx, i) for i in range(size)]
    result = await _hold(ctx, warm_paths, paths, concurrency, settle, disconnects=warm)
    result["checks"]["no_connect_callbacks"] = result["checks"]["backend_connects"] == 0
    return result


async def _hold(
    ctx: Context,
    warm_paths: list[str],
    paths: list[str],
    concurrency: int,
    settle: float,
    disconnects: int | None = None,
) -> Result:
    """Open and close ``warm_paths``, let their callbacks settle (``disconnects``: wait for that
    many disconnect callbacks, for streams that had no connect callback), then open ``paths``
    and hold them: connect rate, latency, server CPU per connect, RSS per stream."""
    close_all(await _open_or_fail(ctx, warm_paths, concurrency))
    if disconnects is None:
        await _settle_callbacks(ctx)
    elif ctx.gateway:
        await _settle_disconnects(ctx, disconnects)
    await asyncio.sleep(settle)
    size = len(paths)
    before = procstat.memory_kib(ctx.pid)
    await ctx.profile_start()
    window = ctx.cpu_window()
    t0 = perf()
    streams = await _open_or_fail(ctx, paths, concurrency, record=False)
    t1 = max(s.t_open for s in streams)
    cpu = window.stop()
    await ctx.profile_stop()
    await asyncio.sleep(settle)
    after = procstat.memory_kib(ctx.pid)
    latencies = [(s.t_open - s.t_start) * 1000 for s in streams]
    stats = await ctx.backend_stats()
    close_all(streams)
    delta = after["VmRSS"] - before["VmRSS"]
    return {
        "metrics": {
            "connects_per_s": size / (t1 - t0),
            "connect_p50_ms": percentile(latencies, 50),
            "connect_p99_ms": percentile(latencies, 99),
            # The server's CPU time over the window (until the last head), per stream opened;
            # cpu_us_per_op is the same figure under the name every scenario uses.
            "cpu_us_per_connect": cpu_us_per_op(cpu, size),
            "cpu_us_per_op": cpu_us_per_op(cpu, size),
            "rss_per_stream_kib": delta / size,
            "rss_before_kib": before["VmRSS"],
            "rss_after_kib": after["VmRSS"],
            "rss_anon_delta_kib": after.get("RssAnon", 0) - before.get("RssAnon", 0),
            "rss_shmem_delta_kib": after.get("RssShmem", 0) - before.get("RssShmem", 0),
        },
        "checks": {"backend_connects": stats["connects_seen"], "streams_open": len(streams)},
        "cpu": cpu,
    }


async def _request_workers(
    ctx: Context,
    conns: int,
    run: Callable[[int, HTTPConnection], Awaitable[None]],
) -> None:
    pool = [await HTTPConnection(ctx.host, ctx.port).connect() for _ in range(conns)]
    try:
        await asyncio.gather(*(run(k, pool[k]) for k in range(conns)))
    finally:
        for c in pool:
            c.close()


async def unicast(
    ctx: Context, size: int, conns: int, duration: float, rate: int, lat_duration: float
) -> Result:
    """Single sends to one stream each: closed-loop sends/s, then latency at a fixed rate."""
    sink = Sink()
    paths = [ctx.stream_path(i, channel=ctx.own_channel(i)) for i in range(size)]
    streams = await _open_or_fail(ctx, paths, 100, sink)
    keys = await ctx.unicast_keys(paths)
    sent: list[list[int]] = [[] for _ in range(size)]
    counter = itertools.count()
    errors: dict[int, int] = {}
    accepted = 0

    async def closed_loop(k: int, conn: HTTPConnection) -> None:
        nonlocal accepted
        mine = [i for i in range(size) if i % conns == k]
        for i in itertools.cycle(mine):
            if perf() >= t_end:
                return
            seq = next(counter)
            path, body, ctype = ctx.unicast_request(keys[i], seq)
            status, _ = await conn.request("POST", path, body, ctype)
            if ctx.ok(status):
                sent[i].append(seq)
                accepted += 1
            else:
                errors[status] = errors.get(status, 0) + 1

    await ctx.profile_start()
    window = ctx.cpu_window()
    t0 = perf()
    t_end = t0 + duration
    await _request_workers(ctx, conns, closed_loop)
    elapsed = perf() - t0
    cpu = window.stop()
    throughput_accepted = accepted
    delivered_all = await sink.wait_for(accepted, 15)

    # Latency at a fixed rate: send j goes at t0 + j / rate, to stream j % size, always over
    # the same connection for a given stream (so the order per stream is defined).
    queues: list[asyncio.Queue[tuple[int, int] | None]] = [asyncio.Queue() for _ in range(conns)]
    sent_at: dict[int, float] = {}
    lag = 0.0

    async def paced(k: int, conn: HTTPConnection) -> None:
        nonlocal accepted
        while True:
            item = await queues[k].get()
            if item is None:
                return
            i, seq = item
            path, body, ctype = ctx.unicast_request(keys[i], seq)

            def mark(seq: int = seq) -> None:
                sent_at[seq] = perf()

            status, _ = await conn.request("POST", path, body, ctype, on_sent=mark)
            if ctx.ok(status):
                sent[i].append(seq)
                accepted += 1
            else:
                sent_at.pop(seq, None)
                errors[status] = errors.get(status, 0) + 1

    async def schedule() -> None:
        nonlocal lag
        total = int(rate * lat_duration)
        start = perf()
        for j in range(total):
            due = start + j / rate
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
            i = j % size
            queues[i % conns].put_nowait((i, next(counter)))
        for q in queues:
            q.put_nowait(None)

    lat_window = ctx.cpu_window()
    await asyncio.gather(schedule(), _request_workers(ctx, conns, paced))
    lat_cpu = lat_window.stop()
    delivered_all = await sink.wait_for(accepted, 15) and delivered_all
    await ctx.profile_stop()
    latencies = []
    for stream in streams:
        for value, at in zip(stream.events, stream.times, strict=True):
            t = sent_at.get(value)
            if t is not None:
                latencies.append((at - t) * 1000)
    checks = order_check(sent, streams)
    checks.update({"errors": errors, "all_delivered": delivered_all, "schedule_lag_ms": lag * 1e3})
    close_all(streams)
    return {
        "metrics": {
            "sends_per_s": throughput_accepted / elapsed,
            "cpu_us_per_op": cpu_us_per_op(cpu, throughput_accepted),
            "latency_p50_ms": percentile(latencies, 50),
            "latency_p90_ms": percentile(latencies, 90),
            "latency_p99_ms": percentile(latencies, 99),
            "latency_max_ms": max(latencies) if latencies else float("nan"),
            "latency_samples": len(latencies),
        },
        "checks": checks,
        "cpu": cpu,
        "cpu_latency_phase": lat_cpu,
    }


async def socket(
    ctx: Context, size: int, window: int, duration: float, rate: int, lat_duration: float
) -> Result:
    """``unicast`` over one publish socket: the same single sends (one message each, the body
    ``/internal/send`` takes), at most ``window`` of them unanswered; closed-loop sends/s, then
    latency at a fixed rate."""
    if not ctx.has_socket:
        return {"skipped": "nchan has no publish socket"}
    sink = Sink()
    paths = [ctx.stream_path(i) for i in range(size)]
    streams = await _open_or_fail(ctx, paths, 100, sink)
    keys = await ctx.unicast_keys(paths)
    sent: list[list[int]] = [[] for _ in range(size)]
    counter = itertools.count()
    errors: dict[int, int] = {}
    accepted = 0
    ws = await WSConnection(ctx.host, ctx.port).connect()
    #: The sends written and not yet answered, oldest first: (stream, seq).
    unanswered: collections.deque[tuple[int, int]] = collections.deque()
    room = asyncio.Semaphore(window)

    def message(i: int, seq: int) -> bytes:
        return ctx.unicast_request(keys[i], seq)[1]

    async def read_answers(total: int | None) -> None:
        """Count answers, in order, until ``total`` (or until cancelled)."""
        nonlocal accepted
        got = 0
        while total is None or got < total:
            answer = await ws.receive()
            i, seq = unanswered.popleft()
            room.release()
            got += 1
            status = int(answer[answer.index(b'"status":') + 9 :][:3])
            if status == 200:
                sent[i].append(seq)
                accepted += 1
            else:
                sent_at.pop(seq, None)
                errors[status] = errors.get(status, 0) + 1

    sent_at: dict[int, float] = {}

    async def closed_loop() -> int:
        written = 0
        for i in itertools.cycle(range(size)):
            if perf() >= t_end:
                return written
            await room.acquire()
            seq = next(counter)
            unanswered.append((i, seq))
            ws.send(message(i, seq))
            written += 1
            if written % 64 == 0:
                await ws.drain()
        return written

    await ctx.profile_start()
    cpu_window = ctx.cpu_window()
    t0 = perf()
    t_end = t0 + duration
    reader = asyncio.ensure_future(read_answers(None))
    await closed_loop()
    for _ in range(window):  # every send written has been answered once all room is back
        await asyncio.wait_for(room.acquire(), 15)
    elapsed = perf() - t0
    cpu = cpu_window.stop()
    reader.cancel()
    for _ in range(window):
        room.release()
    throughput_accepted = accepted
    delivered_all = await sink.wait_for(accepted, 15)

    # Latency at a fixed rate: send j is written at t0 + j / rate, to stream j % size.
    lag = 0.0
    total = int(rate * lat_duration)
    reader = asyncio.ensure_future(read_answers(total))
    lat_window = ctx.cpu_window()
    start = perf()
    for j in range(total):
        delay = start + j / rate - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            lag = max(lag, -delay)
        i, seq = j % size, next(counter)
        unanswered.append((i, seq))
        sent_at[seq] = perf()
        ws.send(message(i, seq))
    await asyncio.wait_for(reader, 15)
    lat_cpu = lat_window.stop()
    delivered_all = await sink.wait_for(accepted, 15) and delivered_all
    await ctx.profile_stop()
    ws.close()
    latencies = []
    for stream in streams:
        for value, at in zip(stream.events, stream.times, strict=True):
            t = sent_at.get(value)
            if t is not None:
                latencies.append((at - t) * 1000)
    checks = order_check(sent, streams)
    checks.update({"errors": errors, "all_delivered": delivered_all, "schedule_lag_ms": lag * 1e3})
    close_all(streams)
    return {
        "metrics": {
            "sends_per_s": throughput_accepted / elapsed,
            "cpu_us_per_op": cpu_us_per_op(cpu, throughput_accepted),
            "latency_p50_ms": percentile(latencies, 50),
            "latency_p90_ms": percentile(latencies, 90),
            "latency_p99_ms": percentile(latencies, 99),
            "latency_max_ms": max(latencies) if latencies else float("nan"),
            "latency_samples": len(latencies),
        },
        "checks": checks,
        "cpu": cpu,
        "cpu_latency_phase": lat_cpu,
    }


async def batch(ctx: Context, size: int, conns: int, batch: int, duration: float) -> Result:
    """JSON-array batches of token sends: events/s accepted, then delivery checked."""
    if not ctx.has_batches:
        return {"skipped": "nchan has no batch publish"}
    sink = Sink()
    paths = [ctx.stream_path(i) for i in range(size)]
    streams = await _open_or_fail(ctx, paths, 100, sink)
    keys = await ctx.unicast_keys(paths)
    sent: list[list[int]] = [[] for _ in range(size)]
    counter = itertools.count()
    errors: dict[int, int] = {}
    accepted = 0

    async def closed_loop(k: int, conn: HTTPConnection) -> None:
        nonlocal accepted
        mine = itertools.cycle([i for i in range(size) if i % conns == k])
        while perf() < t_end:
            items = [(next(mine), next(counter)) for _ in range(batch)]
            body = json.dumps(
                [{"token": keys[i], "event": {"data": str(seq)}} for i, seq in items]
            ).encode()
            status, answer = await conn.request("POST", "/internal/send", body)
            if status != 200:
                errors[status] = errors.get(status, 0) + len(items)
                continue
            results = json.loads(answer)["results"]
            for (i, seq), res in zip(items, results, strict=True):
                if res["status"] == 200:
                    sent[i].append(seq)
                    accepted += 1
                else:
                    errors[res["status"]] = errors.get(res["status"], 0) + 1

    window = ctx.cpu_window()
    t0 = perf()
    t_end = t0 + duration
    await _request_workers(ctx, conns, closed_loop)
    elapsed = perf() - t0
    cpu = window.stop()
    delivered_all = await sink.wait_for(accepted, 15)
    checks = order_check(sent, streams)
    checks.update({"errors": errors, "all_delivered": delivered_all})
    close_all(streams)
    return {
        "metrics": {
            "events_per_s": accepted / elapsed,
            "batches": accepted / batch,
            "cpu_us_per_op": cpu_us_per_op(cpu, accepted),
        },
        "checks": checks,
        "cpu": cpu,
    }


async def fanout(ctx: Context, size: int, publishes: int, gap: float, concurrency: int) -> Result:
    """One channel, ``size`` subscribers: time until the last one has each publish."""
    sink = Sink()
    channel = ctx.shared_channel("fan")
    paths = [ctx.stream_path(i, channel=channel) for i in range(size)]
    streams = await _open_or_fail(ctx, paths, concurrency, sink)
    await asyncio.sleep(0.5)
    conn = await HTTPConnection(ctx.host, ctx.port).connect()
    times_to_last: list[float] = []
    times_to_median: list[float] = []
    answers: list[float] = []
    cpus: list[dict[str, float]] = []
    complete = True
    await ctx.profile_start()
    try:
        for p in range(publishes):
            path, body, ctype = ctx.publish_request(channel, p)
            window = ctx.cpu_window()
            t0 = perf()
            status, _ = await conn.request("POST", path, body, ctype)
            answers.append((perf() - t0) * 1000)
            if not ctx.ok(status):
                raise RuntimeError("publish answered %d" % status)
            done = await sink.wait_for(size * (p + 1), 20)
            cpus.append(window.stop())
            complete = complete and done
            arrivals = sorted(t for t in (_arrival(s, p) for s in streams) if t is not None)
            if arrivals:
                times_to_last.append((arrivals[-1] - t0) * 1000)
                times_to_median.append((arrivals[len(arrivals) // 2] - t0) * 1000)
            await asyncio.sleep(gap)
    finally:
        conn.close()
        await ctx.profile_stop()
    sent = [list(range(publishes))] * size
    checks = order_check(sent, streams)
    checks["all_delivered"] = complete
    t_last = percentile(times_to_last, 50)
    cpu = _combine(cpus)
    delivered = sum(len(s.events) for s in streams)
    close_all(streams)
    return {
        "metrics": {
            "time_to_last_ms": t_last,
            "time_to_median_ms": percentile(times_to_median, 50),
            "deliveries_per_s": size / (t_last / 1000) if t_last else float("nan"),
            "publish_answer_ms": percentile(answers, 50),
            "time_to_last_each_ms": times_to_last,
            "cpu_us_per_op": cpu_us_per_op(cpu, delivered),
        },
        "checks": checks,
        "cpu": cpu,
    }


def _arrival(stream: SSEStream, value: int) -> float | None:
    """When ``stream`` received the event ``value`` (searching from the newest)."""
    events = stream.events
    for k in range(len(events) - 1, -1, -1):
        if events[k] == value:
            return stream.times[k]
    return None


def _combine(windows: list[dict[str, float]]) -> dict[str, float]:
    """Several short CPU windows as one (raw counters summed)."""
    return finish(procstat.combine(windows))


async def heartbeat(
    ctx: Context, size: int, window: float, settle: float, concurrency: int
) -> Result:
    """``size`` idle streams at a 1 s heartbeat: the server's CPU over ``window`` seconds."""
    paths = [ctx.stream_path(i) for i in range(size)]
    streams = await _open_or_fail(ctx, paths, concurrency, record=False)
    await asyncio.sleep(settle)
    await ctx.profile_start()
    beats0 = sum(s.comments for s in streams)
    cpu_window = ctx.cpu_window()
    ticks0, t0 = procstat.cpu_ticks(ctx.pid), perf()
    await asyncio.sleep(window)
    ticks1, t1 = procstat.cpu_ticks(ctx.pid), perf()
    cpu = cpu_window.stop()
    await ctx.profile_stop()
    beats = sum(s.comments for s in streams) - beats0
    lost = sum(1 for s in streams if s.lost)
    close_all(streams)
    return {
        "metrics": {
            # utime + stime from /proc/<pid>/stat, in percent of one core.
            "cpu_pct": 100.0 * (ticks1 - ticks0) / procstat.CLK_TCK / (t1 - t0),
            "cpu_pct_schedstat": cpu["target_cpu_pct"],
            "heartbeats_per_stream_s": beats / size / (t1 - t0),
            "cpu_us_per_op": cpu_us_per_op(cpu, beats),
        },
        "checks": {"streams_lost": lost},
        "cpu": cpu,
    }


async def churn(ctx: Context, size: int, duration: float, warm: int, settle: float) -> Result:
    """``size`` clients connect, wait for the head, disconnect, again, for ``duration`` s."""

    async def cycle_until(stop_at: float, limit: int | None, tally: list[int], w: int) -> None:
        # Client w always asks for the same URL (on nchan: the same channel), so that nothing
        # but the connections themselves comes and goes.
        path = ctx.stream_path("c%d" % w, auth=True)
        while perf() < stop_at and (limit is None or tally[0] < limit):
            tally[0] += 1
            s = await open_stream(ctx.host, ctx.port, path)
            if s.status == 200:
                tally[1] += 1
            else:
                tally[2] += 1
            s.close()

    warm_tally = [0, 0, 0]
    await asyncio.gather(*(cycle_until(perf() + 60, warm, warm_tally, w) for w in range(size)))
    await _settle_callbacks(ctx)
    await asyncio.sleep(settle)
    baseline = procstat.rss_kib(ctx.pid)
    peak = baseline
    tally = [0, 0, 0]
    stop_at = perf() + duration

    async def sample() -> None:
        nonlocal peak
        while perf() < stop_at:
            peak = max(peak, procstat.rss_kib(ctx.pid))
            await asyncio.sleep(0.25)

    window = ctx.cpu_window()
    t0 = perf()
    await asyncio.gather(sample(), *(cycle_until(stop_at, None, tally, w) for w in range(size)))
    elapsed = perf() - t0
    cpu = window.stop()
    stats = await _settle_callbacks(ctx)
    await asyncio.sleep(settle)
    after = procstat.rss_kib(ctx.pid)
    return {
        "metrics": {
            "cycles_per_s": tally[1] / elapsed,
            "cpu_us_per_op": cpu_us_per_op(cpu, tally[0]),
            "rss_baseline_kib": baseline,
            "rss_peak_kib": peak,
            "rss_after_kib": after,
            "rss_delta_kib": after - baseline,
            "rss_delta_pct": 100.0 * (after - baseline) / baseline,
        },
        "checks": {
            "cycles": tally[1] + warm_tally[1],
            "failed": tally[2] + warm_tally[2],
            "backend_connects": stats["connects_seen"],
            "backend_disconnects": stats["disconnects_seen"],
            "disconnects_match": stats["connects_seen"] == stats["disconnects_seen"]
            and stats.get("duplicate_disconnects", 0) == 0
            and stats.get("unknown_disconnects", 0) == 0,
            "duplicate_disconnects": stats.get("duplicate_disconnects", 0),
            "unknown_disconnects": stats.get("unknown_disconnects", 0),
            "reasons": stats.get("reasons", {}),
        },
        "cpu": cpu,
    }


RUNNERS: dict[str, Callable[..., Awaitable[Result]]] = {
    "connections": connections,
    "jwt": jwt,
    "unicast": unicast,
    "socket": socket,
    "batch": batch,
    "fanout": fanout,
    "heartbeat": heartbeat,
    "churn": churn,
}
