"""tornado_sse.client's user, presence, subscription and history calls against a live gateway.

Each test runs twice: with the blocking :class:`Gateway` (in an executor thread) and with
:class:`AsyncGateway`.
"""

from __future__ import annotations

import json

import pytest

from tests.support.backend import Answer
from tests.support.clients import LIVE_KINDS
from tests.support.helpers import open_with_token
from tornado_sse.client import InvalidRequest, TokenNotFound, send_item, subscription_body

ANN = Answer(body=json.dumps({"user": "ann", "info": {"n": 1}, "channels": ["room"]}).encode())


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_send_to_user_and_close_user_reach_every_stream_of_the_user(
    gateway, backend, kind, clients
):
    backend.connect_answer = ANN
    gw = gateway()
    tabs = [await gw.open("/sse/1"), await gw.open("/sse/2")]
    api = clients(kind, gw.internal_url)
    assert await api.send_to_user("ann", "hi", name="greet") == 2
    for tab in tabs:
        assert [(e.type, e.data) for e in await tab.wait_events(1)] == [("greet", "hi")]
    assert await api.close_user("ann") == 2
    await backend.wait_for_calls("disconnect", count=2)
    assert await api.send_to_user("ann", "again") == 0


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_presence_connections_and_history_of_a_channel(gateway, backend, kind, clients):
    backend.connect_answer = ANN
    gw = gateway()
    await gw.open("/sse/1")
    api = clients(kind, gw.internal_url)
    assert await api.presence("room") == {
        "channel": "room",
        "users": [{"user": "ann", "info": {"n": 1}, "streams": 1}],
        "anonymous": 0,
    }
    listed = await api.connections(user="ann")
    assert listed["count"] == 1 and listed["connections"][0]["user"] == "ann"
    await api.publish("room", "one")
    history = await api.history("room")
    assert [e["data"] for e in history["events"]] == ["one"] and history["complete"]
    since = history["events"][0]["id"]
    assert (await api.history("room", since=since))["events"] == []


@pytest.mark.parametrize("kind", LIVE_KINDS)
@pytest.mark.gen_test(timeout=20)
async def test_subscribe_and_unsubscribe_a_token_or_a_user(gateway, backend, kind, clients):
    backend.connect_answer = ANN
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    api = clients(kind, gw.internal_url)
    assert await api.subscribe(["news"], token=token) == 1
    await api.publish("news", "one")
    assert [e.data for e in await stream.wait_events(1)] == ["one"]
    assert await api.unsubscribe(["news"], user="ann") == 1
    await api.publish("news", "two")
    await api.publish("room", "marker")
    assert [e.data for e in await stream.wait_events(2)] == ["one", "marker"]
    with pytest.raises(TokenNotFound):
        await api.subscribe(["news"], token="nope")
    with pytest.raises(InvalidRequest) as raised:
        await api.subscribe(["has space"], user="ann")
    assert raised.value.code == "INVALID_CHANNEL"


def test_request_bodies_name_exactly_one_target():
    assert send_item(user="ann", data="x", close=True) == {
        "user": "ann",
        "event": {"data": "x"},
        "close": True,
    }
    assert subscription_body(["a"], user="ann") == {"user": "ann", "channels": ["a"]}
    with pytest.raises(ValueError):
        send_item("t", user="ann", data="x")
    with pytest.raises(ValueError):
        subscription_body(["a"])
