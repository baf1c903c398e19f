"""tornado_sse.client against a live gateway: every call and every typed error, for real.

Each test runs twice: with the blocking :class:`Gateway` (in an executor thread, as a WSGI
backend would call it, so the gateway's IOLoop keeps running) and with :class:`AsyncGateway`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.backend import Answer
from tests.support.clients import LIVE_KINDS
from tests.support.helpers import open_with_token
from tests.support.ports import unused_port
from tornado_sse.client import (
    BufferFull,
    GatewayUnavailable,
    InvalidRequest,
    TokenNotFound,
    Unauthorized,
    send_item,
)

# --- successful calls -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_send_writes_an_event_with_name_and_id(gateway, backend, kind, clients):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    api = clients(kind, gw.internal_url)
    assert await api.send(token, "line 1\nline 2", name="update", id="17") == "ok"
    (event,) = await stream.wait_events(1)
    assert (event.type, event.data, event.last_event_id) == ("update", "line 1\nline 2", "17")


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_publish_reaches_every_subscriber_of_the_channel(gateway, backend, kind, clients):
    backend.connect_answer = Answer(body=b'{"channels": ["room.7"]}')
    gw = gateway()
    first, _ = await open_with_token(gw, backend, "/sse/a")
    second, _ = await open_with_token(gw, backend, "/sse/b")
    api = clients(kind, gw.internal_url)
    assert await api.publish("room.7", "hello room", name="chat") is None
    assert await api.publish("nobody.listens", "lost") is None  # not an error
    for stream in (first, second):
        (event,) = await stream.wait_events(1)
        assert (event.type, event.data) == ("chat", "hello room")
        assert event.last_event_id.isdigit()  # the gateway's id for channel events


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_close_ends_the_stream_and_then_the_token_is_gone(gateway, backend, kind, clients):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    api = clients(kind, gw.internal_url)
    assert await api.send(token, "bye", close=True) == "ok"
    await stream.read_to_end()
    assert [e.data for e in stream.events] == ["bye"]
    (disconnect,) = await backend.wait_for_calls("disconnect", token=token)
    assert disconnect.body["reason"] == "server_closed"

    other, other_token = await open_with_token(gw, backend, "/sse/other")
    assert await api.close(other_token) is None
    await other.read_to_end()
    with pytest.raises(TokenNotFound):
        await api.close(other_token)


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_batch_answers_each_item_as_if_alone(gateway, backend, kind, clients):
    backend.connect_answer = Answer(body=b'{"channels": ["room"]}')
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    api = clients(kind, gw.internal_url)
    results = await api.batch(
        [
            send_item(token, data="a"),
            send_item("no-such-token", data="b"),
            send_item(channel="room", data="c"),
            send_item(channel="bad channel", data="d"),
        ]
    )
    assert [r.status for r in results] == [200, 404, 200, 400]
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[0].body == {"status": "ok"} and results[0].error is None
    assert isinstance(results[1].error, TokenNotFound)
    assert isinstance(results[3].error, InvalidRequest)
    assert results[3].error.code == "INVALID_CHANNEL"
    events = await stream.wait_events(2)
    assert [e.data for e in events] == ["a", "c"]
    assert await api.batch([]) == []


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_connections_lists_the_open_streams(gateway, backend, kind, clients):
    backend.connect_answer = Answer(body=b'{"channels": ["room"]}')
    gw = gateway()
    _, first = await open_with_token(gw, backend, "/sse/one?x=1")
    _, second = await open_with_token(gw, backend, "/sse/two")
    api = clients(kind, gw.internal_url)
    listing = await api.connections()
    assert listing["count"] == 2
    by_token = {c["token"]: c for c in listing["connections"]}
    assert set(by_token) == {first, second}
    assert by_token[first]["url"] == "/sse/one?x=1"
    assert by_token[first]["channels"] == ["room"]
    limited = await api.connections(limit=1)
    assert limited["count"] == 2 and len(limited["connections"]) == 1


# --- every typed error, for real ------------------------------------------------------------


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_history_lists_a_channels_kept_events_and_pages_with_since(
    gateway, backend, kind, clients
):
    backend.connect_answer = Answer(body=b'{"channels": ["room.9"]}')
    gw = gateway(history_size=3)
    watcher, _ = await open_with_token(gw, backend)
    api = clients(kind, gw.internal_url)
    for i in range(4):
        await api.publish("room.9", "e%d" % i, name="chat" if i % 2 else None)
    e0 = (await watcher.wait_events(4))[0].last_event_id
    whole = await api.history("room.9")
    assert [(e["event"], e["data"]) for e in whole["events"]] == [
        ("chat", "e1"),
        (None, "e2"),
        ("chat", "e3"),
    ]
    assert whole["complete"] is True
    first = whole["events"][0]["id"]
    page = await api.history("room.9", since=first, limit=1)
    assert [e["data"] for e in page["events"]] == ["e2"] and page["complete"] is True
    dropped = await api.history("room.9", since=str(int(e0) - 1))
    assert dropped["complete"] is False  # e0 was dropped


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_unknown_token_raises_token_not_found(gateway, kind, clients):
    gw = gateway()
    api = clients(kind, gw.internal_url)
    with pytest.raises(TokenNotFound) as caught:
        await api.send("6f1c0000-0000-4000-8000-000000000000", "hi")
    assert (caught.value.status, caught.value.code) == (404, "TOKEN_NOT_FOUND")
    assert caught.value.message


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_channel_with_a_space_raises_invalid_request(gateway, kind, clients):
    gw = gateway()
    api = clients(kind, gw.internal_url)
    with pytest.raises(InvalidRequest) as caught:
        await api.publish("room 7", "hi")
    assert (caught.value.status, caught.value.code) == (400, "INVALID_CHANNEL")
    with pytest.raises(InvalidRequest) as caught:
        await api.send("some-token", "hi", name="bad\nname")
    assert (caught.value.status, caught.value.code) == (400, "INVALID_EVENT_NAME_TYPE")


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_wrong_or_missing_secret_raises_unauthorized(gateway, backend, kind, clients):
    gw = gateway(internal_secret="s")
    stream, token = await open_with_token(gw, backend)
    for secret in ("wrong", None):
        api = clients(kind, gw.internal_url, secret=secret)
        with pytest.raises(Unauthorized) as caught:
            await api.send(token, "hi")
        assert (caught.value.status, caught.value.code) == (401, "UNAUTHORIZED")
        with pytest.raises(Unauthorized):
            await api.connections()
    # The right secret works, and nothing refused above was delivered.
    assert await clients(kind, gw.internal_url, secret="s").send(token, "allowed") == "ok"
    (event,) = await stream.wait_events(1)
    assert event.data == "allowed"


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_sends_beyond_the_pending_limit_raise_buffer_full(gateway, backend, kind, clients):
    gw = gateway(max_pending_events=1)
    api = clients(kind, gw.internal_url)
    outcomes: list[Any] = []

    async def greet_while_connecting(body: dict[str, Any]) -> None:
        # Inside the connect callback: the stream is not open yet, sends are queued.
        token = body["token"]
        outcomes.append(await api.send(token, "welcome"))
        try:
            await api.send(token, "one too many")
        except BufferFull as error:
            outcomes.append(error)

    backend.on_connect = greet_while_connecting
    stream = await gw.open()
    assert outcomes[0] == "buffered"
    assert isinstance(outcomes[1], BufferFull), outcomes
    assert (outcomes[1].status, outcomes[1].code) == (429, "BUFFER_FULL")
    (event,) = await stream.wait_events(1)
    assert event.data == "welcome"
    (connect,) = backend.of("connect")
    assert await api.send(connect.token, "live") == "ok"  # open now: no queue, no limit
    events = await stream.wait_events(2)
    assert [e.data for e in events] == ["welcome", "live"]


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_closed_port_raises_gateway_unavailable(kind, clients):
    api = clients(kind, "http://127.0.0.1:%d" % unused_port())
    with pytest.raises(GatewayUnavailable) as caught:
        await api.send("6f1c0000-0000-4000-8000-000000000000", "hi")
    assert caught.value.status is None and caught.value.code is None
    assert caught.value.message
    with pytest.raises(GatewayUnavailable):
        await api.connections()
