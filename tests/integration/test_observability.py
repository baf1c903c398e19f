"""Metrics move with traffic; logs are one line per stream event, parse as JSON, leak nothing."""

from __future__ import annotations

import json
import re

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.backend import Answer
from tests.support.helpers import sample
from tests.support.process import start_gateway
from tests.support.sse_client import open_stream


async def scrape(gw) -> str:
    response = await gw.get("/metrics", internal=True)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.body.decode()


@pytest.mark.gen_test(timeout=15)
async def test_metrics_move_as_streams_open_events_flow_and_callbacks_fail(gateway, backend):
    gw = gateway()
    before = await scrape(gw)
    assert sample(before, "tornado_sse_open_streams") == 0

    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    for i in range(3):
        await gw.send({"token": connect.token, "event": {"data": "x%d" % i}})
    await stream.wait_events(3)
    text = await scrape(gw)
    assert sample(text, "tornado_sse_open_streams") == 1
    assert sample(text, "tornado_sse_connects_total", outcome="accepted") == 1
    assert sample(text, "tornado_sse_frames_written_total", kind="event") == 3
    assert sample(text, "tornado_sse_bytes_written_total") == len(stream.raw)
    assert (
        sample(text, "tornado_sse_internal_requests_total", route="/internal/send", status="200")
        == 3
    )
    assert (
        sample(
            text,
            "tornado_sse_callback_duration_seconds_count",
            action="connect",
            outcome="accepted",
        )
        == 1
    )

    backend.connect_answer = Answer(status=500)
    refused = await gw.stream()
    assert refused.status == 500
    await gw.send({"token": "unknown", "event": {"data": "x"}})
    await stream.aclose()
    await backend.wait_for_calls("disconnect")
    await gw.gateway.backend.drain(5)
    text = await scrape(gw)
    assert sample(text, "tornado_sse_open_streams") == 0
    assert sample(text, "tornado_sse_connects_total", outcome="rejected") == 1
    assert sample(text, "tornado_sse_disconnects_total", reason="client_closed", detail="") == 1
    assert (
        sample(text, "tornado_sse_internal_requests_total", route="/internal/send", status="404")
        == 1
    )
    assert (
        sample(
            text, "tornado_sse_callback_duration_seconds_count", action="disconnect", outcome="ok"
        )
        == 1
    )
    assert sample(text, "tornado_sse_broker_up") == 1
    # Labels never carry tokens, paths or channel names.
    assert connect.token not in text and "/sse/" not in text


@pytest.mark.gen_test(timeout=15)
async def test_metrics_live_on_the_internal_port_only_when_it_is_set(gateway, backend):
    gw = gateway(internal_port=1)
    public = await gw.get("/metrics")
    assert public.code == 404
    internal = await gw.get("/metrics", internal=True)
    assert internal.code == 200 and b"tornado_sse_open_streams" in internal.body


@pytest.mark.gen_test(timeout=30)
async def test_json_logs_have_one_line_per_open_and_close_with_token_and_request_id(backend):
    gw = await start_gateway({"CALLBACK_URL": backend.url, "LOG_FORMAT": "json"})
    try:
        stream = await open_stream(
            gw.port,
            "/sse/private?api_key=hunter2",
            {"X-Request-ID": "req-123", "Authorization": "Bearer topsecret"},
        )
        assert stream.status == 200
        (connect,) = await backend.wait_for_calls("connect")
        assert connect.headers["x-request-id"] == "req-123"
        for i in range(5):
            response = await AsyncHTTPClient().fetch(
                gw.base_url + "/internal/send",
                method="POST",
                body=json.dumps({"token": connect.token, "event": {"data": str(i)}}),
                headers={"Content-Type": "application/json"},
            )
            assert response.code == 200
        await stream.wait_events(5)
        stream.close()
        await backend.wait_for_calls("disconnect")
    finally:
        await gw.stop()
    entries = [json.loads(line) for line in gw.log]
    mine = [e for e in entries if e.get("token") == connect.token]
    assert [e["msg"].split(" token=")[0] for e in mine] == ["stream opened", "stream closed"]
    assert all(e["request_id"] == "req-123" for e in mine)
    assert mine[1]["reason"] == "client_closed"
    assert float(mine[1]["duration"]) >= 0
    everything = "\n".join(gw.log)
    assert "hunter2" not in everything and "topsecret" not in everything
    assert all(set(e) >= {"ts", "level", "logger", "msg"} for e in entries)


@pytest.mark.gen_test(timeout=30)
async def test_text_logs_are_key_value_lines(backend):
    gw = await start_gateway({"CALLBACK_URL": backend.url})
    try:
        stream = await open_stream(gw.port, "/sse/x")
        assert stream.status == 200
        stream.close()
        (disconnect,) = await backend.wait_for_calls("disconnect")
    finally:
        await gw.stop()
    closed = [line for line in gw.log if "stream closed" in line]
    assert len(closed) == 1
    assert re.search(r"token=%s request_id=\w+ reason=client_closed" % disconnect.token, closed[0])
