"""Channels v2 (PROTOCOL 4.3 history, 5 and 6): a history per channel, replay that is never
partial, history loss detected, the history endpoint, and per-channel subscriptions across
instances. Each behaviour runs against a gateway with the in-process broker and against
gateways sharing a real redis-server (in this process, each its own instance)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.backend import Answer

BROKERS = ["local", "redis"]


def subscribe(backend, channels_for) -> None:
    """Make the fake backend answer each connect with the channels ``channels_for(url)``."""
    backend.answer_for = lambda body: Answer(
        body=json.dumps({"channels": channels_for(body["request"]["url"])}).encode()
    )


def by_path(url: str) -> list[str]:
    """``/sse/<a+b+c>/...`` subscribes to channels a, b and c."""
    return url.split("?")[0].split("/")[2].split("+")


@pytest.fixture(params=BROKERS)
def instances(request: Any, gateway: Any) -> Any:
    """A factory: ``instances(n, **settings)`` starts n gateways that form one gateway (n must
    be 1 for the in-process broker)."""

    def start(count: int = 1, **settings: Any) -> list[Any]:
        if request.param == "local":
            assert count == 1, "the in-process broker is a single instance"
            return [gateway(**settings)]
        server = request.getfixturevalue("redis_server")
        return [gateway(redis_url=server.url, **settings) for _ in range(count)]

    start.kind = request.param  # type: ignore[attr-defined]
    return start


async def ready(*gateways: Any) -> None:
    """Until every gateway's broker link is up (bounded)."""
    for _ in range(500):
        if all(gw.gateway.broker.ready for gw in gateways):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the broker link did not come up")


async def publish(gw: Any, channel: str, data: str, name: str | None = None) -> None:
    event = {"data": data} if name is None else {"data": data, "name": name}
    assert await gw.send({"channel": channel, "event": event}) == (200, {"status": "ok"})


async def published_ids(gw: Any, channel: str, count: int, prefix: str) -> list[str]:
    """Publish ``count`` events on ``channel`` and return their ids, as a watcher saw them."""
    watcher = await gw.open("/sse/%s/watcher-%s" % (channel, prefix))
    for i in range(count):
        await publish(gw, channel, "%s%d" % (prefix, i))
    events = await watcher.wait_events(count, timeout=20)
    await watcher.aclose()
    return [e.last_event_id for e in events]


@pytest.mark.gen_test(timeout=60)
async def test_a_quiet_channels_event_replays_after_5000_on_a_busy_one(instances, backend):
    subscribe(backend, by_path)
    (gw,) = instances(history_size=50)
    await ready(gw)
    (quiet_id,) = await published_ids(gw, "quiet", 1, "q")
    await publish(gw, "quiet", "the one")
    batch = [{"channel": "busy", "event": {"data": str(i)}} for i in range(5000)]
    status, body = await gw.send(batch)
    assert status == 200 and all(r["status"] == 200 for r in body["results"])
    stream = await gw.open("/sse/quiet/reader", headers={"Last-Event-ID": quiet_id})
    await publish(gw, "quiet", "live")
    assert [(e.type, e.data) for e in await stream.wait_events(2)] == [
        ("message", "the one"),
        ("message", "live"),
    ]


@pytest.mark.gen_test(timeout=30)
async def test_history_rules_give_matching_channels_their_own_size(instances, backend):
    subscribe(backend, by_path)
    (gw,) = instances(history_size=100, history_rules="ticker.*=1/60")
    await ready(gw)
    ticks = await published_ids(gw, "ticker.eur", 3, "t")
    chats = await published_ids(gw, "chat.1", 3, "c")
    ticker = await gw.open("/sse/ticker.eur/r", headers={"Last-Event-ID": ticks[1]})
    assert [e.data for e in await ticker.wait_events(1)] == ["t2"]  # size 1 keeps the last one
    gap = await gw.open("/sse/ticker.eur/g", headers={"Last-Event-ID": ticks[0]})
    assert (await gap.wait_events(1))[0].type == "history_gap"
    chat = await gw.open("/sse/chat.1/r", headers={"Last-Event-ID": chats[0]})
    assert [e.data for e in await chat.wait_events(2)] == ["c1", "c2"]


@pytest.mark.gen_test(timeout=30)
async def test_a_replay_is_never_partial(instances, backend):
    subscribe(backend, by_path)
    (gw,) = instances(history_size=3)
    await ready(gw)
    (start,) = await published_ids(gw, "a", 1, "a")
    await published_ids(gw, "a", 4, "more")  # a's window (3) no longer reaches back to start
    await published_ids(gw, "b", 1, "b")  # b could be replayed completely
    stream = await gw.open("/sse/a+b/reader", headers={"Last-Event-ID": start})
    await publish(gw, "b", "live")
    events = await stream.wait_events(2)
    assert [(e.type, e.data) for e in events] == [("history_gap", start), ("message", "live")]


@pytest.mark.gen_test(timeout=30)
async def test_the_history_endpoint_pages_through_a_channel(instances, backend):
    subscribe(backend, by_path)
    (gw,) = instances(history_size=5)
    await ready(gw)
    await publish(gw, "other", "not listed")
    ids = await published_ids(gw, "room", 8, "e")

    async def history(query: str) -> tuple[int, Any]:
        response = await gw.get("/internal/history?" + query, internal=True)
        return response.code, json.loads(response.body)

    status, body = await history("channel=room")
    assert status == 200 and body["channel"] == "room" and body["complete"] is True
    assert [(e["id"], e["event"], e["data"]) for e in body["events"]] == [
        (ids[i], None, "e%d" % i) for i in range(3, 8)
    ]
    status, body = await history("channel=room&since=%s&limit=2" % ids[4])
    assert [e["data"] for e in body["events"]] == ["e5", "e6"] and body["complete"] is True
    status, body = await history("channel=room&since=%s" % ids[1])  # e2 was dropped
    assert [e["data"] for e in body["events"]] == ["e3", "e4", "e5", "e6", "e7"]
    assert body["complete"] is False
    status, body = await history("channel=nobody")
    assert body == {"channel": "nobody", "events": [], "complete": True}
    for query, code in [
        ("", "INVALID_CHANNEL"),
        ("channel=has%20space", "INVALID_CHANNEL"),
        ("channel=room&since=abc", "INVALID_SINCE"),
        ("channel=room&limit=0", "INVALID_LIMIT"),
        ("channel=room&limit=1001", "INVALID_LIMIT"),
    ]:
        status, body = await history(query)
        assert (status, body["error"]["code"]) == (400, code), query


@pytest.mark.gen_test(timeout=30)
async def test_named_events_come_back_from_the_history_endpoint_as_sent(instances, backend):
    subscribe(backend, by_path)
    (gw,) = instances()
    await ready(gw)
    await publish(gw, "news", "line 1\nline 2", name="story")
    response = await gw.get("/internal/history?channel=news", internal=True)
    (event,) = json.loads(response.body)["events"]
    assert (event["event"], event["data"]) == ("story", "line 1\nline 2")


# -- several instances over Redis ------------------------------------------------------------


@pytest.fixture
def redis_cluster(redis_server: Any, gateway: Any) -> Any:
    def start(count: int, **settings: Any) -> list[Any]:
        return [gateway(redis_url=redis_server.url, **settings) for _ in range(count)]

    return start


@pytest.mark.gen_test(timeout=30)
async def test_replay_on_another_instance_than_the_one_that_published(redis_cluster, backend):
    subscribe(backend, by_path)
    first, second = redis_cluster(2)
    await ready(first, second)
    ids = await published_ids(first, "room", 3, "e")
    stream = await second.open("/sse/room/r", headers={"Last-Event-ID": ids[0]})
    await publish(first, "room", "live")
    assert [e.data for e in await stream.wait_events(3)] == ["e1", "e2", "live"]


@pytest.mark.gen_test(timeout=30)
async def test_an_instance_receives_only_the_channels_its_streams_need(redis_cluster, backend):
    subscribe(backend, by_path)
    first, second = redis_cluster(2)
    await ready(first, second)
    stream = await first.open("/sse/mine/r")
    assert "tornado_sse:c:mine" not in _subscribed(second)
    await publish(second, "mine", "hello")  # published through the other instance
    assert [e.data for e in await stream.wait_events(1)] == ["hello"]
    assert {"mine"} <= first.gateway.broker.channels.subscribed
    assert "mine" not in second.gateway.broker.channels.subscribed
    await stream.aclose()
    await backend.wait_for_calls("disconnect")
    for _ in range(300):  # unsubscribed by the sweep, about a second after the last one left
        if "mine" not in first.gateway.broker.channels.subscribed:
            break
        await asyncio.sleep(0.02)
    assert "mine" not in first.gateway.broker.channels.subscribed


def _subscribed(gw: Any) -> set[str]:
    return {"tornado_sse:c:" + c for c in gw.gateway.broker.channels.subscribed}


@pytest.mark.parametrize("loss", ["flushall", "restart"])
@pytest.mark.gen_test(timeout=60)
async def test_a_history_store_that_lost_its_contents_gives_a_gap_and_ids_keep_rising(
    redis_cluster, redis_server, backend, loss
):
    subscribe(backend, by_path)
    (gw,) = redis_cluster(1)
    await ready(gw)
    before = await published_ids(gw, "room", 3, "old")
    if loss == "flushall":
        client = aioredis.Redis.from_url(redis_server.url)
        await client.flushall()
        await client.aclose()
    else:  # killed and started again without persistence: empty
        redis_server.kill()
        redis_server.start()
        for _ in range(500):  # until the link is back and a stream can subscribe again
            probe = await gw.stream("/sse/probe/p")
            await probe.aclose()
            if probe.status == 200:
                break
            await asyncio.sleep(0.02)
    after = await published_ids(gw, "room", 1, "new")
    assert int(after[0]) > max(int(i) for i in before)
    stream = await gw.open("/sse/room/r", headers={"Last-Event-ID": before[1]})
    await publish(gw, "room", "live")
    events = await stream.wait_events(2)
    assert [(e.type, e.data) for e in events] == [("history_gap", before[1]), ("message", "live")]


@pytest.mark.gen_test(timeout=120)
async def test_1000_subscribers_get_every_event_once_in_order_while_subscriptions_churn(
    redis_cluster, backend
):
    subscribe(backend, by_path)
    gateways = redis_cluster(3, max_connections=2000)
    await ready(*gateways)
    groups = {"a": 400, "b": 300, "a+b": 300}
    streams: dict[str, list[Any]] = {}
    for n, (group, count) in enumerate(groups.items()):
        gw = gateways[n % 2]  # the third instance starts with no subscribers at all
        streams[group] = await asyncio.gather(
            *(gw.open("/sse/%s/%d" % (group, i)) for i in range(count))
        )
    stop = asyncio.Event()

    async def churn() -> int:
        """Streams on a and b come and go on the third instance (so it subscribes and
        unsubscribes over and over) and on the others."""
        cycles = 0
        while not stop.is_set() and cycles < 500:
            for gw in (gateways[2], gateways[cycles % 2]):
                stream = await gw.open("/sse/a+b/churn-%d" % cycles)
                await stream.aclose()
            cycles += 1
        return cycles

    churner = asyncio.ensure_future(churn())
    for i in range(20):
        publisher = gateways[i % 3]
        await publish(publisher, "a", "a%d" % i)
        await publish(publisher, "b", "b%d" % i)
    stop.set()
    assert await churner > 0
    expected = {
        "a": ["a%d" % i for i in range(20)],
        "b": ["b%d" % i for i in range(20)],
        "a+b": [x for i in range(20) for x in ("a%d" % i, "b%d" % i)],
    }
    for group, members in streams.items():
        want = expected[group]
        await asyncio.gather(*(s.wait_events(len(want), timeout=30) for s in members))
        for stream in members:
            assert [e.data for e in stream.events] == want


@pytest.mark.gen_test(timeout=60)
async def test_a_reconnect_on_a_fresh_instance_while_events_flow_loses_and_doubles_nothing(
    redis_cluster, backend
):
    subscribe(backend, by_path)
    first, second = redis_cluster(2)
    await ready(first, second)
    total = 300
    done = asyncio.Event()

    async def publisher() -> None:
        for i in range(total):
            await publish(first, "ticker", str(i))
        done.set()

    reader = await first.open("/sse/ticker/r")
    task = asyncio.ensure_future(publisher())
    await reader.wait_events(20)
    await reader.aclose()
    received = [e.data for e in reader.events]
    # second has never subscribed to ticker: it subscribes, then replays, while events flow.
    again = await second.open(
        "/sse/ticker/r2", headers={"Last-Event-ID": reader.events[-1].last_event_id}
    )
    await done.wait()
    await task
    await again.wait_until(lambda s: s.events and s.events[-1].data == str(total - 1), 20)
    received += [e.data for e in again.events]
    assert received == [str(i) for i in range(total)]
