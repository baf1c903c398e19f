"""Channels: fan-out, gateway-assigned ids, Last-Event-ID replay and history gaps (PROTOCOL 5)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.backend import Answer


def subscribe(backend, channels_for):
    """Make the fake backend answer each connect with the channels ``channels_for(url)``."""
    backend.answer_for = lambda body: Answer(
        body=json.dumps({"channels": channels_for(body["request"]["url"])}).encode()
    )


async def publish(gw, channel, data, name=None):
    event = {"data": data} if name is None else {"data": data, "name": name}
    status, body = await gw.send({"channel": channel, "event": event})
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.gen_test(timeout=60)
async def test_fanout_to_1000_subscribers_on_overlapping_channels_is_exactly_once_in_order(
    gateway, backend
):
    # Streams /sse/a/N subscribe to "a", /sse/b/N to "b", /sse/ab/N to both.
    subscribe(backend, lambda url: [c for c in ("a", "b") if c in url.split("/")[2]])
    gw = gateway(max_connections=2000)
    groups = {"a": 400, "b": 300, "ab": 300}
    streams = {}
    for group, count in groups.items():
        opened = await asyncio.gather(*(gw.open("/sse/%s/%d" % (group, i)) for i in range(count)))
        streams[group] = opened
    assert gw.gateway.registry.subscribers("a") == 700
    assert gw.gateway.registry.subscribers("b") == 600

    for i in range(10):
        await publish(gw, "a", "a%d" % i)
        await publish(gw, "b", "b%d" % i)

    expected = {
        "a": ["a%d" % i for i in range(10)],
        "b": ["b%d" % i for i in range(10)],
        "ab": [x for i in range(10) for x in ("a%d" % i, "b%d" % i)],
    }
    for group, members in streams.items():
        want = expected[group]
        await asyncio.gather(*(s.wait_events(len(want), timeout=20) for s in members))
        for stream in members:
            assert [e.data for e in stream.events] == want
    # Every event got one id, the same for every subscriber, increasing in publish order.
    ids = [int(e.last_event_id) for e in streams["ab"][0].events]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert [e.last_event_id for e in streams["a"][17].events] == [
        e.last_event_id for e in streams["ab"][3].events if e.data.startswith("a")
    ]


@pytest.mark.gen_test(timeout=10)
async def test_channel_event_has_gateway_id_name_and_multiline_data(gateway, backend):
    subscribe(backend, lambda url: ["news"])
    gw = gateway()
    stream = await gw.open()
    await gw.send({"channel": "news", "event": {"name": "story", "data": "l1\nl2", "id": "mine"}})
    (event,) = await stream.wait_events(1)
    assert (event.type, event.data) == ("story", "l1\nl2")
    assert event.last_event_id.isdigit()
    assert bytes(stream.raw) == b"id: %s\nevent: story\ndata: l1\ndata: l2\n\n" % (
        event.last_event_id.encode()
    )


@pytest.mark.gen_test(timeout=10)
async def test_late_subscriber_gets_only_later_events(gateway, backend):
    subscribe(backend, lambda url: ["news"])
    gw = gateway()
    early = await gw.open()
    await publish(gw, "news", "first")
    await early.wait_events(1)
    late = await gw.open()
    await publish(gw, "news", "second")
    await early.wait_events(2)
    await late.wait_events(1)
    assert [e.data for e in late.events] == ["second"]
    assert [e.data for e in early.events] == ["first", "second"]


@pytest.mark.gen_test(timeout=10)
async def test_stream_without_channels_gets_no_channel_events(gateway, backend):
    gw = gateway()
    plain = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    await publish(gw, "news", "not for you")
    await gw.send({"token": connect.token, "event": {"data": "for you"}})
    events = await plain.wait_events(1)
    assert [e.data for e in events] == ["for you"]


@pytest.mark.gen_test(timeout=10)
async def test_bindings_alias_subscribes_like_channels(gateway, backend):
    backend.connect_answer = Answer(body=b'{"bindings": ["room.1"]}')
    gw = gateway()
    stream = await gw.open()
    await publish(gw, "room.1", "hello")
    assert [e.data for e in await stream.wait_events(1)] == ["hello"]


@pytest.mark.gen_test(timeout=30)
async def test_reconnect_with_last_event_id_replays_without_loss_or_duplicate(gateway, backend):
    subscribe(backend, lambda url: ["ticker"])
    gw = gateway()
    total = 300
    published = asyncio.Event()

    async def publisher():
        for i in range(total):
            await publish(gw, "ticker", str(i))
        published.set()

    first = await gw.open()
    task = asyncio.ensure_future(publisher())
    await first.wait_events(20)
    await first.aclose()  # the client drops mid-flow; events keep being published
    received = [e.data for e in first.events]
    last_id = first.events[-1].last_event_id

    second = await gw.open(headers={"Last-Event-ID": last_id})
    await published.wait()
    await task
    await second.wait_until(lambda s: s.events and s.events[-1].data == str(total - 1), 20)
    received += [e.data for e in second.events]
    assert received == [str(i) for i in range(total)]
    # The backend still sees the header, so it can replay its own token events.
    connects = backend.of("connect")
    assert connects[-1].body["request"]["headers"]["last-event-id"] == last_id


@pytest.mark.gen_test(timeout=10)
async def test_last_event_id_query_parameter_replays_on_first_connection(gateway, backend):
    subscribe(backend, lambda url: ["news"])
    gw = gateway()
    watcher = await gw.open()
    for word in ("one", "two", "three"):
        await publish(gw, "news", word)
    events = await watcher.wait_events(3)
    stream = await gw.open("/sse/x?lastEventId=%s" % events[0].last_event_id)
    replayed = await stream.wait_events(2)
    assert [e.data for e in replayed] == ["two", "three"]


@pytest.mark.gen_test(timeout=10)
async def test_replay_comes_after_buffered_sends_and_before_live_events(gateway, backend):
    subscribe(backend, lambda url: ["news"])
    gw = gateway()
    watcher = await gw.open()
    await publish(gw, "news", "old-1")
    await publish(gw, "news", "old-2")
    (first, _) = await watcher.wait_events(2)

    async def buffered_send(body):
        status, answer = await gw.send({"token": body["token"], "event": {"data": "buffered"}})
        assert answer == {"status": "buffered"}

    backend.on_connect = buffered_send
    stream = await gw.open(headers={"Last-Event-ID": first.last_event_id})
    await publish(gw, "news", "live")
    events = await stream.wait_events(3)
    assert [e.data for e in events] == ["buffered", "old-2", "live"]


@pytest.mark.parametrize("last_id", ["garbage", "12", "99999999999999999999", ""])
@pytest.mark.gen_test(timeout=10)
async def test_unknown_last_event_id_starts_with_history_gap(gateway, backend, last_id):
    subscribe(backend, lambda url: ["news"])
    gw = gateway()
    stream = await gw.open(headers={"Last-Event-ID": last_id})
    await publish(gw, "news", "live")
    events = await stream.wait_events(2)
    assert (events[0].type, events[0].data) == ("history_gap", last_id)
    assert [e.data for e in events[1:]] == ["live"]


@pytest.mark.gen_test(timeout=10)
async def test_id_older_than_history_gives_gap_and_no_replay(gateway, backend):
    subscribe(backend, lambda url: ["news"])
    gw = gateway(history_size=3)
    watcher = await gw.open()
    for i in range(5):
        await publish(gw, "news", str(i))
    events = await watcher.wait_events(5)
    stream = await gw.open(headers={"Last-Event-ID": events[0].last_event_id})
    await publish(gw, "news", "live")
    got = await stream.wait_events(2)
    assert (got[0].type, got[0].data) == ("history_gap", events[0].last_event_id)
    assert [e.data for e in got[1:]] == ["live"]
    # An id still inside the window replays normally.
    fresh = await gw.open(headers={"Last-Event-ID": events[3].last_event_id})
    assert [e.data for e in await fresh.wait_events(2)] == ["4", "live"]


@pytest.mark.gen_test(timeout=10)
async def test_expired_history_gives_gap(gateway, backend):
    subscribe(backend, lambda url: ["news"])
    gw = gateway(history_ttl_seconds=0.0)
    watcher = await gw.open()
    await publish(gw, "news", "a")
    await publish(gw, "news", "b")
    events = await watcher.wait_events(2)
    stream = await gw.open(headers={"Last-Event-ID": events[0].last_event_id})
    await publish(gw, "news", "live")
    got = await stream.wait_events(2)
    assert [e.type for e in got] == ["history_gap", "message"]


@pytest.mark.gen_test(timeout=10)
async def test_history_off_means_no_replay_and_no_gap(gateway, backend):
    subscribe(backend, lambda url: ["news"])
    gw = gateway(history_size=0)
    watcher = await gw.open()
    await publish(gw, "news", "a")
    (event,) = await watcher.wait_events(1)
    stream = await gw.open(headers={"Last-Event-ID": event.last_event_id})
    await publish(gw, "news", "live")
    assert [(e.type, e.data) for e in await stream.wait_events(1)] == [("message", "live")]


@pytest.mark.gen_test(timeout=10)
async def test_connections_endpoint_lists_channels(gateway, backend):
    subscribe(backend, lambda url: ["x", "y"])
    gw = gateway()
    await gw.open("/sse/one?secret=1")
    response = await gw.get("/internal/connections", internal=True)
    body = json.loads(response.body)
    assert body["count"] == 1
    (conn,) = body["connections"]
    assert conn["url"] == "/sse/one?secret=1"
    assert conn["channels"] == ["x", "y"]
    assert conn["connected_at"].endswith("Z")
