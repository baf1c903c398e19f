"""A gateway over a Redis Cluster (PROTOCOL 6, v2: ``REDIS_CLUSTER=true``, Redis 7 sharded
pub/sub): two instances on a real three-node cluster made by ``redis-cli --cluster create``
behave as one gateway. The fake backend answers each connect from its path, as in
``test_users`` (``/sse/<user or ->/<channel+channel>/<tab>``)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest
from redis.cluster import RedisCluster
from tornado.httpclient import AsyncHTTPClient

from tests.cluster.conftest import wait_ready
from tests.cluster.test_users import by_path, post, presence, publish, ready
from tests.support.process import start_gateway
from tests.support.sse_client import open_stream

#: Channels whose keys land on different nodes of a three-node cluster.
CHANNELS = ["room.%d" % i for i in range(6)]


def token_of(backend: Any, url: str) -> str:
    (connect,) = [c for c in backend.of("connect") if c.body["request"]["url"] == url]
    return connect.token


@pytest.mark.gen_test(timeout=60)
async def test_two_instances_on_a_redis_cluster_act_as_one_gateway(
    redis_cluster_nodes, gateway, backend
):
    backend.answer_for = by_path
    a, b = (gateway(redis_url=redis_cluster_nodes.url, redis_cluster=True) for _ in range(2))
    await ready(a, b)
    everything = "+".join(CHANNELS)
    ann_a = await a.open("/sse/ann/%s/1" % everything)
    ann_b = await b.open("/sse/ann/%s/2" % everything)
    bob_a = await a.open("/sse/bob/room.0/1")
    for gw in (a, b):
        assert (await gw.get("/readyz")).code == 200

    # A token send through the other instance, and a user send reaching both instances.
    token = token_of(backend, "/sse/bob/room.0/1")
    assert await b.send({"token": token, "event": {"data": "to bob"}}) == (200, {"status": "ok"})
    assert (await bob_a.wait_events(1))[0].data == "to bob"
    assert await a.send({"user": "ann", "event": {"data": "to ann"}}) == (
        200,
        {"status": "ok", "streams": 2},
    )
    for stream in (ann_a, ann_b):
        assert [e.data for e in await stream.wait_events(1)] == ["to ann"]

    # Channel publishes on every node, from both instances: each once, ids increasing.
    for i, channel in enumerate(CHANNELS):
        await publish(a if i % 2 else b, channel, "event %d" % i)
    for stream in (ann_a, ann_b):
        events = (await stream.wait_events(1 + len(CHANNELS)))[1:]
        assert [e.data for e in events] == ["event %d" % i for i in range(len(CHANNELS))]
        ids = [int(e.last_event_id) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    (first_bob,) = (await bob_a.wait_events(2))[1:]
    assert first_bob.data == "event 0"

    # History and a replay on the other instance.
    history = json.loads((await a.get("/internal/history?channel=room.3", internal=True)).body)
    assert [e["data"] for e in history["events"]] == ["event 3"]
    replayed = await b.open("/sse/ann/%s/3" % everything, headers={"Last-Event-ID": str(ids[2])})
    assert [e.data for e in await replayed.wait_events(3)] == ["event 3", "event 4", "event 5"]

    # Presence and counts, cluster-wide, from either instance.
    for gw in (a, b):
        assert await presence(gw, "room.0") == {
            "channel": "room.0",
            "users": [
                {"user": "ann", "info": {"name": "Ann"}, "streams": 3},
                {"user": "bob", "info": {"name": "Bob"}, "streams": 1},
            ],
            "anonymous": 0,
        }
        listing = json.loads((await gw.get("/internal/connections", internal=True)).body)
        assert listing["count"] == 4

    # A live subscription changed through the other instance.
    code, body = await post(b, "/internal/subscribe", {"token": token, "channels": ["news"]})
    assert (code, body) == (200, {"status": "ok", "streams": 1})
    await publish(b, "news", "breaking")
    assert (await bob_a.wait_events(3))[2].data == "breaking"
    code, body = await post(a, "/internal/unsubscribe", {"token": token, "channels": ["news"]})
    assert (code, body) == (200, {"status": "ok", "streams": 1})
    await publish(a, "news", "not for bob")
    await publish(a, "room.0", "for bob")
    assert (await bob_a.wait_events(4))[3].data == "for bob"

    # A close through the other instance: one disconnect.
    assert await b.send({"token": token, "close": True}) == (200, {"status": "ok"})
    await backend.wait_for_calls("disconnect", token=token, timeout=5)


@pytest.mark.gen_test(timeout=60)
async def test_a_killed_instance_on_a_redis_cluster_is_reported_once_by_the_survivor(
    redis_cluster_nodes, backend
):
    backend.answer_for = by_path
    env = {
        "CALLBACK_URL": backend.url,
        "REDIS_URL": redis_cluster_nodes.url,
        "REDIS_CLUSTER": "true",
        "HEARTBEAT_INTERVAL_SECONDS": "1",
    }
    a = await start_gateway(env)
    b = await start_gateway(env)
    try:
        for gw in (a, b):
            await wait_ready(gw)
        paths = ["/sse/u%d/room.%d/1" % (i, i) for i in range(6)]
        streams = [await open_stream(a.port, path) for path in paths]
        assert all(s.status == 200 for s in streams)
        tokens = {token_of(backend, path) for path in paths}
        a.signal(signal.SIGKILL)
        await a.wait(10)
        started = time.monotonic()
        await backend.wait_for(
            lambda: {d.token for d in backend.of("disconnect")} >= tokens, timeout=40
        )
        assert time.monotonic() - started < 40
        for stream in streams:
            stream.close()
        for token in tokens:
            (disconnect,) = backend.of("disconnect", token)
            assert disconnect.body["detail"] == "instance_lost"
        # The dead instance's users are gone from presence; a token of it answers 404.
        response = await AsyncHTTPClient().fetch(b.base_url + "/internal/presence?channel=room.1")
        assert json.loads(response.body)["users"] == []
        code, _ = await b.send({"token": next(iter(tokens)), "event": {"data": "x"}})
        assert code == 404
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.gen_test(timeout=60)
async def test_readyz_on_a_redis_cluster_says_503_while_a_node_is_stalled(
    redis_cluster_nodes, gateway, backend
):
    backend.answer_for = by_path
    gw = gateway(redis_url=redis_cluster_nodes.url, redis_cluster=True)
    await ready(gw)
    node = redis_cluster_nodes.nodes[2]
    node.pause()
    try:
        for _ in range(300):  # bounded: the probe of that node's connection times out
            if (await gw.get("/readyz")).code == 503:
                break
            await asyncio.sleep(0.05)
        body = json.loads((await gw.get("/readyz")).body)
        assert body["reasons"] == ["the broker (Redis) is unreachable"], body
    finally:
        node.resume()
    await ready(gw)
    assert (await gw.get("/readyz")).code == 200
    stream = await gw.open("/sse/ann/room.0+room.1+room.2/1")
    for channel in ("room.0", "room.1", "room.2"):
        await publish(gw, channel, channel)
    assert [e.data for e in await stream.wait_events(3)] == ["room.0", "room.1", "room.2"]


def channels_on_two_nodes(nodes: Any) -> tuple[str, str]:
    """Two of :data:`CHANNELS` whose keys (hash tag ``c:<name>``) live on different nodes."""
    client = RedisCluster(host="127.0.0.1", port=nodes.nodes[0].port)
    try:
        where = {name: client.get_node_from_key("{c:%s}" % name).port for name in CHANNELS}
    finally:
        client.close()
    first = CHANNELS[0]
    return first, next(name for name in CHANNELS if where[name] != where[first])


@pytest.mark.gen_test(timeout=60)
async def test_a_stream_on_channels_of_two_nodes_gets_increasing_ids_and_an_exact_replay(
    redis_cluster_nodes, gateway, backend
):
    """Publishes at the same moment from two instances on channels of two nodes: each stream
    on both channels gets every event once with strictly increasing ids, and a reconnect with
    ``Last-Event-ID`` gets exactly the events after it."""
    backend.answer_for = by_path
    a, b = (gateway(redis_url=redis_cluster_nodes.url, redis_cluster=True) for _ in range(2))
    await ready(a, b)
    x, y = channels_on_two_nodes(redis_cluster_nodes)
    path = "/sse/ann/%s+%s/%%d" % (x, y)
    streams = [await a.open(path % 1), await b.open(path % 2)]
    rounds, lanes = 20, 4
    total = 2 * rounds * lanes

    async def lane(gw: Any, channel: str, lane: int) -> None:
        for i in range(rounds):
            await publish(gw, channel, "%s %d %d" % (channel, lane, i))

    await asyncio.gather(
        *(lane(a, x, n) for n in range(lanes)), *(lane(b, y, n) for n in range(lanes))
    )
    for stream in streams:
        events = await stream.wait_events(total, timeout=20)
        assert len(events) == total
        ids = [int(e.last_event_id) for e in events]
        assert ids == sorted(set(ids)), ids
        assert sorted(e.data for e in events) == sorted(
            "%s %d %d" % (c, n, i) for c in (x, y) for n in range(lanes) for i in range(rounds)
        )
    seen = streams[0].events
    cut = total // 3
    resumed = await b.open(path % 3, headers={"Last-Event-ID": seen[cut].last_event_id})
    replayed = await resumed.wait_events(total - cut - 1, timeout=10)
    assert [(e.last_event_id, e.data) for e in replayed] == [
        (e.last_event_id, e.data) for e in seen[cut + 1 :]
    ]
