"""Fixtures shared by the integration tests: a fake backend and gateways on loopback ports.

``gateway(**settings)`` starts a fresh gateway (``make_app`` + a real ``HTTPServer`` on an
unused port) wired to the ``backend`` fixture, and returns a :class:`RunningGateway` with helpers
to open streams and call the internal API. Everything is torn down after each test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from tests.support.backend import FakeBackend
from tests.support.clients import Clients
from tests.support.process import SOURCE_ROOTS
from tests.support.sse_client import SSEStream, open_stream
from tornado_sse.app import App, make_app
from tornado_sse.config import Settings
from tornado_sse.server import http_server

# Every process a test starts (a gateway, the Flask example, a check) runs this checkout's code,
# as this one does (pyproject.toml: pythonpath), whatever is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [*SOURCE_ROOTS, *filter(None, [os.environ.get("PYTHONPATH")])]
)

#: Settings every test gateway starts from: quick timeouts, no heartbeat noise.
TEST_DEFAULTS: dict[str, Any] = {
    "address": "127.0.0.1",
    "heartbeat_interval_seconds": 60.0,
    "callback_timeout_seconds": 2.0,
}


@dataclass
class RunningGateway:
    """A gateway under test, listening on ``port`` of 127.0.0.1."""

    app: App
    settings: Settings
    port: int
    servers: list[HTTPServer]
    internal_port: int | None = None
    streams: list[SSEStream] = field(default_factory=list)

    @property
    def gateway(self) -> Any:
        return self.app.gateway

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def internal_url(self) -> str:
        return "http://127.0.0.1:%d" % (self.internal_port or self.port)

    async def stream(
        self,
        path: str = "/sse/test",
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> SSEStream:
        """Open a stream (any status); it is closed at teardown."""
        stream = await open_stream(self.port, path, headers, **kwargs)
        self.streams.append(stream)
        return stream

    async def open(self, path: str = "/sse/test", **kwargs: Any) -> SSEStream:
        """Open a stream that must be accepted (200)."""
        stream = await self.stream(path, **kwargs)
        assert stream.status == 200, (stream.status, await stream.read_to_end())
        return stream

    async def post(
        self,
        body: Any,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        path: str = "/internal/send",
    ) -> HTTPResponse:
        """POST to the internal API; ``body`` as JSON unless ``raw`` is given."""
        data = raw if raw is not None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        return await AsyncHTTPClient().fetch(
            self.internal_url + path,
            method="POST",
            body=data,
            headers=all_headers,
            raise_error=False,
        )

    async def send(self, body: Any, **kwargs: Any) -> tuple[int, Any]:
        """POST ``body`` to ``/internal/send``: (status, decoded JSON answer)."""
        response = await self.post(body, **kwargs)
        return response.code, json.loads(response.body)

    async def get(
        self, path: str, headers: dict[str, str] | None = None, internal: bool = False
    ) -> HTTPResponse:
        base = self.internal_url if internal else self.base_url
        return await AsyncHTTPClient().fetch(base + path, headers=headers, raise_error=False)

    async def stop(self) -> None:
        """Close the test's streams, stop listening, let disconnect callbacks finish."""
        for stream in self.streams:
            await stream.aclose()
        for server in self.servers:
            server.stop()
        self.gateway.stop()
        await self.gateway.broker.close()
        backend = self.gateway.backend
        if backend is not None:
            await backend.drain(2.0)
            backend.close()


def _listen(app: Any, settings: Settings) -> tuple[HTTPServer, int]:
    sock, port = bind_unused_port()
    server = http_server(app, settings)
    server.add_sockets([sock])
    return server, port


@pytest.fixture
def backend(io_loop: Any) -> Iterator[FakeBackend]:
    """A fake backend on an unused loopback port."""
    fake = FakeBackend()
    yield fake
    fake.close()


@pytest.fixture
def gateway(io_loop: Any, backend: FakeBackend) -> Iterator[Callable[..., RunningGateway]]:
    """A factory of gateways wired to ``backend``: ``gateway(max_pending_events=2)``."""
    running: list[RunningGateway] = []

    def start(**overrides: Any) -> RunningGateway:
        # internal_port=True splits the internal API onto a second unused port.
        settings = Settings(**{**TEST_DEFAULTS, "callback_url": backend.url, **overrides})
        app = make_app(settings)
        server, port = _listen(app, settings)
        servers = [server]
        internal_port = None
        if app.internal_app is not None:
            internal_server, internal_port = _listen(app.internal_app, settings)
            servers.append(internal_server)
        app.gateway.start()
        gw = RunningGateway(app, settings, port, servers, internal_port)
        running.append(gw)
        return gw

    yield start

    async def stop_all() -> None:
        for gw in running:
            await gw.stop()

    io_loop.run_sync(stop_all)


@pytest.fixture
def clients(io_loop: Any) -> Iterator[Clients]:
    """A factory of internal API clients, ``clients("sync" | "async", url, secret=None)``, whose
    kept-alive connections are closed at the end of the test."""
    made = Clients()
    yield made
    io_loop.run_sync(made.close)
