"""A memory bound for all slow clients (wire contract section 7, ``MAX_QUEUED_BYTES`` and
``MAX_TOTAL_QUEUED_BYTES``): clients that stop reading are closed as slow consumers before their
output costs more than the bound, the gateway keeps answering meanwhile, and the memory comes
back after they are gone. RSS is per process, so the gateway runs in a child process."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.backend import Answer
from tests.support.helpers import open_count, read_metric, silent_client, wait_for_open_count
from tests.support.process import ChildProcess, rss_bytes, start_gateway

MiB = 1024 * 1024


class HealthProbe:
    """Asks ``/healthz`` over and over, one request at a time, and keeps the slowest answer."""

    def __init__(self, gw: ChildProcess) -> None:
        self.gw = gw
        self.slowest = 0.0
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        client = AsyncHTTPClient()
        while True:
            started = time.monotonic()
            response = await client.fetch(self.gw.base_url + "/healthz", request_timeout=5)
            assert response.code == 200
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.count += 1
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # a failed probe fails the test
        self._task.cancel()


@pytest.mark.gen_test(timeout=120)
async def test_300_clients_that_never_read_small_frames_stay_under_a_memory_bound(backend):
    backend.connect_answer = Answer(body=b'{"channels": ["firehose"]}')
    gw = await start_gateway(
        {
            "CALLBACK_URL": backend.url,
            "MAX_QUEUED_BYTES": "262144",
            "MAX_CONNECTIONS": "1000",
            "HISTORY_SIZE": "0",
        }
    )
    clients = []
    probe = HealthProbe(gw)
    try:
        clients = [await silent_client(gw.port, "/sse/slow%d" % i) for i in range(300)]
        await backend.wait_for_calls("connect", 300, timeout=30)
        await wait_for_open_count(gw.base_url, 300)
        baseline = peak = rss_bytes(gw.pid)

        probe.start()
        # Small frames: 1 KB events, 50 to a batch. Each client needs 256 KiB queued in the
        # gateway, plus whatever its socket buffers take, before it is closed.
        batch = json.dumps([{"channel": "firehose", "event": {"data": "x" * 1000}}] * 50)
        published = 0
        for _ in range(2000):  # at most 100 MB to each client; they close long before
            response = await AsyncHTTPClient().fetch(
                gw.base_url + "/internal/send",
                method="POST",
                body=batch,
                headers={"Content-Type": "application/json"},
                request_timeout=10,
            )
            assert response.code == 200
            published += 50
            peak = max(peak, rss_bytes(gw.pid))
            if len(backend.of("disconnect")) == 300:
                break
        disconnects = await backend.wait_for_calls("disconnect", 300, timeout=20)
        assert {(c.body["reason"], c.body.get("detail")) for c in disconnects} == {
            ("error", "slow_consumer")
        }
        assert await open_count(gw.base_url) == 0
        await probe.stop()

        # The memory comes back once they are gone (bounded poll: freeing is not an event).
        deadline = time.monotonic() + 5
        after = rss_bytes(gw.pid)
        while after - baseline > 20 * MiB and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            after = rss_bytes(gw.pid)
        print(
            "RSS baseline %.1f MiB, peak %.1f MiB (+%.1f), after %.1f MiB (+%.1f); "
            "%d events published; /healthz slowest %.3f s over %d probes"
            % (
                baseline / MiB,
                peak / MiB,
                (peak - baseline) / MiB,
                after / MiB,
                (after - baseline) / MiB,
                published,
                probe.slowest,
                probe.count,
            )
        )
        # 300 x 256 KiB = 75 MiB of unsent output at most, counted as it really costs (before,
        # Tornado's per-write objects doubled it: +149 MiB), plus room for the allocator.
        assert peak - baseline < 100 * MiB, (baseline, peak)
        # Freed, and given back to the system (malloc_trim; before: +140 MiB stayed).
        assert after - baseline < 20 * MiB, (baseline, after)
        assert probe.slowest < 1.0
    finally:
        for sock in clients:
            sock.close()
        await gw.stop()


@pytest.mark.gen_test(timeout=120)
async def test_a_held_stream_costs_the_gateway_at_most_12_kib(backend):
    """The goal of docs/benchmarks.md ("Held streams and connects"), on 2,000 streams: the
    gateway's RSS grows by at most 12 KiB per stream held open (about 10 measured)."""
    gw = await start_gateway({"CALLBACK_URL": backend.url, "MAX_CONNECTIONS": "3000"})
    clients: list[socket.socket] = []

    async def open_streams(name: str, count: int) -> None:
        # 100 connects in flight at a time, as the benchmark makes them.
        for first in range(0, count, 100):
            paths = ["/sse/%s%d?ch=a" % (name, i) for i in range(first, first + 100)]
            clients.extend(await asyncio.gather(*(silent_client(gw.port, p) for p in paths)))
        await wait_for_open_count(gw.base_url, len(clients), timeout=60)

    try:
        # Warm up: the first streams build what every later one reuses (the pool of callback
        # connections at its size, caches, the allocator's first arenas).
        await open_streams("warm", 200)
        before = rss_bytes(gw.pid)
        await open_streams("held", 2000)
        per_stream = (rss_bytes(gw.pid) - before) / 2000
        assert per_stream <= 12 * 1024, per_stream
    finally:
        for sock in clients:
            sock.close()
        await gw.stop()


class LoopLag:
    """Measures how late the event loop runs a 5 ms timer, over and over.

    ``worst`` is the longest lateness in wall-clock time; ``worst_busy`` counts of each
    lateness only the CPU time this process used meanwhile, so that time the machine gave to
    other processes (two cores, shared) is not taken for a stall of the loop. The objects that
    earlier tests left in this process are frozen out of the garbage collector meanwhile: a full
    collection of pytest's heap would be a stall of the test harness, not of the gateway (whose
    own garbage is still collected as usual).
    """

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_busy = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            expected, cpu = loop.time() + 0.005, time.process_time()
            await asyncio.sleep(0.005)
            late = loop.time() - expected
            self.worst = max(self.worst, late)
            self.worst_busy = max(self.worst_busy, min(late, time.process_time() - cpu))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            gc.unfreeze()


@pytest.mark.gen_test(timeout=60)
async def test_past_max_total_queued_bytes_the_streams_furthest_behind_are_closed_first(
    gateway, backend
):
    backend.connect_answer = Answer(body=b'{"channels": ["firehose"]}')
    limit = 8 * MiB
    gw = gateway(max_queued_bytes=256 * MiB, max_total_queued_bytes=limit, history_size=0)
    readers = [await gw.open("/sse/reader%d" % i) for i in range(3)]
    silent: list[socket.socket] = []
    lag = LoopLag()
    try:
        silent = [await silent_client(gw.port, "/sse/silent%d" % i) for i in range(200)]
        await backend.wait_for_calls("connect", 203, timeout=20)
        await wait_for_open_count(gw.base_url, 203)
        silent_tokens = {
            c.token for c in backend.of("connect") if "silent" in c.body["request"]["url"]
        }
        lag.start()
        # Batches of five 4 KB events, so that no single callback of the gateway has much to
        # write: what could stall the loop here is the handling of slow clients, not a big
        # batch. The kernel's socket buffers (a few MB per connection on loopback) fill first.
        batch = [{"channel": "firehose", "event": {"data": "x" * 4000}}] * 5
        published, worst_total = 0, 0.0
        for _ in range(1000):  # at most 20 MB to each client; the silent ones close long before
            status, _ = await gw.send(batch)
            assert status == 200
            published += len(batch)
            if published % 50 == 0:
                for reader in readers:
                    await reader.wait_events(published, timeout=10)
                worst_total = max(
                    worst_total, await read_metric(gw.base_url, "tornado_sse_queued_bytes")
                )
            if len(backend.of("disconnect")) == len(silent_tokens):
                break
        disconnects = await backend.wait_for_calls("disconnect", len(silent_tokens), timeout=10)
        lag.stop()
        print(
            "total bound %d MiB: highest total seen %.1f MiB, %d events published, "
            "longest loop stall %.3f s busy (%.3f s of wall time)"
            % (limit // MiB, worst_total / MiB, published, lag.worst_busy, lag.worst)
        )
        # Every silent client, and only they, closed once as a slow consumer.
        assert sorted(c.token for c in disconnects) == sorted(silent_tokens)
        assert {(c.body["reason"], c.body.get("detail")) for c in disconnects} == {
            ("error", "slow_consumer")
        }
        assert all(not reader.ended for reader in readers)
        assert worst_total <= limit
        assert lag.worst_busy < 0.1
    finally:
        lag.stop()
        for sock in silent:
            sock.close()
