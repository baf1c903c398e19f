"""tornado_sse_client with ``transport="ws"`` against a live gateway: what only the publish
socket does (pipelining, its own ends). Every other call and error of the clients runs over
the socket too, in test_client_live.py and test_client_users.py (kinds ``sync-ws`` and
``async-ws``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.helpers import open_with_token, read_metric
from tests.support.publish_socket import RawSocket
from tornado_sse_client import AsyncGateway, Gateway, GatewayClientError, GatewayUnavailable, aio

WS_KINDS = ["sync-ws", "async-ws"]


@pytest.fixture(params=["tornado", "stdlib"])
def async_link(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with the async client on Tornado's ``websocket_connect``, and on asyncio
    streams as when Tornado is not installed."""
    monkeypatch.setattr(aio, "HAVE_TORNADO", request.param == "tornado")
    return str(request.param)


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_async_sends_are_pipelined_on_one_socket_in_order(
    gateway, backend, async_link, clients
):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    api = clients.keep(AsyncGateway(gw.internal_url, transport="ws"))
    results = await asyncio.gather(*(api.send(token, str(i)) for i in range(1000)))
    assert results == ["ok"] * 1000
    events = await stream.wait_events(1000, timeout=10)
    assert [e.data for e in events] == [str(i) for i in range(1000)]
    assert gw.gateway.open_sockets == 1  # one socket carried them all
    assert await read_metric(gw.base_url, "tornado_sse_socket_messages_total", status="200") == (
        1000
    )


@pytest.mark.parametrize("kind", WS_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_a_send_over_max_body_bytes_raises_payload_too_large_and_the_next_works(
    gateway, backend, kind, clients
):
    gw = gateway(max_body_bytes=2000)
    stream, token = await open_with_token(gw, backend)
    api = clients(kind, gw.internal_url)
    with pytest.raises(GatewayClientError) as caught:
        await api.send(token, "x" * 3000)
    assert (caught.value.status, caught.value.code) == (413, "PAYLOAD_TOO_LARGE")
    assert await api.send(token, "small") == "ok"  # on a new socket
    assert [e.data for e in await stream.wait_events(1)] == ["small"]


@pytest.mark.gen_test(timeout=20)
async def test_a_socket_the_gateway_ended_raises_gateway_unavailable_then_reconnects(
    gateway, backend, async_link, clients
):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    api = clients.keep(AsyncGateway(gw.internal_url, transport="ws"))
    assert await api.send(token, "one") == "ok"
    for sock in list(gw.gateway._sockets):
        sock.shut_down()  # as a shutdown would (1001)
    with pytest.raises(GatewayUnavailable):
        for _ in range(100):  # bounded: the close reaches the client within a few sends
            await api.send(token, "maybe")
            await asyncio.sleep(0.01)
    assert await api.send(token, "two") == "ok"
    events = await stream.wait_events(2)
    assert events[0].data == "one" and events[-1].data == "two"


@pytest.mark.gen_test(timeout=20)
async def test_the_sync_client_answers_pings_and_sends_masked_frames(gateway, backend):
    """A real gateway refuses unmasked client frames (RFC 6455 5.1); this one accepts ours."""
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    client = Gateway(gw.internal_url, transport="ws")
    loop = asyncio.get_running_loop()
    try:
        for i in range(3):
            assert await loop.run_in_executor(None, client.send, token, str(i)) == "ok"
        for sock in list(gw.gateway._sockets):
            sock.ping(b"are you there")
        assert await loop.run_in_executor(None, client.send, token, "3") == "ok"
    finally:
        await loop.run_in_executor(None, client.close_idle)
    assert [e.data for e in await stream.wait_events(4)] == ["0", "1", "2", "3"]


@pytest.mark.gen_test(timeout=20)
async def test_the_raw_socket_sees_the_pong_of_a_ping(gateway) -> None:
    gw = gateway()
    sock = await RawSocket.open(gw.port)
    await sock.send_frame(0x9, b"hello")
    message: Any = await sock.receive()
    assert (message.opcode, message.payload) == (0xA, b"hello")
    sock.close()


def test_the_transport_must_be_http_or_ws():
    with pytest.raises(ValueError, match="transport"):
        Gateway("http://127.0.0.1:1", transport="websocket")
    with pytest.raises(ValueError, match="transport"):
        AsyncGateway("http://127.0.0.1:1", transport="udp")
