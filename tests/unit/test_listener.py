"""The acceptor out of file descriptors: it pauses instead of spinning, logs once per interval
with counts, closes idle connections oldest first to make room, keeps a reserve, and resumes."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import time
from typing import Any

import pytest
from tornado.iostream import IOStream

from tornado_sse import listener
from tornado_sse.listener import Acceptor, FdReserve
from tornado_sse.log import FIELDS
from tornado_sse.metrics import Metrics


class ExhaustedSocket(socket.socket):
    """A listening socket whose ``accept()`` fails with EMFILE while :attr:`exhausted` is set."""

    exhausted = True
    attempts = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.attempts += 1
        if self.exhausted:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return super().accept()


def listening() -> ExhaustedSocket:
    sock = ExhaustedSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    return sock


class Records(logging.Handler):
    """Keeps the ``tornado_sse.listener`` records and lets a test await one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    async def wait_for(self, message: str, timeout: float = 5.0) -> logging.LogRecord:
        async def loop() -> logging.LogRecord:
            while True:
                for record in self.records:
                    if record.getMessage() == message:
                        return record
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)


@pytest.fixture
def records():
    handler = Records()
    logger = logging.getLogger("tornado_sse.listener")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.gen_test(timeout=10)
async def test_out_of_descriptors_accepting_pauses_logs_once_per_interval_and_resumes(records):
    sock = listening()
    metrics = Metrics()
    acceptor = Acceptor(pause=0.05, log_interval=0.4, metrics=metrics)
    accepted: list[socket.socket] = []
    arrived = asyncio.Event()

    def on_accept(connection: socket.socket, address: Any) -> None:
        accepted.append(connection)
        arrived.set()

    remove = acceptor.add(sock, on_accept)
    client = socket.create_connection(sock.getsockname()[:2])  # waits in the backlog
    try:
        first = await records.wait_for("out of file descriptors: accepting paused")
        started = time.monotonic()
        assert first.levelname == "WARNING"
        assert getattr(first, FIELDS)["error"] == "EMFILE"
        assert acceptor.paused
        summary = await records.wait_for("still out of file descriptors")
        elapsed = time.monotonic() - started
        # A spinning accept loop tries thousands of times; this one once per pause.
        assert sock.attempts <= elapsed / 0.05 + 3, (sock.attempts, elapsed)
        assert getattr(summary, FIELDS)["pauses"] >= 2  # counted, not logged one by one
        assert records.messages().count("out of file descriptors: accepting paused") == 1
        assert metrics.registry.get_sample_value("tornado_sse_accept_pauses_total") == (
            sock.attempts
        )

        sock.exhausted = False  # descriptors are back
        await asyncio.wait_for(arrived.wait(), 5)
        assert len(accepted) == 1 and not acceptor.paused
        await records.wait_for("accepting connections again")
    finally:
        for connection in accepted:
            connection.close()
        client.close()
        remove()
        sock.close()


@pytest.mark.gen_test(timeout=10)
async def test_out_of_descriptors_idle_connections_are_closed_oldest_first(monkeypatch):
    monkeypatch.setattr(listener, "SHED_GRACE_SECONDS", 0.0)
    monkeypatch.setattr(listener, "SHED_BATCH", 1)
    pairs = [socket.socketpair() for _ in range(3)]
    streams = [IOStream(ours) for ours, _ in pairs]
    sock = listening()
    acceptor = Acceptor(pause=0.05, log_interval=10)
    for stream in streams:
        acceptor.idle(stream)
    acceptor.busy(streams[1])  # serving a request: never closed to make room
    remove = acceptor.add(sock, lambda connection, address: connection.close())
    client = socket.create_connection(sock.getsockname()[:2])
    try:
        for _ in range(100):  # bounded: one pause of 50 ms each
            if streams[2].closed():
                break
            await asyncio.sleep(0.05)
        assert streams[0].closed() and streams[2].closed() and not streams[1].closed()
    finally:
        client.close()
        remove()
        sock.close()
        for stream in streams:
            stream.close()
        for _, theirs in pairs:
            theirs.close()


@pytest.mark.gen_test(timeout=10)
async def test_a_connection_just_accepted_gets_a_grace_time_before_it_may_be_closed():
    ours, theirs = socket.socketpair()
    stream = IOStream(ours)
    sock = listening()
    acceptor = Acceptor(pause=0.05, log_interval=10)
    acceptor.idle(stream)
    remove = acceptor.add(sock, lambda connection, address: connection.close())
    client = socket.create_connection(sock.getsockname()[:2])
    try:
        for _ in range(100):  # bounded: until a few pauses have passed
            if sock.attempts >= 3:
                break
            await asyncio.sleep(0.02)
        assert sock.attempts >= 3
        assert not stream.closed()  # younger than SHED_GRACE_SECONDS
    finally:
        client.close()
        remove()
        sock.close()
        stream.close()
        theirs.close()


def test_the_reserve_is_taken_whole_or_not_at_all():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = [int(name) for name in os.listdir("/proc/self/fd")]
    limit = max(fds) + 1
    free = limit - len(fds)  # holes below the highest descriptor
    reserve = FdReserve(free + 4)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        assert not reserve.acquire()
        assert not reserve.held
        assert len(os.listdir("/proc/self/fd")) == len(fds)  # none kept of a partial reserve
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert reserve.acquire() and reserve.held
    assert reserve.spare()
    reserve.release()
    assert not reserve.held
