"""The gateway as its own process: graceful shutdown on SIGTERM, bounded memory, bad settings."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.backend import Answer
from tests.support.helpers import open_count, silent_client, wait_for_open_count
from tests.support.process import rss_bytes, run_command, start_gateway
from tests.support.sse_client import open_stream


@pytest.mark.gen_test(timeout=90)
async def test_sigterm_with_500_streams_sends_every_disconnect_and_exits_0_in_time(backend):
    backend.disconnect_answer = Answer(delay=0.3)  # keeps the drain open long enough to probe
    gw = await start_gateway(
        {"CALLBACK_URL": backend.url, "SHUTDOWN_TIMEOUT_SECONDS": "10", "MAX_CONNECTIONS": "1000"}
    )
    streams = []
    try:
        for start in range(0, 500, 100):
            streams += await asyncio.gather(
                *(open_stream(gw.port, "/sse/s%d" % i) for i in range(start, start + 100))
            )
        assert all(s.status == 200 for s in streams)
        tokens = {c.token for c in backend.of("connect")}
        assert len(tokens) == 500

        started = time.monotonic()
        gw.signal(signal.SIGTERM)
        await backend.wait_for_calls("disconnect", 1)
        # Draining: new streams and readiness are refused while the process finishes.
        late = await open_stream(gw.port, "/sse/late")
        assert late.status == 503
        ready = await AsyncHTTPClient().fetch(gw.base_url + "/readyz", raise_error=False)
        assert ready.code == 503
        assert "shutting down" in json.loads(ready.body)["reasons"][0]
        late.close()

        status = await gw.wait(timeout=15)
        elapsed = time.monotonic() - started
        assert status == 0
        assert elapsed < 10
        disconnects = backend.of("disconnect")
        assert sorted(c.token for c in disconnects) == sorted(tokens)
        assert {(c.body["reason"], c.body.get("detail")) for c in disconnects} == {
            ("server_closed", "shutdown")
        }
        for stream in streams:
            body = await stream.read_to_end(timeout=5)
            assert stream.parser.retry is not None and 1000 <= stream.parser.retry <= 5000, body
    finally:
        for stream in streams:
            stream.close()
        await gw.stop()


@pytest.mark.gen_test(timeout=120)
async def test_200_clients_that_never_read_are_closed_and_memory_stays_bounded(backend):
    backend.connect_answer = Answer(body=b'{"channels": ["firehose"]}')
    gw = await start_gateway(
        {"CALLBACK_URL": backend.url, "MAX_QUEUED_BYTES": str(128 * 1024), "HISTORY_SIZE": "0"}
    )
    clients = []
    try:
        clients = [await silent_client(gw.port, "/sse/slow%d" % i) for i in range(200)]
        await backend.wait_for_calls("connect", 200, timeout=20)

        await wait_for_open_count(gw.base_url, 200)
        baseline = rss_bytes(gw.pid)

        event = {"channel": "firehose", "event": {"data": "x" * (64 * 1024)}}
        peak = baseline
        for _ in range(160):  # 10 MiB published to each of the 200 clients
            response = await AsyncHTTPClient().fetch(
                gw.base_url + "/internal/send",
                method="POST",
                body=json.dumps(event),
                headers={"Content-Type": "application/json"},
            )
            assert response.code == 200
            peak = max(peak, rss_bytes(gw.pid))

        disconnects = await backend.wait_for_calls("disconnect", 200, timeout=20)
        assert {(c.body["reason"], c.body.get("detail")) for c in disconnects} == {
            ("error", "slow_consumer")
        }
        assert await open_count(gw.base_url) == 0
        # Unbounded buffering would hold 200 x 10 MiB = 2 GiB. The bound: each stream holds at
        # most MAX_QUEUED_BYTES plus one frame before it is closed: 200 x 192 KiB = 38 MiB.
        assert peak - baseline < 80 * 1024 * 1024, (baseline, peak)
    finally:
        for sock in clients:
            sock.close()
        await gw.stop()


@pytest.mark.parametrize(
    "args, env, name",
    [
        (["--port", "abc"], {}, "PORT"),
        ([], {"HEARTBEAT_INTERVAL_SECONDS": "0"}, "HEARTBEAT_INTERVAL_SECONDS"),
        ([], {"CALLBACK_URL": "ftp://backend"}, "CALLBACK_URL"),
        (["--processes", "2"], {}, "REDIS_URL"),
    ],
)
def test_bad_setting_stops_startup_with_one_line_and_status_2(args, env, name):
    result = run_command(args, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr
