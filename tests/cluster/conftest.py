"""A real ``redis-server`` for the cluster tests, started on an unused port by the tests.

The server can be killed and started again on the same port, to test what the gateways do while
Redis is gone. It keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.ports import unused_port
from tests.support.process import GatewayProcess, start_gateway


class RedisServer:
    """A redis-server child process on ``port``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self, replica_of: int | None = None) -> None:
        """Start (or start again) on :attr:`port`, empty; ``replica_of`` makes it a replica
        of the Redis on that loopback port."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed (tests/run.py installs it)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                *(["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # bounded: until it answers PING or 10 s pass
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(unused_port())
    server.start()
    yield server
    server.kill()


async def ready_status(gw: GatewayProcess) -> tuple[int, dict[str, Any]]:
    response = await AsyncHTTPClient().fetch(gw.base_url + "/readyz", raise_error=False)
    return response.code, json.loads(response.body)


async def wait_ready(gw: GatewayProcess, want: int = 200, timeout: float = 20.0) -> None:
    """Poll ``/readyz`` (bounded) until it answers ``want``."""
    deadline = time.monotonic() + timeout
    while (await ready_status(gw))[0] != want:
        assert time.monotonic() < deadline, "readyz never answered %d" % want
        await asyncio.sleep(0.05)


@pytest.fixture
def cluster(io_loop: Any, backend: Any, redis_server: RedisServer) -> Iterator[Any]:
    """A factory: ``await cluster(3)`` starts three gateways sharing ``redis_server``."""
    started: list[GatewayProcess] = []

    async def start(count: int, *args: str, **env: str) -> list[GatewayProcess]:
        gateways = []
        for _ in range(count):
            full_env = {
                "CALLBACK_URL": backend.url,
                "REDIS_URL": redis_server.url,
                "HEARTBEAT_INTERVAL_SECONDS": "1",
                **env,
            }
            gw = await start_gateway(full_env, *args)
            started.append(gw)
            gateways.append(gw)
        for gw in gateways:
            await wait_ready(gw)
        return gateways

    yield start

    async def stop_all() -> None:
        for gw in started:
            await gw.stop()

    io_loop.run_sync(stop_all)
