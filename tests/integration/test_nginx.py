"""conf/nginx.conf in a real nginx, in front of a real gateway process.

Each test renders a copy of ``conf/nginx.conf`` (the gateway's port as upstream, a free loopback
port to listen on, logs and temp files in ``tmp_path``), runs ``nginx -g 'daemon off; ...'`` as a
child process and ends it by its PID. The gateway is ``python -m tornado_sse`` (tests/support/
process.py) wired to the ``backend`` fixture.

nginx is a system package: when it is missing these tests fail (they never skip), naming the
package to install.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.backend import Answer, FakeBackend
from tests.support.internal import error_code, raw_request
from tests.support.ports import unused_port
from tests.support.process import (
    ChildProcess,
    GatewayProcess,
    start_gateway,
    start_process,
)
from tests.support.sse_client import SSEStream, open_stream

NGINX_CONF = Path(__file__).resolve().parents[2] / "conf" / "nginx.conf"

#: Loopback only, and quick to notice a hang.
START_TIMEOUT = 10.0


def nginx_binary() -> str:
    """The nginx executable; fails the test (not a skip) when nginx is not installed."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    if found is None:
        pytest.fail(
            "nginx is not installed: these tests run conf/nginx.conf in a real nginx. "
            "Install the Debian package 'nginx' (tests/run.py installs it when its "
            "SYSTEM_PACKAGES lists it).",
            pytrace=False,
        )
    return found


def render_conf(
    template: str, *, upstream_port: int, listen_port: int, scratch: Path, extra: str = ""
) -> str:
    """``template`` with the gateway and listen addresses, log and temp paths replaced.

    Every replaced text must occur in the template, so a change of conf/nginx.conf that this
    rendering no longer understands fails loudly instead of testing something else.
    ``extra`` is added to the end of ``location /`` (the stream location).
    """
    replacements = [
        ("server 127.0.0.1:3000;", "server 127.0.0.1:%d;" % upstream_port),
        ("listen 8080;", "listen 127.0.0.1:%d;" % listen_port),
        ("/var/log/nginx/", "%s/" % scratch),
        ("/var/lib/nginx/", "%s/" % scratch),
    ]
    if extra:
        replacements.append(
            ("proxy_pass http://tornado_sse;", "proxy_pass http://tornado_sse;\n" + extra)
        )
    text = template
    for old, new in replacements:
        assert old in text, "conf/nginx.conf no longer contains %r" % old
        text = text.replace(old, new)
    return text


async def start_nginx(binary: str, conf: Path, prefix: Path, port: int) -> ChildProcess:
    """Run nginx in the foreground with ``conf``; return once a worker has started."""
    directives = "daemon off; pid %s; error_log stderr notice;" % (prefix / "nginx.pid")
    return await start_process(
        [binary, "-p", str(prefix), "-c", str(conf), "-g", directives],
        port=port,
        ready=lambda line: "start worker process" in line,
        what="nginx",
        timeout=START_TIMEOUT,
    )


@dataclass
class Proxied:
    """A gateway process with nginx in front of it."""

    gateway: GatewayProcess
    nginx: ChildProcess
    streams: list[SSEStream] = field(default_factory=list)

    async def stream(
        self, path: str = "/sse/test", headers: dict[str, str] | None = None
    ) -> SSEStream:
        """Open a stream THROUGH nginx; closed at the end of the test."""
        try:
            stream = await open_stream(self.nginx.port, path, headers, timeout=5.0)
        except TimeoutError:
            # The gateway flushes the head at once; only a buffering proxy holds it back.
            raise AssertionError("no response head through nginx within 5 s") from None
        self.streams.append(stream)
        return stream


@contextlib.asynccontextmanager
async def proxied_gateway(
    backend: FakeBackend, tmp_path: Path, extra_conf: str = "", **env: str
) -> AsyncIterator[Proxied]:
    binary = nginx_binary()
    gateway = await start_gateway({"CALLBACK_URL": backend.url, **env})
    try:
        port = unused_port()
        conf = tmp_path / "nginx.conf"
        conf.write_text(
            render_conf(
                NGINX_CONF.read_text(),
                upstream_port=gateway.port,
                listen_port=port,
                scratch=tmp_path,
                extra=extra_conf,
            )
        )
        nginx = await start_nginx(binary, conf, tmp_path, port)
        proxied = Proxied(gateway, nginx)
        try:
            yield proxied
        finally:
            for stream in proxied.streams:
                await stream.aclose()
            await nginx.stop()
    finally:
        await gateway.stop()


# ------------------------------------------------------------------------------------------


def test_render_conf_replaces_every_deployment_specific_address(tmp_path):
    text = render_conf(
        NGINX_CONF.read_text(), upstream_port=4001, listen_port=4002, scratch=tmp_path
    )
    assert "server 127.0.0.1:4001;" in text
    assert "listen 127.0.0.1:4002;" in text
    assert "/var/" not in text


@pytest.mark.gen_test(timeout=60)
async def test_event_sent_after_open_arrives_through_nginx_at_once(backend, tmp_path):
    # proxy_ignore_headers makes nginx disregard the gateway's `X-Accel-Buffering: no`, so the
    # event can only arrive at once because of the conf's own `proxy_buffering off`.
    async with proxied_gateway(
        backend, tmp_path, extra_conf="proxy_ignore_headers X-Accel-Buffering;"
    ) as proxied:
        stream = await proxied.stream("/sse/room", {"Accept-Encoding": "gzip, deflate"})
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "content-encoding" not in stream.headers, stream.headers  # never compressed
        assert stream.headers.get("transfer-encoding") == "chunked", stream.headers
        (connect,) = await backend.wait_for_calls("connect")

        status, body = await proxied.gateway.send(
            {"token": connect.token, "event": {"name": "update", "data": "small", "id": "1"}}
        )
        assert (status, body) == (200, {"status": "ok"})
        # A few bytes only: a buffering proxy would sit on them until its buffer filled.
        (event,) = await stream.wait_events(1, timeout=2.0)
        assert (event.type, event.data, event.last_event_id) == ("update", "small", "1")


@pytest.mark.gen_test(timeout=60)
async def test_shipped_conf_streams_events_and_heartbeats(backend, tmp_path):
    async with proxied_gateway(backend, tmp_path, HEARTBEAT_INTERVAL_SECONDS="1") as proxied:
        stream = await proxied.stream("/sse/room")
        assert stream.status == 200
        (connect,) = await backend.wait_for_calls("connect")
        # Heartbeats are comments: nginx must pass them on as they come, or idle streams die
        # at the next proxy or load balancer.
        await stream.wait_until(lambda s: s.heartbeats >= 2, timeout=6.0)
        for data in ("one", "two"):
            status, _ = await proxied.gateway.send(
                {"token": connect.token, "event": {"data": data}}
            )
            assert status == 200
        events = await stream.wait_events(2, timeout=2.0)
        assert [e.data for e in events] == ["one", "two"]


@pytest.mark.gen_test(timeout=60)
async def test_request_id_and_client_address_reach_the_connect_callback(backend, tmp_path):
    async with proxied_gateway(backend, tmp_path) as proxied:
        stream = await proxied.stream("/sse/a?x=1", {"X-Request-ID": "req-through-nginx-1"})
        assert stream.status == 200
        assert stream.headers.get("x-request-id") == "req-through-nginx-1"
        (connect,) = await backend.wait_for_calls("connect")
        assert connect.headers.get("x-request-id") == "req-through-nginx-1"
        captured = connect.body["request"]
        assert captured["url"] == "/sse/a?x=1"
        assert captured["headers"]["x-request-id"] == "req-through-nginx-1"
        assert captured["headers"]["x-forwarded-for"] == "127.0.0.1"
        # The Host the client sent, port included ($http_host, not $host).
        assert captured["headers"]["host"] == "127.0.0.1:%d" % proxied.nginx.port

        # Without one, nginx makes one ($request_id), and the gateway passes that on.
        second = await proxied.stream("/sse/b")
        assert second.status == 200
        generated = second.headers.get("x-request-id", "")
        assert len(generated) == 32 and int(generated, 16) >= 0, second.headers
        await backend.wait_for_calls("connect", 2)
        assert backend.of("connect")[1].headers.get("x-request-id") == generated


@pytest.mark.gen_test(timeout=60)
async def test_internal_api_is_404_through_nginx_and_works_on_the_gateway_port(backend, tmp_path):
    async with proxied_gateway(backend, tmp_path) as proxied:
        stream = await proxied.stream("/sse/room")
        assert stream.status == 200
        (connect,) = await backend.wait_for_calls("connect")

        headers = {"Content-Type": "application/json"}
        for path in (
            "/internal/send",
            "/internal/send?x=1",
            "//internal/send",
            "/%69nternal/send",
            "/sse/../internal/send",
            "/internal/",
        ):
            attempt = json.dumps({"token": connect.token, "event": {"data": path}}).encode()
            response = await raw_request(
                proxied.nginx.port, "POST", path, headers=headers, body=attempt
            )
            assert error_code(response, 404) == "NOT_FOUND", path
        listing = await raw_request(proxied.nginx.port, "GET", "/internal/connections")
        assert error_code(listing, 404) == "NOT_FOUND"
        assert connect.token.encode() not in listing.body
        metrics = await raw_request(proxied.nginx.port, "GET", "/metrics")
        assert error_code(metrics, 404) == "NOT_FOUND"

        # The backend, talking to the gateway directly, is not affected.
        status, answer = await proxied.gateway.send(
            {"token": connect.token, "event": {"data": "direct"}}
        )
        assert (status, answer) == (200, {"status": "ok"})
        # The first event the stream gets is the direct one: none of the attempts above
        # reached the gateway.
        (event,) = await stream.wait_events(1, timeout=2.0)
        assert event.data == "direct"


@pytest.mark.gen_test(timeout=60)
async def test_internal_itself_and_internals_stream_through_nginx_with_the_root_prefix(
    backend, tmp_path
):
    async with proxied_gateway(backend, tmp_path, SSE_PATH_PREFIX="/") as proxied:
        for path in ("/internal?x=1", "/internals"):
            stream = await proxied.stream(path)
            assert stream.status == 200, (path, await stream.read_to_end())
        await backend.wait_for_calls("connect", count=2)
        assert [c.body["request"]["url"] for c in backend.of("connect")] == [
            "/internal?x=1",
            "/internals",
        ]
        refused = await raw_request(proxied.nginx.port, "GET", "/internal/connections")
        assert error_code(refused, 404) == "NOT_FOUND"


@pytest.mark.gen_test(timeout=60)
async def test_health_endpoints_and_refusals_pass_through_nginx(backend, tmp_path):
    backend.connect_answer = Answer(status=403)
    async with proxied_gateway(backend, tmp_path) as proxied:
        health = await raw_request(proxied.nginx.port, "GET", "/healthz")
        assert (health.code, health.json()) == (200, {"status": "ok"})
        ready = await raw_request(proxied.nginx.port, "GET", "/readyz")
        assert ready.code == 200 and ready.json()["status"] == "ready"
        refused = await proxied.stream("/sse/room")
        assert refused.status == 403
        body = json.loads(await refused.read_to_end())
        assert body["error"]["code"] == "BACKEND_FORBIDDEN"


@pytest.mark.gen_test(timeout=60)
async def test_client_leaving_nginx_is_a_client_closed_disconnect(backend, tmp_path):
    async with proxied_gateway(backend, tmp_path) as proxied:
        stream = await proxied.stream("/sse/room")
        assert stream.status == 200
        (connect,) = await backend.wait_for_calls("connect")
        await stream.aclose()
        (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
        assert disconnect.body["reason"] == "client_closed"
