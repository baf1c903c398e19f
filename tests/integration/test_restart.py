"""A restart without downtime: two gateway processes on one port with ``REUSE_PORT``.

Gateway A holds streams; gateway B starts on the same port; A gets SIGTERM. A's streams get
``retry:`` and end, A exits 0, and a client that keeps connecting all along is never refused:
every connect during the switch opens a stream (on A before its SIGTERM, on B after).
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from tests.support.backend import FakeBackend
from tests.support.ports import unused_port
from tests.support.process import ChildProcess, start_process
from tests.support.sse_client import SSEStream, open_stream
from tests.support.waiting import wait_until

#: Bounds of the client that keeps connecting during the switch.
MAX_CONNECTS = 2000
LOOP_SECONDS = 30.0


async def start_on(port: int, backend: FakeBackend, **env: str) -> ChildProcess:
    """``python -m tornado_sse`` on ``port`` of 127.0.0.1 with ``REUSE_PORT`` on."""
    return await start_process(
        [sys.executable, "-m", "tornado_sse"],
        port=port,
        env={
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "CALLBACK_URL": backend.url,
            "REUSE_PORT": "true",
            **env,
        },
        ready=lambda line: " listening " in line,
        what="the gateway",
    )


class Connector:
    """Opens and closes streams on ``port`` one after another until told to stop, and keeps
    what went wrong (a refused or reset connect, a status other than 200)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.outcomes: list[tuple[float, str]] = []  # (monotonic time, "ok" or what failed)
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()  # set after each outcome

    def failures(self) -> list[str]:
        return [what for _, what in self.outcomes if what != "ok"]

    def count_between(self, start: float, end: float) -> int:
        return sum(1 for at, what in self.outcomes if what == "ok" and start <= at <= end)

    async def run(self) -> None:
        deadline = time.monotonic() + LOOP_SECONDS
        for _ in range(MAX_CONNECTS):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            try:
                stream = await open_stream(self.port, "/sse/loop", timeout=5.0)
            except (OSError, TimeoutError, AssertionError) as exc:
                self.outcomes.append((time.monotonic(), repr(exc)))
                self.changed.set()
                continue
            what = "ok" if stream.status == 200 else "status %d" % stream.status
            self.outcomes.append((time.monotonic(), what))
            self.changed.set()
            await stream.aclose()


@pytest.mark.gen_test(timeout=60)
async def test_reuse_port_successor_takes_new_connects_while_the_old_one_drains(backend):
    port = unused_port()
    old = await start_on(port, backend)
    new: ChildProcess | None = None
    connector = Connector(port)
    loop_task: asyncio.Task[None] | None = None
    held: list[SSEStream] = []
    try:
        held += [await open_stream(port, "/sse/held-%d" % i) for i in range(3)]
        assert [s.status for s in held] == [200, 200, 200]
        await backend.wait_for_calls("connect", count=3)

        new = await start_on(port, backend)
        loop_task = asyncio.ensure_future(connector.run())
        await _connects(connector, 5)

        signalled = time.monotonic()
        old.signal()
        for stream in held:  # each held stream is told when to come back, then ends
            await stream.read_to_end(timeout=10)
            assert stream.parser.retry is not None, bytes(stream.raw)
        assert await old.wait(15) == 0, "\n".join(old.log)
        exited = time.monotonic()
        await _connects(connector, len(connector.outcomes) + 20)  # all on the successor
        connector.stopping.set()
        await loop_task

        assert connector.failures() == []
        assert connector.count_between(signalled, exited) >= 1, connector.outcomes
        disconnects = [
            c.body for c in backend.of("disconnect") if "held" in c.body["request"]["url"]
        ]
        assert sorted(d["reason"] for d in disconnects) == ["server_closed"] * 3
        assert new.process.returncode is None  # the successor kept running throughout
    finally:
        for stream in held:
            await stream.aclose()
        connector.stopping.set()
        if loop_task is not None:
            await asyncio.wait_for(loop_task, 10)
        await old.stop()
        if new is not None:
            await new.stop()


async def _connects(connector: Connector, count: int) -> None:
    """Wait until the connector has made ``count`` connects in all (failed ones included)."""
    await wait_until(lambda: len(connector.outcomes) >= count, connector.changed, 10)


@pytest.mark.gen_test(timeout=30)
async def test_without_reuse_port_a_second_gateway_cannot_bind_the_port(backend):
    port = unused_port()
    first = await start_on(port, backend, REUSE_PORT="false")
    try:
        with pytest.raises(AssertionError, match="did not start"):
            second = await start_on(port, backend, REUSE_PORT="false")
            await second.stop()
    finally:
        await first.stop()
