"""Signed callbacks, header limits, retry streams for transient failures, exposure warning."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.backend import Answer
from tests.support.process import start_gateway
from tornado_sse import signing


@pytest.mark.gen_test(timeout=10)
async def test_callbacks_are_signed_and_verify_with_the_shipped_function(gateway, backend):
    gw = gateway(callback_secret="cb-secret")
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    await stream.aclose()
    (disconnect,) = await backend.wait_for_calls("disconnect")
    for call in (connect, disconnect):
        header = call.headers["x-sse-signature"]
        assert signing.verify(call.raw, header, "cb-secret")
        assert not signing.verify(call.raw, header, "other-secret")
        assert not signing.verify(call.raw + b" ", header, "cb-secret")
        timestamp = int(header.split(",")[0].removeprefix("t="))
        assert abs(timestamp - time.time()) < 60


@pytest.mark.gen_test(timeout=10)
async def test_several_callback_secrets_sign_with_each_so_either_verifies(gateway, backend):
    # A rotation: the backend may hold the new secret or still the old one.
    gw = gateway(callback_secret="new-secret, old-secret")
    await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    header = connect.headers["x-sse-signature"]
    assert [entry.split("=")[0] for entry in header.split(",")] == ["t", "v1", "v1"]
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert header == signing.sign(connect.raw, ["new-secret", "old-secret"], timestamp)
    for secret in ("new-secret", "old-secret", ["old-secret", "unrelated"]):
        assert signing.verify(connect.raw, header, secret), secret
    assert not signing.verify(connect.raw, header, "new-secret, old-secret")
    assert not signing.verify(connect.raw, header, "retired-secret")


@pytest.mark.gen_test(timeout=10)
async def test_callbacks_are_unsigned_without_a_secret(gateway, backend):
    gw = gateway()
    await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    assert "x-sse-signature" not in connect.headers


@pytest.mark.gen_test(timeout=10)
async def test_request_head_over_the_limit_is_431_json(gateway, backend):
    gw = gateway(max_header_bytes=4096)
    stream = await gw.stream("/sse/big", {"X-Big": "a" * 5000})
    assert stream.status == 431
    assert stream.headers["content-type"] == "application/json"
    assert json.loads(await stream.read_to_end())["error"]["code"] == (
        "REQUEST_HEADER_FIELDS_TOO_LARGE"
    )
    assert backend.calls == []
    ok = await gw.stream("/sse/small", {"X-Small": "a" * 1000})
    assert ok.status == 200


@pytest.mark.gen_test(timeout=10)
async def test_retry_on_unavailable_turns_a_timeout_into_a_retry_stream(gateway, backend):
    backend.connect_answer = Answer(delay=1.0)
    gw = gateway(retry_on_unavailable=True, callback_timeout_seconds=0.1)
    stream = await gw.stream()
    assert stream.status == 200
    assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    body = await stream.read_to_end()
    assert stream.events == []
    assert 1000 <= stream.parser.retry <= 5000, body
    assert b": 504 GATEWAY_TIMEOUT\n\n" in body


@pytest.mark.gen_test(timeout=10)
async def test_retry_on_unavailable_leaves_backend_refusals_alone(gateway, backend):
    backend.connect_answer = Answer(status=403)
    gw = gateway(retry_on_unavailable=True)
    stream = await gw.stream()
    assert stream.status == 403


@pytest.mark.gen_test(timeout=10)
async def test_without_retry_on_unavailable_a_timeout_is_504(gateway, backend):
    backend.connect_answer = Answer(delay=1.0)
    gw = gateway(callback_timeout_seconds=0.1)
    stream = await gw.stream()
    assert stream.status == 504


@pytest.mark.gen_test(timeout=30)
async def test_startup_warns_when_internal_api_is_public_without_secret(backend):
    exposed = await start_gateway({"CALLBACK_URL": backend.url})
    await exposed.stop()
    assert any("INTERNAL_SECRET" in line and "WARNING" in line for line in exposed.log)
    protected = await start_gateway({"CALLBACK_URL": backend.url, "INTERNAL_SECRET": "s"})
    await protected.stop()
    assert not any("WARNING" in line and "INTERNAL_SECRET" in line for line in protected.log)


@pytest.mark.gen_test(timeout=10)
async def test_retry_on_unavailable_answers_new_streams_with_retry_while_draining(gateway, backend):
    gw = gateway(retry_on_unavailable=True)
    gw.gateway.draining = True
    stream = await gw.stream()
    assert stream.status == 200
    body = await stream.read_to_end()
    assert b": 503 SHUTTING_DOWN\n\n" in body
    assert 1000 <= stream.parser.retry <= 5000
    assert backend.calls == []


@pytest.mark.gen_test(timeout=10)
async def test_431_on_the_stream_endpoint_carries_cors_but_not_on_the_internal_api(
    gateway, backend
):
    gw = gateway(max_header_bytes=2048)
    big = {"X-Big": "a" * 3000}
    stream = await gw.stream("/sse/x", big)
    assert stream.status == 431
    assert stream.headers["access-control-allow-origin"] == "*"
    internal = await gw.post({"token": "t"}, headers=big)
    assert internal.code == 431
    assert "Access-Control-Allow-Origin" not in internal.headers


@pytest.mark.gen_test(timeout=10)
async def test_http10_client_gets_an_unchunked_stream(gateway, backend):
    gw = gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(b"GET /sse/old HTTP/1.0\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding" not in head.lower()
        (connect,) = await backend.wait_for_calls("connect")
        await gw.send({"token": connect.token, "event": {"data": "plain"}})
        await gw.send({"token": connect.token, "event": {"data": "bye"}, "close": True})
        body = await asyncio.wait_for(reader.read(), 5)  # the server closes at the end
        assert body == b"data: plain\n\ndata: bye\n\n"
    finally:
        writer.close()
