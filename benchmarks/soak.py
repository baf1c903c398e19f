"""Churn soak test of the gateway: short-lived streams, a steady channel publisher, and checks
that no event is lost or duplicated and that every connect is matched by one disconnect.

Run from the repository root::

    python -m benchmarks.soak --duration 60               # 200 slots, 200 channel events/s
    python -m benchmarks.soak --smoke                     # 5 s, 20 slots (CI)
    python -m benchmarks.soak --duration 60 --json soak.json

Three processes on 127.0.0.1, started and stopped through :mod:`benchmarks.targets`:

* the mock backend, ``python -m benchmarks.backend --channels soak --hello-url URL``: it
  subscribes every stream to ``soak`` and, before accepting a connect, sends the new token one
  ``hello`` event through the gateway's ``/internal/send`` (buffered, so written first);
* the gateway, ``python -m tornado_sse`` with its defaults except ``PORT``, ``HOST``,
  ``CALLBACK_URL`` and ``LOG_LEVEL=warning`` (the variables of
  :data:`~benchmarks.targets.GATEWAY_SETTINGS` are not inherited; ``--env`` sets some);
* the load, in this process, on the raw clients of :mod:`benchmarks.wire`: ``--slots`` slots
  each open ``GET /sse/soak/<slot>``, read for a random 0.05-1 s and close, over and over, while
  a publisher POSTs sequence numbers to the channel at ``--rate`` events per second, one request
  at a time (the overdue ones as a batch), so they follow the gateway's publish order.

Each stream must get exactly one hello, with a fresh UUID token, before any channel event, and
its channel events in order, without duplicates or gaps (and, when it read for its whole time,
every event acknowledged while it was open). After ``--duration`` seconds every client closes;
the soak waits for the disconnect callbacks, reads the gateway's RSS, stops it with SIGTERM,
then the backend, prints a table (``--json``: the report as JSON) and exits 1 if any invariant
of :func:`invariants` failed. ``docs/reliability.md`` describes the method and every check.

``--loop`` chooses the load's and the backend's event loop (uvloop when installed); ``--seed``
replays the same random read times, ``--gateway-log FILE`` keeps the gateway's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import tornado

from . import eventloop, procstat
from .targets import Gateway, MockBackend, free_port
from .wire import HTTPConnection, SSEStream, get_json, parse_event, stream_request

LOOPBACK = "127.0.0.1"
CHANNEL = "soak"

#: How long a client waits for the response head of a stream.
HEAD_TIMEOUT = 10.0
#: Timeout of one request of the publisher or of the orchestration.
REQUEST_TIMEOUT = 10.0
#: How long the publisher waits for its connection to open.
CONNECT_TIMEOUT = 5.0
#: After its read time, how long a stream waits for its hello and for the last acknowledged event.
GRACE = 5.0
#: Largest batch the publisher sends when it is behind its rate.
MAX_BATCH = 200

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

#: The gateway's start-up warning about an internal API without a secret: expected here.
EXPOSURE_WARNING = "the internal API is served on the public port"
#: The gateway's access logger (one line per failed request).
ACCESS_LOGGER = "tornado_sse.access"


# ------------------------------------------------------------------------------------------------
# Helpers


def machine(loop: str) -> dict[str, Any]:
    """The machine and software the soak ran on."""
    try:
        import pycurl  # noqa: F401

        callback_client = "curl"
    except ImportError:
        callback_client = "simple"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": procstat.cpu_model() or "unknown",
        "python": platform.python_version(),
        "tornado": tornado.version,
        "kernel": platform.release(),
        "event_loop": eventloop.loop_name(loop),
        "callback_client": callback_client,
    }


def cpu_now(gateway_pid: int, backend_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the gateway, the backend, this process (``soak``) and the
    whole machine outside idle and iowait (``machine``)."""
    return {
        "gateway": procstat.cpu_seconds(gateway_pid),
        "backend": procstat.cpu_seconds(backend_pid),
        "soak": time.process_time(),
        "machine": procstat.machine_ticks()[0] / procstat.CLK_TCK,
    }


async def get(port: int, path: str) -> dict[str, Any]:
    """``GET path`` on the loopback ``port``, which must answer 200 with a JSON object
    (RuntimeError otherwise; TimeoutError after :data:`REQUEST_TIMEOUT`)."""
    found = await asyncio.wait_for(get_json(LOOPBACK, port, path), REQUEST_TIMEOUT)
    if not isinstance(found, dict):
        raise RuntimeError("GET %s on port %d answered %r, not an object" % (path, port, found))
    return found


async def cancel_all(tasks: list[asyncio.Task[None]], what: str, timeout: float = 30.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    Cancels again every second: before Python 3.12, ``asyncio.wait_for`` drops a cancellation
    that arrives just as the awaited operation completes. The tasks also check a stop flag, so a
    task that missed its cancellation still ends at its next iteration.
    """
    deadline = time.monotonic() + timeout
    pending = {task for task in tasks if not task.done()}
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError("%d %s did not stop within %g s" % (len(pending), what, timeout))
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)


# ------------------------------------------------------------------------------------------------
# The publisher


class Publisher:
    """Publishes ``seq`` = 1, 2, 3... to the channel at ``rate`` events per second.

    One request at a time on one keep-alive connection, so the gateway applies the events in
    sequence order; when it falls behind, the overdue events go as one batch (applied in order).
    ``issued`` is the last sequence number written to the socket, ``acked`` the last one
    answered; ``failed`` holds those whose answer was not 200 ``ok`` (they may or may not have
    been published).
    """

    def __init__(self, port: int, rate: float) -> None:
        self.port = port
        self.rate = rate
        self.issued = 0
        self.acked = 0
        self.ok = 0
        self.requests = 0
        self.failed: set[int] = set()
        self.errors: Counter[str] = Counter()
        self.started = 0.0
        self.stopped = 0.0
        self.stopping = False

    def required_upto(self, after: int) -> int | None:
        """The last acknowledged sequence number above ``after`` that did not fail, if any."""
        top = self.acked
        while top > after and top in self.failed:
            top -= 1
        return top if top > after else None

    @staticmethod
    def _item(seq: int) -> dict[str, Any]:
        return {"channel": CHANNEL, "event": {"data": str(seq)}}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        conn: HTTPConnection | None = None
        next_seq = 1
        try:
            while not self.stopping:
                elapsed = loop.time() - self.started
                due = int(elapsed * self.rate)
                if due < next_seq:
                    await asyncio.sleep(next_seq / self.rate - elapsed)
                    continue
                last = min(due, next_seq + MAX_BATCH - 1)
                seqs = range(next_seq, last + 1)
                if len(seqs) == 1:
                    body = json.dumps(self._item(next_seq))
                else:
                    body = json.dumps([self._item(seq) for seq in seqs])
                self.requests += 1
                try:
                    if conn is None:
                        conn = HTTPConnection(LOOPBACK, self.port)
                        await asyncio.wait_for(conn.connect(), CONNECT_TIMEOUT)
                    self.issued = last
                    status, answer = await asyncio.wait_for(
                        conn.request("POST", "/internal/send", body.encode()), REQUEST_TIMEOUT
                    )
                    self._settle(seqs, status, answer)
                except (TimeoutError, OSError, EOFError, ValueError) as exc:
                    self.errors[type(exc).__name__] += len(seqs)
                    self.failed.update(seqs)
                    if conn is not None:
                        conn.close()
                        conn = None
                self.issued = last
                self.acked = last
                next_seq = last + 1
        finally:
            self.stopped = loop.time()
            if conn is not None:
                conn.close()

    def _settle(self, seqs: range, status: int, answer: bytes) -> None:
        """Record the outcome of each sequence number of one answered request."""
        if status != 200:
            self.errors["http_%d" % status] += len(seqs)
            self.failed.update(seqs)
            return
        body = json.loads(answer)
        results: Any = [{"status": status, "body": body}]
        if len(seqs) > 1:
            results = body.get("results") if isinstance(body, dict) else None
            if not isinstance(results, list) or len(results) != len(seqs):
                self.errors["bad_batch_answer"] += len(seqs)
                self.failed.update(seqs)
                return
        for seq, result in zip(seqs, results, strict=True):
            if result.get("status") == 200 and result.get("body") == {"status": "ok"}:
                self.ok += 1
            else:
                self.errors["item_%s" % result.get("status")] += 1
                self.failed.add(seq)


# ------------------------------------------------------------------------------------------------
# The load: client slots


class SoakStream(SSEStream):
    """One client connection of a slot, ``GET /sse/soak/<slot>``, and what it received.

    ``failure`` says why the stream failed, if it did; it is set by the slot for an exception,
    here for an event that does not parse (reading stops there) and by :meth:`stop_reading`
    for a connection lost with an error.
    """

    def __init__(self, slot: int, port: int) -> None:
        path = "/sse/%s/%d" % (CHANNEL, slot)
        super().__init__(stream_request(LOOPBACK, port, path), record=False)
        self.slot = slot
        self.failure: str | None = None
        self.cut_short = False  # closed by the end of the soak, not by its own timer
        self.window_done = False  # read for its whole time (and grace)
        self.ended_by_server = False  # the gateway ended the response while the client read
        self.issued_at_head = 0  # publisher's last written seq when the headers arrived
        self.need_seq: int | None = None  # last acknowledged seq when the read time ended
        self.hello: list[str] = []
        self.hello_late = False  # a hello arrived after a channel event
        self.ids: list[int] = []
        self.seqs: list[int] = []
        self.max_seq = 0
        self.unexpected = 0
        self.waiter: asyncio.Future[None] | None = None  # resolved once satisfied()

    def satisfied(self) -> bool:
        """Whether the hello and every event this stream must wait for have arrived."""
        return bool(self.hello) and (self.need_seq is None or self.max_seq >= self.need_seq)

    def event(self, block: bytes, now: float) -> None:
        """Record a ``hello`` or a channel event (a ``message`` with an id); any other event is
        unexpected."""
        if self.failure is not None:
            return
        parsed = parse_event(block)
        if parsed is None:
            return
        name, text, event_id = parsed
        if name == "message" and event_id is not None:
            try:
                seq, gateway_id = int(text), int(event_id)
            except ValueError as exc:
                self.failure = "read %s" % type(exc).__name__
                self._wake()
                return
            self.ids.append(gateway_id)
            self.seqs.append(seq)
            if seq > self.max_seq:
                self.max_seq = seq
        elif name == "hello":
            self.hello.append(text)
            if self.seqs:
                self.hello_late = True
        else:
            self.unexpected += 1
        if self.satisfied():
            self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def stop_reading(self) -> None:
        """Close the connection, first noting how it went: whether the gateway ended the
        response (or the connection) while the client read, and why a head never came."""
        if self.status == 200:
            if self.error is not None and self.failure is None:
                self.failure = "read %s" % type(self.error).__name__
            self.ended_by_server = self.ended or (self.lost and self.error is None)
        elif self.failure is None and self.status == -1:
            self.failure = "bad status line"
        elif self.failure is None and self.lost:
            self.failure = type(self.error).__name__ if self.error else "closed before the head"
        self.close()


@dataclass
class LoadTotals:
    """Counters of the load, over every stream."""

    requests: int = 0
    opened: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # non-200 status -> streams
    errors: Counter[str] = field(default_factory=Counter)  # failure -> streams
    cut_before_head: int = 0
    ended_by_server: int = 0
    unexpected_events: int = 0
    hello_received: int = 0
    hello_missing: int = 0
    hello_duplicates: int = 0
    hello_late: int = 0
    hello_bad_token: int = 0
    hello_token_reused: int = 0
    events_received: int = 0
    streams_checked: int = 0
    lost: int = 0
    missed_in_window: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    id_mismatches: int = 0


class Load:
    """``slots`` client slots, each opening a stream, reading it for a random time, closing it."""

    def __init__(
        self,
        port: int,
        slots: int,
        read_time: tuple[float, float],
        publisher: Publisher,
        rng: random.Random,
    ) -> None:
        self.port = port
        self.slots = slots
        self.read_time = read_time
        self.publisher = publisher
        self.rng = rng
        self.totals = LoadTotals()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self._id_of_seq: dict[int, int] = {}
        self._tokens: set[str] = set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._slot(i)) for i in range(self.slots)]

    async def stop(self) -> None:
        """Close every client, wherever it is (connecting, reading or waiting)."""
        self.stopping = True
        await cancel_all(self._tasks, "client slots")
        for task in self._tasks:
            if not task.cancelled() and task.exception() is not None:
                self.totals.errors["slot crashed: %r" % task.exception()] += 1

    async def _slot(self, slot: int) -> None:
        await asyncio.sleep(self.rng.uniform(0, 0.5))  # spread the first connects
        while not self.stopping:
            stream = SoakStream(slot, self.port)
            self.totals.requests += 1
            try:
                await self._once(stream)
            except asyncio.CancelledError:
                stream.cut_short = True
                raise
            except Exception as exc:  # recorded per stream; the slot goes on
                stream.failure = type(exc).__name__
            finally:
                self._account(stream)
            if stream.status != 200:
                await asyncio.sleep(0.1)

    async def _once(self, stream: SoakStream) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: stream, LOOPBACK, self.port)
            await asyncio.wait_for(stream.opened, HEAD_TIMEOUT)
            if stream.status != 200:
                return
            stream.issued_at_head = self.publisher.issued
            await asyncio.sleep(self.rng.uniform(*self.read_time))
            stream.need_seq = self.publisher.required_upto(stream.issued_at_head)
            waiting = stream.failure is None and not stream.finished.done()
            if waiting and not stream.satisfied():
                stream.waiter = loop.create_future()
                await asyncio.wait((stream.waiter, stream.finished), timeout=GRACE)
            stream.window_done = True
        finally:
            stream.stop_reading()

    def _account(self, s: SoakStream) -> None:
        """Check one finished stream and add it to the totals."""
        t = self.totals
        if s.status <= 0:  # no response head (-1: one that does not parse)
            if s.cut_short and s.failure is None:
                t.cut_before_head += 1
            else:
                t.errors[s.failure or "no answer"] += 1
            return
        if s.status != 200:
            t.refused[s.status] += 1
            return
        t.opened += 1
        if s.failure is not None:
            t.errors[s.failure] += 1
        if s.ended_by_server:
            t.ended_by_server += 1
        t.unexpected_events += s.unexpected

        # The hello: exactly one, a fresh UUID, before any channel event.
        t.hello_received += len(s.hello)
        if s.hello:
            t.hello_duplicates += len(s.hello) - 1
            for token in set(s.hello):
                if not UUID_RE.fullmatch(token):
                    t.hello_bad_token += 1
                if token in self._tokens:
                    t.hello_token_reused += 1
                self._tokens.add(token)
        elif s.window_done or s.seqs:
            t.hello_missing += 1
        if s.hello_late:
            t.hello_late += 1

        # Channel events: ids strictly increasing, each seq once and in order, no gap.
        t.events_received += len(s.seqs)
        seen: set[int] = set()
        prev_id = -1
        top = 0
        for event_id, seq in zip(s.ids, s.seqs, strict=True):
            if self._id_of_seq.setdefault(seq, event_id) != event_id:
                t.id_mismatches += 1
            if seq in seen:
                t.duplicates += 1
            else:
                if seq < top or event_id <= prev_id:
                    t.out_of_order += 1
                seen.add(seq)
            top = max(top, seq)
            prev_id = max(prev_id, event_id)
        if not seen:
            low, high = 0, -1
        else:
            low, high = min(seen), max(seen)
            if len(seen) >= 2:
                t.streams_checked += 1
        failed = self.publisher.failed
        for seq in range(low, high + 1):
            if seq not in seen and seq not in failed:
                t.lost += 1
        if s.window_done and s.need_seq is not None:
            for seq in range(s.issued_at_head + 1, s.need_seq + 1):
                if not low <= seq <= high and seq not in seen and seq not in failed:
                    t.missed_in_window += 1


# ------------------------------------------------------------------------------------------------
# Orchestration


async def wait_for_disconnects(backend_port: int, timeout: float) -> tuple[dict[str, Any], float]:
    """Poll the backend until it has as many disconnects as connects (at most ``timeout`` s).

    Returns its last counts and how long the wait took.
    """
    started = time.monotonic()
    while True:
        counts = await get(backend_port, "/stats")
        waited = time.monotonic() - started
        if counts["disconnects"] >= counts["connects"] or waited >= timeout:
            return counts, waited
        await asyncio.sleep(0.05)


def gateway_log_summary(lines: list[str]) -> tuple[Counter[str], Counter[str], list[str]]:
    """The gateway's log: lines per level (the expected start-up warning and the access log
    left out), access log lines per status, and the lines worth showing.

    The access log is counted apart: its 4xx/5xx lines at the end of the load are the requests
    of clients that left while their connect callback was in flight, which the invariants on
    callbacks already cover.
    """
    levels: Counter[str] = Counter()
    access: Counter[str] = Counter()
    worse: list[str] = []
    others: list[str] = []
    for line in lines:
        if EXPOSURE_WARNING in line:
            continue
        words = line.split(" ", 4)
        if len(words) > 3 and words[2] == ACCESS_LOGGER:
            status = re.search(r"status=(\d+)", line)
            access[status.group(1) if status else "?"] += 1
            others.append(line)
            continue
        level = words[1] if len(words) > 2 and words[1].isupper() else "other"
        levels[level] += 1
        (others if level in ("DEBUG", "INFO", "WARNING") else worse).append(line)
    return levels, access, worse[:15] + others[:5]


@dataclass
class Options:
    """The soak's parameters (see :func:`parse_args`)."""

    duration: float
    slots: int
    rate: float
    read_time: tuple[float, float]
    warmup: float
    settle: float
    drain_timeout: float
    seed: int
    env: dict[str, str]
    smoke: bool
    loop: str
    gateway_log: str | None


async def soak(opts: Options, workdir: str) -> dict[str, Any]:
    """Run the soak, with the processes' logs in ``workdir``; returns the report (see
    :func:`invariants` for what must hold). RuntimeError when a process does not start.

    Starting and stopping the processes blocks the loop; nothing else runs on it then.
    """
    loop = asyncio.get_running_loop()
    rng = random.Random(opts.seed)
    gateway_port = free_port()
    backend = MockBackend(
        workdir,
        None,
        uvloop=opts.loop != "asyncio",
        hello_url="http://%s:%d/internal/send" % (LOOPBACK, gateway_port),
        channels=[CHANNEL],
    )
    backend.start()
    gateway = Gateway(
        workdir,
        None,
        backend.port,
        opts.env,
        port=gateway_port,
        defaults=True,
        ready_path="/readyz",
    )
    try:
        gateway.start()
        publisher = Publisher(gateway_port, opts.rate)
        load = Load(gateway_port, opts.slots, opts.read_time, publisher, rng)
        load_before = os.getloadavg()[0]
        cpu_before = cpu_now(gateway.pid, backend.pid)
        started = loop.time()
        publishing = loop.create_task(publisher.run())
        load.start()
        samples: list[tuple[float, float]] = []

        async def sample() -> None:
            while True:
                rss = procstat.rss_kib(gateway.pid) / 1024
                samples.append((round(loop.time() - started, 1), round(rss, 1)))
                await asyncio.sleep(5)

        sampling = loop.create_task(sample())
        await asyncio.sleep(opts.warmup)
        rss_start = procstat.rss_kib(gateway.pid) / 1024
        await asyncio.sleep(max(0.0, started + opts.duration - loop.time()))
        await load.stop()
        publisher.stopping = True
        await cancel_all([publishing, sampling], "publisher")
        load_seconds = loop.time() - started
        cpu_after = cpu_now(gateway.pid, backend.pid)
        cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_before}
        cpu["other processes"] = max(
            0.0, cpu["machine"] - cpu["gateway"] - cpu["backend"] - cpu["soak"]
        )
        load_after = os.getloadavg()[0]

        counts, drain_seconds = await wait_for_disconnects(backend.port, opts.drain_timeout)
        gateway_streams = (await get(gateway_port, "/internal/connections?limit=0"))["count"]
        await asyncio.sleep(opts.settle)
        memory = procstat.memory_kib(gateway.pid)
        rss_end, rss_peak = memory["VmRSS"] / 1024, memory["VmHWM"] / 1024
        gateway_exit = gateway.stop()
        final_counts = await get(backend.port, "/stats")
        gateway_lines = gateway.log_lines()
        levels, access, notable = gateway_log_summary(gateway_lines)
        if opts.gateway_log:
            with open(opts.gateway_log, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in gateway_lines))
    finally:
        gateway.stop()  # nothing to do once stopped above
        backend_exit = backend.stop()

    t = load.totals
    published = publisher.ok
    publish_seconds = max(publisher.stopped - publisher.started, 1e-9)
    shutdown_disconnects = final_counts["disconnects"] - counts["disconnects"]
    results: dict[str, Any] = {
        "duration_s": round(load_seconds, 2),
        "connects": counts["connects"],
        "disconnect_callbacks": counts["disconnects"],
        "hello_missing": t.hello_missing,
        "channel_events_lost": t.lost,
        "duplicates": t.duplicates,
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1),
        "connects_per_s": round(counts["connects"] / load_seconds, 1),
        # Details.
        "disconnect_wait_s": round(drain_seconds, 2),
        "disconnect_reasons": counts["reason_details"],
        "duplicate_disconnects": final_counts["duplicate_disconnects"],
        "unknown_disconnects": final_counts["unknown_disconnects"],
        "disconnects_at_shutdown": shutdown_disconnects,
        "gateway_open_streams_after_close": gateway_streams,
        "stream_requests": t.requests,
        "streams_opened": t.opened,
        "streams_refused": {str(k): v for k, v in sorted(t.refused.items())},
        "stream_errors": dict(t.errors),
        "streams_closed_while_connecting": t.cut_before_head,
        "streams_ended_by_gateway": t.ended_by_server,
        "hello_received": t.hello_received,
        "hello_duplicates": t.hello_duplicates,
        "hello_after_channel_event": t.hello_late,
        "hello_bad_token": t.hello_bad_token,
        "hello_token_reused": t.hello_token_reused,
        "hello_send_answers": final_counts["hello"],
        "channel_events_published": published,
        "publish_rate_per_s": round(published / publish_seconds, 1),
        "publish_requests": publisher.requests,
        "publish_failures": len(publisher.failed),
        "publish_errors": dict(publisher.errors),
        "channel_events_received": t.events_received,
        "channel_events_received_per_s": round(t.events_received / load_seconds, 1),
        "streams_checked": t.streams_checked,
        "channel_events_missed_in_window": t.missed_in_window,
        "out_of_order": t.out_of_order,
        "id_mismatches": t.id_mismatches,
        "unexpected_events": t.unexpected_events,
        "rss_peak_mib": round(rss_peak, 1),
        "rss_samples_mib": samples,
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "gateway_exit_status": gateway_exit,
        "backend_exit_status": backend_exit,
        "gateway_log_lines": dict(levels),
        "gateway_access_log_lines": dict(access),
        "gateway_log_excerpt": notable,
    }
    checks = invariants(results)
    return {
        "ok": all(c["ok"] for c in checks),
        "failed": [c["name"] for c in checks if not c["ok"]],
        "config": {
            "duration_s": opts.duration,
            "slots": opts.slots,
            "publish_rate_per_s": opts.rate,
            "read_time_s": list(opts.read_time),
            "warmup_s": opts.warmup,
            "settle_s": opts.settle,
            "seed": opts.seed,
            "smoke": opts.smoke,
            "gateway_env": opts.env,
        },
        "machine": machine(opts.loop),
        "results": results,
        "invariants": checks,
    }


def invariants(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every check of the soak: ``name``, ``ok`` and what was measured."""

    def check(name: str, ok: bool, detail: str) -> dict[str, Any]:
        return {"name": name, "ok": bool(ok), "detail": detail}

    def zero(name: str, key: str) -> dict[str, Any]:
        return check(name, r[key] == 0, "%s = %s" % (key, r[key]))

    errors = sum(r["stream_errors"].values()) + sum(r["streams_refused"].values())
    error_lines = sum(
        n
        for level, n in r["gateway_log_lines"].items()
        if level not in ("DEBUG", "INFO", "WARNING")
    )
    hello_other = {
        k: v for k, v in r["hello_send_answers"].items() if k not in ("buffered", "not_found")
    }
    return [
        check(
            "one disconnect per connect",
            r["disconnect_callbacks"] == r["connects"],
            "connects = %d, disconnect callbacks = %d" % (r["connects"], r["disconnect_callbacks"]),
        ),
        zero("no duplicate disconnect", "duplicate_disconnects"),
        zero("no disconnect for an unknown token", "unknown_disconnects"),
        zero("no stream left open after the clients closed", "gateway_open_streams_after_close"),
        zero("no disconnect left for shutdown", "disconnects_at_shutdown"),
        zero("every stream got its hello", "hello_missing"),
        check(
            "one hello per stream, first, with a fresh token",
            r["hello_duplicates"]
            + r["hello_after_channel_event"]
            + r["hello_bad_token"]
            + r["hello_token_reused"]
            == 0,
            "duplicates = %d, after a channel event = %d, bad token = %d, token reused = %d"
            % (
                r["hello_duplicates"],
                r["hello_after_channel_event"],
                r["hello_bad_token"],
                r["hello_token_reused"],
            ),
        ),
        check(
            "every hello send buffered",
            not hello_other,
            "answers = %s" % json.dumps(r["hello_send_answers"], sort_keys=True),
        ),
        zero("no channel event lost", "channel_events_lost"),
        zero("no channel event missed in a stream's window", "channel_events_missed_in_window"),
        zero("no duplicate channel event", "duplicates"),
        zero("channel events in order", "out_of_order"),
        zero("one id per channel event", "id_mismatches"),
        zero("no unexpected event", "unexpected_events"),
        zero("every publish answered ok", "publish_failures"),
        check(
            "every stream request answered 200",
            errors == 0,
            "refused = %s, errors = %s"
            % (json.dumps(r["streams_refused"]), json.dumps(r["stream_errors"])),
        ),
        zero("no stream ended by the gateway", "streams_ended_by_gateway"),
        check(
            "nothing logged above WARNING by the gateway",
            error_lines == 0,
            "log lines by level (start-up warning and access log excluded) = %s"
            % json.dumps(r["gateway_log_lines"], sort_keys=True),
        ),
        check(
            "gateway exits 0 on SIGTERM",
            r["gateway_exit_status"] == 0,
            "exit status = %s" % r["gateway_exit_status"],
        ),
        check(
            "backend exits 0 on SIGTERM",
            r["backend_exit_status"] == 0,
            "exit status = %s" % r["backend_exit_status"],
        ),
    ]


def table(report: dict[str, Any]) -> Iterator[str]:
    """The report as text lines: the figures, then each invariant."""
    r, cfg, m = report["results"], report["config"], report["machine"]
    yield "tornado_sse churn soak: %gs, %d slots, %g channel events/s, reads of %g-%g s" % (
        cfg["duration_s"],
        cfg["slots"],
        cfg["publish_rate_per_s"],
        *cfg["read_time_s"],
    )
    yield "machine: %d CPUs (%s), Python %s, Tornado %s, %s loop" % (
        m["nproc"],
        m["cpu_model"],
        m["python"],
        m["tornado"],
        m["event_loop"],
    )
    rows = [
        ("duration (s)", r["duration_s"]),
        ("connects (backend callbacks)", r["connects"]),
        ("disconnect callbacks", r["disconnect_callbacks"]),
        ("  time for them to arrive (s)", r["disconnect_wait_s"]),
        ("  reasons", ", ".join("%s %d" % kv for kv in sorted(r["disconnect_reasons"].items()))),
        ("connects/s", r["connects_per_s"]),
        ("streams opened by clients", r["streams_opened"]),
        ("  closed while connecting (at stop)", r["streams_closed_while_connecting"]),
        ("hello events missing", r["hello_missing"]),
        ("channel events published", r["channel_events_published"]),
        ("  rate achieved (/s)", r["publish_rate_per_s"]),
        ("channel events received", r["channel_events_received"]),
        ("  per second", r["channel_events_received_per_s"]),
        ("streams checked (>= 2 events)", r["streams_checked"]),
        ("channel events lost", r["channel_events_lost"]),
        ("  missed in a stream's window", r["channel_events_missed_in_window"]),
        ("duplicates", r["duplicates"]),
        ("out of order", r["out_of_order"]),
        ("gateway RSS start (MiB)", r["rss_start_mib"]),
        ("gateway RSS end (MiB)", r["rss_end_mib"]),
        ("gateway RSS peak (MiB)", r["rss_peak_mib"]),
        (
            "CPU s (gateway/backend/soak/others)",
            "%(gateway)s / %(backend)s / %(soak)s / %(other processes)s" % r["cpu_seconds"],
        ),
        ("gateway exit status", r["gateway_exit_status"]),
        (
            "gateway access log (status: lines)",
            ", ".join("%s: %d" % kv for kv in sorted(r["gateway_access_log_lines"].items())),
        ),
    ]
    width = max(len(name) for name, _ in rows)
    yield ""
    for name, value in rows:
        yield "%-*s  %s" % (width, name, value)
    yield ""
    for c in report["invariants"]:
        yield "[%s] %s: %s" % ("ok" if c["ok"] else "FAIL", c["name"], c["detail"])
    if r["gateway_log_excerpt"] and not report["ok"]:
        yield ""
        yield "gateway log (first lines):"
        yield from ("  " + line for line in r["gateway_log_excerpt"])
    yield ""
    yield "PASS" if report["ok"] else "FAIL: " + "; ".join(report["failed"])


# ------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="Churn soak test of tornado_sse on 127.0.0.1 (see the module docstring).",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load [60]")
    parser.add_argument("--slots", type=int, default=200, help="concurrent client slots [200]")
    parser.add_argument("--rate", type=float, default=200.0, help="channel events/s [200]")
    parser.add_argument("--min-read", type=float, default=0.05, help="shortest read, s [0.05]")
    parser.add_argument("--max-read", type=float, default=1.0, help="longest read, s [1.0]")
    parser.add_argument("--warmup", type=float, default=2.0, help="s before the first RSS [2]")
    parser.add_argument("--settle", type=float, default=2.0, help="s before the last RSS [2]")
    parser.add_argument(
        "--drain-timeout", type=float, default=10.0, help="s to wait for disconnects [10]"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed [random]")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra gateway environment variable (repeatable)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--gateway-log", metavar="FILE", help="write the gateway's log there")
    parser.add_argument(
        "--loop",
        choices=eventloop.CHOICES,
        default="auto",
        help="event loop of the load and the backend [auto: uvloop if installed]",
    )
    parser.add_argument("--smoke", action="store_true", help="5 s, 20 slots (for CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.slots = 5.0, 20
    if args.slots < 1 or args.rate <= 0:
        parser.error("--slots and --rate must be positive")
    if not 0 < args.min_read <= args.max_read:
        parser.error("need 0 < --min-read <= --max-read")
    if not 0 < args.warmup < args.duration:
        parser.error("need 0 < --warmup < --duration")
    for item in args.env:
        if "=" not in item:
            parser.error("--env takes NAME=VALUE, not %r" % item)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(
        duration=args.duration,
        slots=args.slots,
        rate=args.rate,
        read_time=(args.min_read, args.max_read),
        warmup=args.warmup,
        settle=args.settle,
        drain_timeout=args.drain_timeout,
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(2**32),
        env=dict(item.split("=", 1) for item in args.env),
        smoke=args.smoke,
        loop=args.loop,
        gateway_log=args.gateway_log,
    )
    try:
        report = run_report(opts)
    except RuntimeError as exc:  # a process did not start, a request failed
        print("soak: error: %s" % exc, file=sys.stderr)
        return 1
    for line in table(report):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0 if report["ok"] else 1


def run_report(opts: Options) -> dict[str, Any]:
    """Run :func:`soak` on the chosen event loop, in a temporary work directory (removed
    afterwards), and return its report."""
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        return eventloop.run(soak(opts, workdir), opts.loop)


if __name__ == "__main__":
    sys.exit(main())
