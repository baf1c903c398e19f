"""A real ``redis-server`` for the cluster tests, started on an unused port by the tests.

The server can be killed and started again on the same port, to test what the gateways do while
Redis is gone. It keeps nothing on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.ports import unused_port, unused_ports
from tests.support.process import GatewayProcess, start_gateway


class RedisServer:
    """A redis-server child process on ``port``; with ``cluster_dir``, a Redis Cluster node
    (its cluster bus on ``bus_port``, its node file in that directory)."""

    def __init__(
        self, port: int, cluster_dir: str | None = None, bus_port: int | None = None
    ) -> None:
        self.port = port
        self.cluster_dir = cluster_dir
        self.bus_port = bus_port
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
                *(self._cluster_options() if self.cluster_dir else []),
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

    def _cluster_options(self) -> list[str]:
        assert self.cluster_dir is not None and self.bus_port is not None
        return [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            os.path.join(self.cluster_dir, "nodes-%d.conf" % self.port),
            "--cluster-port",
            str(self.bus_port),
            "--cluster-node-timeout",
            "2000",
        ]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        """Stop the server answering (SIGSTOP) without closing its connections."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class RedisClusterNodes:
    """Three Redis Cluster primaries on loopback (no replicas), made one cluster with
    ``redis-cli --cluster create``."""

    def __init__(self, directory: str) -> None:
        first = unused_ports(6)
        self.nodes = [
            RedisServer(first + i, cluster_dir=directory, bus_port=first + 3 + i) for i in range(3)
        ]

    @property
    def url(self) -> str:
        """``REDIS_URL`` of the gateways: two of the three nodes to start from."""
        return ",".join(node.url.rsplit("/", 1)[0] for node in self.nodes[:2])

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is needed (tests/run.py installs redis-tools)"
        addresses = ["127.0.0.1:%d" % node.port for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        for node in self.nodes:  # bounded: until every node says the cluster is ok
            while b"cluster_state:ok" not in self.info(node):
                assert time.monotonic() < deadline, "the Redis Cluster did not form"
                time.sleep(0.05)

    @staticmethod
    def info(node: RedisServer) -> bytes:
        cli = shutil.which("redis-cli")
        assert cli
        return subprocess.run(
            [cli, "-p", str(node.port), "cluster", "info"], capture_output=True, timeout=10
        ).stdout

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture
def redis_cluster_nodes(tmp_path: Any) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(str(tmp_path))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.kill()


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
