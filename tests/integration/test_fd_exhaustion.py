"""Out of file descriptors (wire contract section 7): the gateway backs off and logs once per
interval instead of spinning, keeps answering ``/healthz``, and still delivers every disconnect
callback. The gateway runs in a child process whose descriptor limit the test lowers (its soft
limit, with ``setrlimit`` before it starts)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.helpers import unfinished_request, wait_for_metric
from tests.support.internal import raw_request
from tests.support.process import ChildProcess, start_gateway
from tests.support.sse_client import SSEStream, open_stream

FD_LIMIT = 256
STREAMS = 40
HELD = 300  # more than the descriptors left once the streams are open
RECONNECT_SECONDS = 0.5

#: What an attacker sends: a head that never ends, or a head whose body never follows.
HEADS = (
    b"GET /sse/slowloris HTTP/1.1\r\nHost: x\r\nX-Slow: ",
    b"POST /internal/send HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
)


class Attacker:
    """Holds ``count`` connections open on ``port`` that never finish a request, and opens a
    new one :data:`RECONNECT_SECONDS` after the gateway closes one, until :meth:`stop`.

    (A flood that reconnects at once keeps the kernel's listen backlog full, and then every new
    connection, ``/healthz`` included, waits for the kernel's SYN retransmission, 1 s then 3 s,
    whatever the gateway does: see docs/reliability.md.)
    """

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.opened = 0
        self.closed_by_gateway = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._slot(i)) for i in range(self.count)]

    async def _slot(self, index: int) -> None:
        while not self._stopping.is_set():
            try:
                reader, writer = await unfinished_request(
                    self.port, HEADS[index % len(HEADS)], timeout=2.0
                )
            except (TimeoutError, OSError):
                await asyncio.sleep(RECONNECT_SECONDS)  # the listen backlog was full
                continue
            self.opened += 1
            self._writers.add(writer)
            stop = asyncio.ensure_future(self._stopping.wait())
            eof = asyncio.ensure_future(reader.read(1))
            await asyncio.wait({stop, eof}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if eof.done():
                self.closed_by_gateway += 1
            eof.cancel()
            self._writers.discard(writer)
            writer.close()
            if not self._stopping.is_set():
                await asyncio.sleep(RECONNECT_SECONDS)

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def healthz_latency(port: int) -> float:
    """Seconds until ``/healthz`` answers 200 on a new connection (fails after 2 s)."""
    started = time.monotonic()
    response = await asyncio.wait_for(raw_request(port, "GET", "/healthz"), 2.0)
    assert response.code == 200, response
    return time.monotonic() - started


def log_bytes(gw: ChildProcess) -> int:
    return sum(len(line) + 1 for line in gw.log)


@pytest.mark.gen_test(timeout=90)
async def test_out_of_descriptors_it_backs_off_answers_healthz_and_delivers_every_disconnect(
    backend,
):
    gw = await start_gateway(
        {
            "CALLBACK_URL": backend.url,
            "MAX_CONNECTIONS": "1000",
            # Long enough that only the lack of descriptors closes the attacker's connections.
            "HEADER_TIMEOUT_SECONDS": "60",
            "BODY_TIMEOUT_SECONDS": "60",
        },
        fd_limit=FD_LIMIT,
    )
    streams: list[SSEStream] = []
    attacker = Attacker(gw.port, HELD)
    try:
        for start in range(0, STREAMS, 10):
            streams += await asyncio.gather(
                *(open_stream(gw.port, "/sse/s%d" % i) for i in range(start, start + 10))
            )
        assert [s.status for s in streams] == [200] * STREAMS
        tokens = sorted(c.token for c in backend.of("connect"))
        assert len(tokens) == STREAMS

        attacker.start()
        deadline = time.monotonic() + 15
        while not any("out of file descriptors" in line for line in gw.log):
            assert time.monotonic() < deadline, "the descriptors never ran out:\n" + "\n".join(
                gw.log[-20:]
            )
            await asyncio.sleep(0.05)

        # Under attack, for a window: /healthz answers, and the log barely grows.
        window = 3.0
        before, started = log_bytes(gw), time.monotonic()
        latencies = []
        while time.monotonic() - started < window:
            latencies.append(await healthz_latency(gw.port))
            await asyncio.sleep(0.2)
        growth = log_bytes(gw) - before
        elapsed = time.monotonic() - started
        print(
            "healthz under attack: %d probes, max %.3f s; log growth %d bytes in %.1f s; "
            "attacker opened %d, %d closed by the gateway %s"
            % (
                len(latencies),
                max(latencies),
                growth,
                elapsed,
                attacker.opened,
                attacker.closed_by_gateway,
                [round(x, 3) for x in latencies],
            )
        )
        assert max(latencies) < 2.0
        assert growth < 1_000_000 * elapsed / 10  # under 1 MB per 10 s
        assert attacker.closed_by_gateway > 0  # the gateway made room by closing idle ones

        # Still under attack: every stream that leaves gets its one disconnect callback.
        for stream in streams:
            await stream.aclose()
        disconnects = await backend.wait_for_calls("disconnect", STREAMS, timeout=15)
        assert sorted(c.token for c in disconnects) == tokens
        assert {c.body["reason"] for c in disconnects} == {"client_closed"}
        assert not any("Traceback" in line or "Errno 24" in line for line in gw.log)

        # Once the attacker leaves, nothing is left counted as being received.
        await attacker.stop()
        await wait_for_metric(gw.base_url, "tornado_sse_requests_receiving", lambda v: v == 0)
    finally:
        await attacker.stop()
        for stream in streams:
            stream.close()
        await gw.stop()
    assert len(backend.of("disconnect")) == STREAMS  # none twice, none at shutdown
