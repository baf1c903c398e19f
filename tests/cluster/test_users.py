"""Users, presence and live subscriptions (PROTOCOL 3.1, 4.1, 4.3, 7 and 8).

Each behaviour of one gateway runs against the in-process broker and against a gateway on a
real redis-server; the cluster-wide ones run on three gateways in this process, each its own
instance, sharing one redis-server. The fake backend answers each connect from its path:
``/sse/<user or ->/<channel+channel>/<tab>`` names the user (``-``: anonymous), their info
``{"name": <user>}`` and the channels.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from tornado.httpclient import AsyncHTTPClient

from tests.support.backend import Answer
from tests.support.helpers import open_and_close_another

BROKERS = ["local", "redis"]


def by_path(body: dict[str, Any]) -> Answer:
    """The connect answer for ``/sse/<user>/<channels>/<tab>``."""
    _, _, user, channels, *_ = body["request"]["url"].split("?")[0].split("/")
    answer: dict[str, Any] = {"channels": [c for c in channels.split("+") if c]}
    if user != "-":
        answer["user"] = user
        answer["info"] = {"name": user.title()}
    return Answer(body=json.dumps(answer).encode())


@pytest.fixture(params=BROKERS)
def instances(request: Any, gateway: Any, backend: Any) -> Any:
    """A factory: ``instances(n, **settings)`` starts n gateways that form one gateway (n must
    be 1 for the in-process broker)."""
    backend.answer_for = by_path

    def start(count: int = 1, **settings: Any) -> list[Any]:
        if request.param == "local":
            assert count == 1, "the in-process broker is a single instance"
            return [gateway(**settings)]
        server = request.getfixturevalue("redis_server")
        return [gateway(redis_url=server.url, **settings) for _ in range(count)]

    return start


@pytest.fixture
def redis_cluster(redis_server: Any, gateway: Any, backend: Any) -> Any:
    """A factory: ``redis_cluster(3, **settings)`` starts three gateways over one Redis."""
    backend.answer_for = by_path

    def start(count: int, **settings: Any) -> list[Any]:
        return [gateway(redis_url=redis_server.url, **settings) for _ in range(count)]

    return start


async def ready(*gateways: Any) -> None:
    """Until every gateway's broker link is up (bounded)."""
    for _ in range(500):
        if all(gw.gateway.broker.ready for gw in gateways):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the broker link did not come up")


async def presence(gw: Any, channel: str) -> dict[str, Any]:
    response = await gw.get("/internal/presence?channel=" + channel, internal=True)
    assert response.code == 200, response.body
    return json.loads(response.body)


async def post(gw: Any, path: str, body: Any) -> tuple[int, Any]:
    response = await gw.post(body, path=path)
    return response.code, json.loads(response.body)


async def publish(gw: Any, channel: str, data: str) -> None:
    assert await gw.send({"channel": channel, "event": {"data": data}}) == (200, {"status": "ok"})


def presence_events(events: list[Any]) -> list[tuple[str, Any]]:
    return [(e.type, json.loads(e.data)) for e in events if e.type.startswith("presence_")]


JOIN_ANN = ("presence_join", {"user": "ann", "info": {"name": "Ann"}})
LEAVE_ANN = ("presence_leave", {"user": "ann", "info": {"name": "Ann"}})
JOIN_BOB = ("presence_join", {"user": "bob", "info": {"name": "Bob"}})
LEAVE_BOB = ("presence_leave", {"user": "bob", "info": {"name": "Bob"}})


async def bob_comes_and_goes(gw: Any, backend: Any, disconnects: int) -> None:
    """Open and close a stream of bob's on room.1 of ``gw``, until the backend has heard
    ``disconnects`` disconnects in all. His leave, due after the delay, then proves that no
    leave due before it (on that instance) was announced: it would have come first."""
    bob = await gw.open("/sse/bob/room.1/1")
    await bob.aclose()
    await backend.wait_for_calls("disconnect", count=disconnects)


# -- one gateway, either broker ----------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_presence_lists_users_with_their_stream_counts_info_and_the_anonymous(instances):
    (gw,) = instances()
    await ready(gw)
    await gw.open("/sse/ann/room/1")
    await gw.open("/sse/ann/room+other/2")
    await gw.open("/sse/bob/room/1")
    await gw.open("/sse/-/room/1")
    await gw.open("/sse/-/room/2")
    body = await presence(gw, "room")
    assert body == {
        "channel": "room",
        "users": [
            {"user": "ann", "info": {"name": "Ann"}, "streams": 2},
            {"user": "bob", "info": {"name": "Bob"}, "streams": 1},
        ],
        "anonymous": 2,
    }
    assert (await presence(gw, "nobody")) == {"channel": "nobody", "users": [], "anonymous": 0}
    response = await gw.get("/internal/presence?channel=has%20space", internal=True)
    assert response.code == 400 and json.loads(response.body)["error"]["code"] == "INVALID_CHANNEL"


@pytest.mark.gen_test(timeout=30)
async def test_a_stream_leaves_presence_when_it_ends(instances, backend):
    (gw,) = instances()
    await ready(gw)
    stream = await gw.open("/sse/ann/room/1")
    await gw.open("/sse/-/room/1")
    await stream.aclose()
    await backend.wait_for_calls("disconnect")
    for _ in range(200):  # the count goes out in the background, right after the end
        body = await presence(gw, "room")
        if not body["users"]:
            break
        await asyncio.sleep(0.02)
    assert body == {"channel": "room", "users": [], "anonymous": 1}


@pytest.mark.gen_test(timeout=30)
async def test_connections_show_the_user_and_info_and_filter_by_user(instances):
    (gw,) = instances()
    await ready(gw)
    await gw.open("/sse/ann/room/1")
    await gw.open("/sse/ann/room/2")
    await gw.open("/sse/-/room/1")
    response = await gw.get("/internal/connections?user=ann", internal=True)
    body = json.loads(response.body)
    assert body["count"] == 2
    assert [(c["user"], c["info"]) for c in body["connections"]] == [("ann", {"name": "Ann"})] * 2
    everyone = json.loads((await gw.get("/internal/connections", internal=True)).body)
    assert sorted(str(c["user"]) for c in everyone["connections"]) == ["None", "ann", "ann"]
    assert [c["info"] for c in everyone["connections"] if c["user"] is None] == [None]


@pytest.mark.gen_test(timeout=30)
async def test_a_bad_user_or_info_in_the_connect_answer_is_a_502_and_a_disconnect(
    instances, backend
):
    (gw,) = instances()
    await ready(gw)
    for answer in [{"user": ""}, {"user": 42}, {"info": "x"}, {"info": {"a": "x" * 1100}}]:
        backend.answer_for = lambda body, answer=answer: Answer(body=json.dumps(answer).encode())
        stream = await gw.stream("/sse/bad")
        await stream.read_to_end()
        assert stream.status == 502 and stream.json()["error"]["code"] == "BAD_CALLBACK_RESPONSE"
    disconnects = await backend.wait_for_calls("disconnect", count=4)
    assert {(d.body["reason"], d.body["detail"]) for d in disconnects} == {
        ("error", "bad_callback_response")
    }


@pytest.mark.gen_test(timeout=30)
async def test_a_user_send_to_nobody_reaches_no_stream(instances):
    (gw,) = instances()
    await ready(gw)
    event = {"data": "x"}
    assert await gw.send({"user": "nobody", "event": event}) == (
        200,
        {"status": "ok", "streams": 0},
    )
    status, body = await gw.send({"user": "ann", "token": "t"})
    assert (status, body["error"]["code"]) == (400, "INVALID_TOKEN_MISSING")


@pytest.mark.gen_test(timeout=30)
async def test_a_user_send_during_the_connect_callback_reaches_the_stream_it_opens(
    instances, backend
):
    (gw,) = instances()
    await ready(gw)
    sent: list[Any] = []

    async def send_while_connecting(body: dict[str, Any]) -> None:
        if body["request"]["url"].endswith("/2"):  # ann's second tab is connecting now
            sent.append(await gw.send({"user": "ann", "event": {"data": "hi"}}))
            sent.append(await gw.send({"user": "bob", "event": {"data": "not ann's"}}))

    first = await gw.open("/sse/ann/room/1")
    assert await gw.send({"user": "ann", "event": {"data": "before"}}) == (
        200,
        {"status": "ok", "streams": 1},
    )
    # The log's window starts where the connect began, to within about a millisecond and the
    # broker's round trip: the second tab begins connecting clearly after "before".
    await asyncio.sleep(0.05)
    backend.on_connect = send_while_connecting
    second = await gw.open("/sse/ann/room/2")
    backend.on_connect = None
    # Only the first tab was known to be ann's when "hi" was sent: the count says 1. The
    # second gets it once its answer named ann, before anything sent later.
    assert sent == [(200, {"status": "ok", "streams": 1}), (200, {"status": "ok", "streams": 0})]
    assert await gw.send({"user": "ann", "event": {"data": "both"}}) == (
        200,
        {"status": "ok", "streams": 2},
    )
    assert [e.data for e in await first.wait_events(3)] == ["before", "hi", "both"]
    assert [e.data for e in await second.wait_events(2)] == ["hi", "both"]


@pytest.mark.gen_test(timeout=30)
async def test_user_and_token_sends_during_the_connect_callback_come_in_the_order_made(
    instances, backend, request
):
    (gw,) = instances()
    await ready(gw)
    # In one process the order is exact; with Redis a user send's time is Redis's, brought to
    # the gateway's clock to within the round trip of the call that counts the stream.
    gap = 0.0 if request.node.callspec.params["instances"] == "local" else 0.05
    answers: list[Any] = []

    async def send_while_connecting(body: dict[str, Any]) -> None:
        token = body["token"]
        for send in ({"token": token}, {"user": "ann"}, {"token": token}, {"user": "ann"}):
            target = "user" if "user" in send else "token"
            event = {"data": "%s %d" % (target, len(answers))}
            answers.append(await gw.send({**send, "event": event}))
            await asyncio.sleep(gap)

    backend.on_connect = send_while_connecting
    stream = await gw.open("/sse/ann/room/1")
    backend.on_connect = None
    assert [status for status, _ in answers] == [200] * 4
    expected = ["token 0", "user 1", "token 2", "user 3"]
    assert [e.data for e in await stream.wait_events(4)] == expected


@pytest.mark.gen_test(timeout=30)
async def test_a_user_close_during_the_connect_callback_ends_the_stream_once_it_opens(
    instances, backend
):
    (gw,) = instances()
    await ready(gw)
    sent: list[Any] = []
    tokens: list[str] = []

    async def close_while_connecting(body: dict[str, Any]) -> None:
        tokens.append(body["token"])
        sent.append(await gw.send({"user": "ann", "event": {"data": "bye"}, "close": True}))

    backend.on_connect = close_while_connecting
    stream = await gw.open("/sse/ann/room/1")
    backend.on_connect = None
    assert sent == [(200, {"status": "ok", "streams": 0})]
    assert stream.status == 200
    assert [e.data for e in await stream.wait_events(1)] == ["bye"]
    await stream.read_to_end()
    (disconnect,) = await backend.wait_for_calls("disconnect", count=1)
    assert (disconnect.token, disconnect.body["reason"]) == (tokens[0], "server_closed")
    # ann's next stream is not closed by that close: it was sent before its connect began
    again = await gw.open("/sse/ann/room/2")
    assert await gw.send({"user": "ann", "event": {"data": "still here"}}) == (
        200,
        {"status": "ok", "streams": 1},
    )
    assert [e.data for e in await again.wait_events(1)] == ["still here"]


@pytest.mark.gen_test(timeout=30)
async def test_live_subscription_of_a_token_and_its_validation(instances, backend):
    (gw,) = instances()
    await ready(gw)
    stream = await gw.open("/sse/-/base/1")
    (connect,) = backend.of("connect")
    token = connect.token
    assert await post(gw, "/internal/subscribe", {"token": token, "channels": ["news"]}) == (
        200,
        {"status": "ok", "streams": 1},
    )
    await publish(gw, "news", "one")
    assert [e.data for e in await stream.wait_events(1)] == ["one"]
    assert (await presence(gw, "news"))["anonymous"] == 1
    assert await post(gw, "/internal/unsubscribe", {"token": token, "channels": ["news"]}) == (
        200,
        {"status": "ok", "streams": 1},
    )
    await publish(gw, "news", "two")
    await publish(gw, "base", "marker")
    assert [e.data for e in await stream.wait_events(2)] == ["one", "marker"]
    assert (await presence(gw, "news"))["anonymous"] == 0
    status, body = await post(gw, "/internal/subscribe", {"token": "nope", "channels": ["x"]})
    assert (status, body["error"]["code"]) == (404, "TOKEN_NOT_FOUND")
    for bad, code in [
        ({"channels": ["x"]}, "INVALID_TOKEN_MISSING"),
        ({"token": token, "user": "ann", "channels": ["x"]}, "INVALID_TOKEN_MISSING"),
        ({"token": token, "channels": "x"}, "INVALID_CHANNEL"),
        ({"token": token, "channels": ["has space"]}, "INVALID_CHANNEL"),
        ([], "INVALID_JSON"),
    ]:
        status, body = await post(gw, "/internal/subscribe", bad)
        assert (status, body["error"]["code"]) == (400, code), bad


@pytest.mark.gen_test(timeout=30)
async def test_a_stream_without_channels_counts_on_the_channels_a_subscription_gives_it(
    instances, backend
):
    (gw,) = instances()
    await ready(gw)
    anonymous = await gw.open("/sse/-//1")  # a connect answer that names no channel
    await gw.open("/sse/ann//1")
    tokens = {cb.body["request"]["url"]: cb.token for cb in backend.of("connect")}
    for url in ("/sse/-//1", "/sse/ann//1"):
        body = {"token": tokens[url], "channels": ["news"]}
        assert await post(gw, "/internal/subscribe", body) == (200, {"status": "ok", "streams": 1})
    assert await presence(gw, "news") == {
        "channel": "news",
        "users": [{"user": "ann", "info": {"name": "Ann"}, "streams": 1}],
        "anonymous": 1,
    }
    await publish(gw, "news", "one")
    assert [e.data for e in await anonymous.wait_events(1)] == ["one"]
    body = {"token": tokens["/sse/-//1"], "channels": ["news"]}
    assert await post(gw, "/internal/unsubscribe", body) == (200, {"status": "ok", "streams": 1})
    assert (await presence(gw, "news"))["anonymous"] == 0
    assert await post(gw, "/internal/subscribe", body) == (200, {"status": "ok", "streams": 1})
    assert (await presence(gw, "news"))["anonymous"] == 1
    await anonymous.aclose()
    await backend.wait_for_calls("disconnect")
    for _ in range(200):  # the count goes out in the background, right after the end
        if (await presence(gw, "news"))["anonymous"] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await presence(gw, "news"))["anonymous"] == 0


@pytest.mark.gen_test(timeout=30)
async def test_a_subscription_during_the_connect_callback_applies_to_its_answer(instances, backend):
    (gw,) = instances()
    await ready(gw)
    answered: list[Any] = []

    async def change_while_connecting(connect: dict[str, Any]) -> None:
        for path, channel in [("/internal/subscribe", "news"), ("/internal/unsubscribe", "old")]:
            change = {"token": connect["token"], "channels": [channel]}
            answered.append(await post(gw, path, change))

    backend.on_connect = change_while_connecting
    stream = await gw.open("/sse/ann/base+old/1")
    backend.on_connect = None
    assert answered == [(200, {"status": "ok", "streams": 1})] * 2
    await publish(gw, "old", "not any more")
    await publish(gw, "news", "one")
    await publish(gw, "base", "two")
    assert [e.data for e in await stream.wait_events(2)] == ["one", "two"]
    assert (await presence(gw, "news"))["users"] == [
        {"user": "ann", "info": {"name": "Ann"}, "streams": 1}
    ]
    assert (await presence(gw, "old"))["users"] == []


@pytest.mark.gen_test(timeout=30)
async def test_a_subscription_while_the_stream_is_being_counted_is_counted_and_let_go(
    redis_server, gateway, backend
):
    backend.answer_for = by_path
    gw = gateway(redis_url=redis_server.url)
    await ready(gw)
    watcher = await gw.open("/sse/-/news/watcher")  # news is followed here: no Redis to subscribe
    client = aioredis.from_url(redis_server.url)
    changed: list[Any] = []

    async def subscribe_while_counted(token: str) -> None:
        for _ in range(500):  # until the connect answer is in and its count waits for Redis
            conn = gw.gateway.registry.get(token)
            if conn is not None and conn.user == "ann" and conn.counted is None:
                break
            await asyncio.sleep(0.002)
        else:
            raise AssertionError("the connect answer never came in")
        body = {"token": token, "channels": ["news"]}
        changed.append(await post(gw, "/internal/subscribe", body))
        changed.append(conn.counted)  # still None: the count was in flight all along

    async def pause_redis(connect: dict[str, Any]) -> None:
        await client.execute_command("CLIENT", "PAUSE", "1500")  # the count will wait for it
        changed.append(asyncio.ensure_future(subscribe_while_counted(connect["token"])))

    backend.on_connect = pause_redis
    try:
        stream = await gw.open("/sse/ann/base/1")
        backend.on_connect = None
        await changed[0]
        assert changed[1:] == [(200, {"status": "ok", "streams": 1}), None]
        ann = [{"user": "ann", "info": {"name": "Ann"}, "streams": 1}]
        assert (await presence(gw, "news"))["users"] == (await presence(gw, "base"))["users"] == ann
        await publish(gw, "news", "one")
        assert [e.data for e in await stream.wait_events(1)] == ["one"]
        await stream.aclose()
        await watcher.aclose()
        await backend.wait_for_calls("disconnect", count=2)
        for _ in range(500):  # counted out, and news let go once its last stream here ended
            users = (await presence(gw, "news"))["users"]
            [(_, listeners)] = await client.pubsub_numsub("tornado_sse:c:news")
            if users == [] and listeners == 0:
                break
            await asyncio.sleep(0.01)
        assert (users, listeners) == ([], 0)
    finally:
        await client.aclose()


# -- presence events, either broker ------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_two_tabs_join_once_and_leave_after_the_last_tab_and_the_delay(instances, backend):
    (gw,) = instances(presence_events="room.*", presence_leave_delay_seconds=0.3)
    await ready(gw)
    watcher = await gw.open("/sse/-/room.1/watcher")
    tab1 = await gw.open("/sse/ann/room.1/1")
    assert presence_events(await watcher.wait_events(1)) == [JOIN_ANN]
    tab2 = await gw.open("/sse/ann/room.1/2")
    await tab1.aclose()
    await backend.wait_for_calls("disconnect")
    # Bob comes and goes after ann's first tab: a leave of ann's would be due before his.
    await bob_comes_and_goes(gw, backend, disconnects=2)
    events = await watcher.wait_events(3)
    assert presence_events(events) == [JOIN_ANN, JOIN_BOB, LEAVE_BOB]
    await tab2.aclose()
    await backend.wait_for_calls("disconnect", count=3)
    last_left = time.monotonic()
    events = await watcher.wait_events(4)
    assert time.monotonic() - last_left >= 0.3 - 0.05
    assert presence_events(events) == [JOIN_ANN, JOIN_BOB, LEAVE_BOB, LEAVE_ANN]
    assert int(events[3].last_event_id) > int(events[2].last_event_id)  # channel events, ids
    await publish(gw, "room.1", "marker")
    assert [e.data for e in await watcher.wait_events(5)][4] == "marker"  # nothing between


@pytest.mark.gen_test(timeout=30)
async def test_a_users_first_stream_gets_its_own_join_first_and_a_second_tab_none(instances):
    (gw,) = instances(presence_events="room.*", presence_leave_delay_seconds=5)
    await ready(gw)
    # On a channel nobody here listened to before, and on one this instance already follows.
    await gw.open("/sse/-/room.1/watcher")
    for n in range(2):
        tab = await gw.open("/sse/ann%d/room.%d/1" % (n, n))
        second = await gw.open("/sse/ann%d/room.%d/2" % (n, n))
        await publish(gw, "room.%d" % n, "marker")
        events = await tab.wait_events(2)
        join = ("presence_join", {"user": "ann%d" % n, "info": {"name": "Ann%d" % n}})
        assert presence_events(events) == [join] and events[1].data == "marker"
        assert int(events[0].last_event_id) < int(events[1].last_event_id)
        assert [e.data for e in await second.wait_events(1)] == ["marker"]


@pytest.mark.gen_test(timeout=30)
async def test_a_reconnect_within_the_delay_is_neither_a_leave_nor_a_join(instances, backend):
    # A delay that a reconnect fits in even on a busy machine (it is one connect callback).
    (gw,) = instances(presence_events="room.*", presence_leave_delay_seconds=1.5)
    await ready(gw)
    watcher = await gw.open("/sse/-/room.1/watcher")
    tab = await gw.open("/sse/ann/room.1/1")
    await watcher.wait_events(1)
    await tab.aclose()
    await backend.wait_for_calls("disconnect")
    await gw.open("/sse/ann/room.1/reloaded")
    # Bob comes and goes after ann's reload: her leave check is due before his leave.
    await bob_comes_and_goes(gw, backend, disconnects=2)
    await watcher.wait_events(3)
    await publish(gw, "room.1", "marker")
    events = await watcher.wait_events(4)
    assert presence_events(events) == [JOIN_ANN, JOIN_BOB, LEAVE_BOB]
    assert events[3].data == "marker"


@pytest.mark.gen_test(timeout=30)
async def test_anonymous_streams_and_other_channels_get_no_presence_events(instances):
    (gw,) = instances(presence_events="room.*", presence_leave_delay_seconds=0.1)
    await ready(gw)
    watcher = await gw.open("/sse/-/room.1+lobby/watcher")
    await gw.open("/sse/-/room.1/anon")
    await gw.open("/sse/ann/lobby/1")
    await publish(gw, "room.1", "marker")
    assert [e.type for e in await watcher.wait_events(1)] == ["message"]


@pytest.mark.gen_test(timeout=30)
async def test_presence_events_follow_a_live_subscription(instances, backend):
    (gw,) = instances(presence_events="room.*", presence_leave_delay_seconds=0.3)
    await ready(gw)
    watcher = await gw.open("/sse/-/room.1/watcher")
    tab = await gw.open("/sse/ann/base/1")
    assert await post(gw, "/internal/subscribe", {"user": "ann", "channels": ["room.1"]}) == (
        200,
        {"status": "ok", "streams": 1},
    )
    assert presence_events(await watcher.wait_events(1)) == [JOIN_ANN]
    assert presence_events(await tab.wait_events(1)) == [JOIN_ANN]  # a channel event of room.1
    assert await post(gw, "/internal/unsubscribe", {"user": "ann", "channels": ["room.1"]}) == (
        200,
        {"status": "ok", "streams": 1},
    )
    unsubscribed = time.monotonic()
    events = await watcher.wait_events(2)
    assert time.monotonic() - unsubscribed >= 0.3 - 0.05
    assert presence_events(events) == [JOIN_ANN, LEAVE_ANN]
    await publish(gw, "room.1", "marker")
    await publish(gw, "base", "marker")
    assert [e.data for e in await watcher.wait_events(3)][2] == "marker"
    assert [e.type for e in await tab.wait_events(2)] == ["presence_join", "message"]


# -- three instances over Redis ----------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_a_user_send_reaches_3_streams_on_2_instances(redis_cluster):
    a, b, c = redis_cluster(3)
    await ready(a, b, c)
    tabs = [
        await a.open("/sse/ann/-/1"),
        await a.open("/sse/ann/-/2"),
        await b.open("/sse/ann/-/3"),
    ]
    other = await b.open("/sse/bob/-/1")
    assert await c.send({"user": "ann", "event": {"data": "hello", "name": "greet"}}) == (
        200,
        {"status": "ok", "streams": 3},
    )
    assert await c.send({"user": "bob", "event": {"data": "only bob"}}) == (
        200,
        {"status": "ok", "streams": 1},
    )
    assert await a.send({"user": "ann", "event": {"data": "marker"}}) == (
        200,
        {"status": "ok", "streams": 3},
    )
    for tab in tabs:  # once each, nothing of bob's, nothing twice
        events = await tab.wait_events(2)
        assert [(e.type, e.data) for e in events] == [("greet", "hello"), ("message", "marker")]
    assert [e.data for e in await other.wait_events(1)] == ["only bob"]


@pytest.mark.gen_test(timeout=30)
async def test_a_user_send_on_one_instance_reaches_a_stream_connecting_on_another(
    redis_cluster, backend
):
    a, b, c = redis_cluster(3)
    await ready(a, b, c)
    sent: list[Any] = []

    async def send_while_connecting(body: dict[str, Any]) -> None:
        if "/ann/" in body["request"]["url"] and not body["request"]["url"].endswith("/1"):
            sent.append(await c.send({"user": "ann", "event": {"data": "hi"}}))

    on_a = await a.open("/sse/ann/-/1")
    on_b = await b.open("/sse/ann/-/1")  # b is asked to deliver: its tab connecting is not
    backend.on_connect = send_while_connecting
    connecting = [await b.open("/sse/ann/-/2"), await a.open("/sse/ann/-/3")]
    backend.on_connect = None
    assert sent == [(200, {"status": "ok", "streams": 2}), (200, {"status": "ok", "streams": 3})]
    assert await c.send({"user": "ann", "event": {"data": "marker"}}) == (
        200,
        {"status": "ok", "streams": 4},
    )
    # Each stream gets each send once; the second tab was open when the third connected.
    assert [e.data for e in await on_a.wait_events(3)] == ["hi", "hi", "marker"]
    assert [e.data for e in await on_b.wait_events(3)] == ["hi", "hi", "marker"]
    second, third = connecting
    assert [e.data for e in await second.wait_events(3)] == ["hi", "hi", "marker"]
    assert [e.data for e in await third.wait_events(2)] == ["hi", "marker"]


@pytest.mark.gen_test(timeout=30)
async def test_a_user_close_ends_every_stream_with_one_disconnect_each(redis_cluster, backend):
    a, b, c = redis_cluster(3)
    await ready(a, b, c)
    tabs = [
        await a.open("/sse/ann/-/1"),
        await a.open("/sse/ann/-/2"),
        await b.open("/sse/ann/-/3"),
    ]
    await b.open("/sse/bob/-/1")
    assert await c.send({"user": "ann", "event": {"data": "bye"}, "close": True}) == (
        200,
        {"status": "ok", "streams": 3},
    )
    for tab in tabs:
        assert [e.data for e in await tab.wait_events(1)] == ["bye"]
        await tab.read_to_end()
    disconnects = await backend.wait_for_calls("disconnect", count=3)
    tokens = {cb.token for cb in backend.of("connect") if "/ann/" in cb.body["request"]["url"]}
    assert sorted(d.token for d in disconnects) == sorted(tokens)  # one each, bob's none
    assert {d.body["reason"] for d in disconnects} == {"server_closed"}
    assert await c.send({"user": "ann", "event": {"data": "x"}}) == (
        200,
        {"status": "ok", "streams": 0},
    )
    for gw in (a, b):  # a later stream's disconnect comes alone: none was doubled before it
        await open_and_close_another(gw, backend, "/sse/-/-/later")
    assert len(backend.of("disconnect")) == 5


@pytest.mark.gen_test(timeout=30)
async def test_the_per_user_limit_is_cluster_wide(redis_cluster, backend):
    a, b, c = redis_cluster(3, max_streams_per_user=2)
    await ready(a, b, c)
    first = await a.open("/sse/ann/-/1")
    await b.open("/sse/ann/-/2")
    refused = await c.stream("/sse/ann/-/3")
    await refused.read_to_end()
    assert refused.status == 429 and refused.json()["error"]["code"] == "TOO_MANY_STREAMS"
    (disconnect,) = await backend.wait_for_calls("disconnect")
    assert (disconnect.body["reason"], disconnect.body["detail"]) == ("error", "user_limit")
    assert "/sse/ann/-/3" == disconnect.body["request"]["url"]
    await c.open("/sse/bob/-/1")  # another user is not limited by ann's streams
    await first.aclose()
    await backend.wait_for_calls("disconnect", count=2)
    for _ in range(200):  # the count goes down right after the stream ended
        again = await c.stream("/sse/ann/-/4")
        if again.status == 200:
            break
        await asyncio.sleep(0.02)
    assert again.status == 200


@pytest.mark.gen_test(timeout=30)
async def test_presence_is_cluster_wide(redis_cluster):
    a, b, c = redis_cluster(3)
    await ready(a, b, c)
    await a.open("/sse/ann/room/1")
    await b.open("/sse/ann/room/2")
    await b.open("/sse/bob/room/1")
    await c.open("/sse/-/room/1")
    for gw in (a, b, c):
        assert await presence(gw, "room") == {
            "channel": "room",
            "users": [
                {"user": "ann", "info": {"name": "Ann"}, "streams": 2},
                {"user": "bob", "info": {"name": "Bob"}, "streams": 1},
            ],
            "anonymous": 1,
        }
    body = json.loads((await c.get("/internal/connections?user=ann", internal=True)).body)
    assert body["count"] == 2 and len(body["connections"]) == 2
    assert {c["info"]["name"] for c in body["connections"]} == {"Ann"}  # from a and from b


@pytest.mark.gen_test(timeout=30)
async def test_tabs_on_two_instances_join_once_and_leave_once(redis_cluster, backend):
    a, b, c = redis_cluster(3, presence_events="room.*", presence_leave_delay_seconds=1.0)
    await ready(a, b, c)
    watcher = await c.open("/sse/-/room.1/watcher")
    tab1, tab2 = await asyncio.gather(a.open("/sse/ann/room.1/1"), b.open("/sse/ann/room.1/2"))
    await tab1.aclose()
    await backend.wait_for_calls("disconnect")
    # Bob comes and goes on a after ann's tab there: a leave of ann's would be due before his.
    await bob_comes_and_goes(a, backend, disconnects=2)
    events = await watcher.wait_events(3)
    assert presence_events(events) == [JOIN_ANN, JOIN_BOB, LEAVE_BOB]
    await tab2.aclose()
    await backend.wait_for_calls("disconnect", count=3)
    last_left = time.monotonic()
    events = await watcher.wait_events(4)
    assert time.monotonic() - last_left >= 1.0 - 0.05
    assert presence_events(events) == [JOIN_ANN, JOIN_BOB, LEAVE_BOB, LEAVE_ANN]
    await publish(a, "room.1", "marker")
    assert (await watcher.wait_events(5))[4].data == "marker"


@pytest.mark.gen_test(timeout=30)
async def test_two_instances_never_both_announce_a_join(redis_cluster):
    a, b, c = redis_cluster(3, presence_events="room.*", presence_leave_delay_seconds=5)
    await ready(a, b, c)
    watcher = await c.open("/sse/-/room.1/watcher")
    users = ["u%d" % i for i in range(10)]
    await asyncio.gather(
        *(gw.open("/sse/%s/room.1/%d" % (u, k)) for u in users for k, gw in enumerate((a, b)))
    )
    await publish(c, "room.1", "marker")
    events = await watcher.wait_events(11)
    joins = [json.loads(e.data)["user"] for e in events if e.type == "presence_join"]
    assert sorted(joins) == users and events[-1].data == "marker"


@pytest.mark.gen_test(timeout=30)
async def test_a_reconnect_on_another_instance_within_the_delay_is_no_leave(redis_cluster, backend):
    a, b, c = redis_cluster(3, presence_events="room.*", presence_leave_delay_seconds=1.5)
    await ready(a, b, c)
    watcher = await c.open("/sse/-/room.1/watcher")
    tab = await a.open("/sse/ann/room.1/1")
    await watcher.wait_events(1)
    await tab.aclose()
    await backend.wait_for_calls("disconnect")
    await b.open("/sse/ann/room.1/reloaded")
    # Bob comes and goes on a after ann's reload: her leave check there is due before his leave.
    await bob_comes_and_goes(a, backend, disconnects=2)
    await watcher.wait_events(3)
    await publish(c, "room.1", "marker")
    events = await watcher.wait_events(4)
    assert presence_events(events) == [JOIN_ANN, JOIN_BOB, LEAVE_BOB]
    assert events[3].data == "marker"


@pytest.mark.gen_test(timeout=30)
async def test_subscribe_and_unsubscribe_a_user_across_instances_for_the_next_publish(
    redis_cluster,
):
    a, b, c = redis_cluster(3)
    await ready(a, b, c)
    tabs = [await a.open("/sse/ann/base/1"), await b.open("/sse/ann/base/2")]
    assert await post(c, "/internal/subscribe", {"user": "ann", "channels": ["news"]}) == (
        200,
        {"status": "ok", "streams": 2},
    )
    await publish(c, "news", "one")  # answered after the 200: reaches both tabs
    for tab in tabs:
        assert [e.data for e in await tab.wait_events(1)] == ["one"]
    assert (await presence(a, "news"))["users"] == [
        {"user": "ann", "info": {"name": "Ann"}, "streams": 2}
    ]
    assert await post(a, "/internal/unsubscribe", {"user": "ann", "channels": ["news"]}) == (
        200,
        {"status": "ok", "streams": 2},
    )
    await publish(c, "news", "two")  # reaches neither
    await publish(c, "base", "marker")
    for tab in tabs:
        assert [e.data for e in await tab.wait_events(2)] == ["one", "marker"]
    assert (await presence(b, "news"))["users"] == []


@pytest.mark.gen_test(timeout=30)
async def test_subscribe_a_token_held_by_another_instance(redis_cluster, backend):
    a, b, c = redis_cluster(3)
    await ready(a, b, c)
    stream = await a.open("/sse/-/base/1")
    (connect,) = backend.of("connect")
    body = {"token": connect.token, "channels": ["news"]}
    assert await post(b, "/internal/subscribe", body) == (200, {"status": "ok", "streams": 1})
    await publish(c, "news", "one")
    assert [e.data for e in await stream.wait_events(1)] == ["one"]
    status, answer = await post(b, "/internal/subscribe", {"token": "nope", "channels": ["x"]})
    assert (status, answer["error"]["code"]) == (404, "TOKEN_NOT_FOUND")


# -- a crashed instance (gateway processes) -----------------------------------------------------


@pytest.mark.gen_test(timeout=120)
async def test_the_users_of_a_killed_instance_leave_presence_within_60_s(
    cluster, backend, redis_server
):
    backend.answer_for = by_path
    env = {"PRESENCE_EVENTS": "room.*", "PRESENCE_LEAVE_DELAY_SECONDS": "0.3"}
    a, b, c = await cluster(3, **env)
    streams = [await a.stream("/sse/-/room.1/watcher")]
    streams += [await a.stream("/sse/ann/room.1/1"), await b.stream("/sse/ann/room.1/2")]
    streams += [await b.stream("/sse/bob/room.1/1"), await c.stream("/sse/carl/room.1/1")]
    try:
        assert [s.status for s in streams] == [200] * 5
        watcher = streams[0]
        await watcher.wait_events(3)  # ann's, bob's and carl's joins
        b.signal(signal.SIGKILL)
        await b.wait(10)
        started = time.monotonic()
        await listeners_gone(redis_server, 2)
        # b is not known dead yet and no longer listens: a user send cannot reach all of ann's
        # streams, so it is refused, and the stream on a did not get it (a retry doubles nothing).
        status, body = await a.send({"user": "ann", "event": {"data": "refused"}})
        assert (status, body["error"]["code"]) == (503, "BROKER_UNAVAILABLE")
        # Nor does a stream of ann's that connects after the refusal, from the kept sends.
        streams.append(await a.stream("/sse/ann/room.1/3"))
        assert streams[-1].status == 200
        while True:  # bounded: the contract gives 60 s
            body = await fetch_presence(a, "room.1")
            if [u["user"] for u in body["users"]] == ["ann", "carl"]:
                break
            assert time.monotonic() - started < 60, body
            await asyncio.sleep(0.25)
        assert body["users"] == [
            {"user": "ann", "info": {"name": "Ann"}, "streams": 2},
            {"user": "carl", "info": {"name": "Carl"}, "streams": 1},
        ]
        assert body["anonymous"] == 1
        # Now b is known dead: the user send reaches the two streams left, on a.
        answer = await a.send({"user": "ann", "event": {"data": "after"}})
        assert answer == (200, {"status": "ok", "streams": 2})
        for stream in (streams[1], streams[-1]):
            await stream.wait_until(lambda s: any(e.data == "after" for e in s.events))
            assert "refused" not in [e.data for e in stream.events]
        left = 60 - (time.monotonic() - started)
        events = await watcher.wait_events(4, timeout=max(left, 1))
        assert presence_events(events)[3] == LEAVE_BOB
        assert time.monotonic() - started < 60
    finally:
        for stream in streams:
            stream.close()


async def fetch_presence(gw: Any, channel: str) -> dict[str, Any]:
    response = await AsyncHTTPClient().fetch(
        gw.base_url + "/internal/presence?channel=" + channel, raise_error=False
    )
    assert response.code == 200, response.body
    return json.loads(response.body)


async def listeners_gone(redis_server: Any, living: int) -> None:
    """Until Redis has only ``living`` instances listening on their channels (bounded)."""
    client = aioredis.from_url(redis_server.url)
    try:
        for _ in range(500):
            channels = await client.pubsub_channels("tornado_sse:instance:*")
            if len(channels) == living:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("instance channels still listened to: %r" % channels)
    finally:
        await client.aclose()
