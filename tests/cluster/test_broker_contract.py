"""The broker contract: one suite that every broker passes (the in-process one and Redis).

A broker moves encoded events and keeps history; it calls back a handler for each publication
and each routed send (``tornado_sse.broker``). ``pair`` gives two brokers of one cluster: for the
in-process broker both are the same object (a single process is the whole cluster), for Redis
two brokers sharing a real redis-server. A third broker adds itself to ``BROKERS``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_until
from tornado_sse.broker import Broker, LocalBroker
from tornado_sse.errors import BufferFull, GatewayError, TokenNotFound, TooManyStreams
from tornado_sse.history import Retention, first_id
from tornado_sse.presence import presence_event
from tornado_sse.protocol import compact_json

BROKERS = ["local", "redis"]


class RecordingHandler:
    """A :class:`~tornado_sse.broker.BrokerHandler` that records what its broker hands it."""

    def __init__(self) -> None:
        self.publications: list[tuple[str, int, bytes]] = []
        self.sends: list[tuple[str, bytes | None, bool]] = []
        self.gaps: list[tuple[str, int]] = []
        self.lost: list[tuple[str, bytes]] = []
        self.fenced = 0
        self.answer: Callable[[str], str] = lambda token: "ok"
        self.questions: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    def on_publication(self, channel: str, event_id: int, tail: bytes) -> None:
        self.publications.append((channel, event_id, tail))
        self._arrived.set()

    def on_send(self, token: str, frame: bytes | None, close: bool) -> str:
        self.sends.append((token, frame, close))
        return self.answer(token)

    def on_gap(self, channel: str, since: int) -> None:
        self.gaps.append((channel, since))

    def on_lost(self, streams: list[tuple[str, bytes]]) -> None:
        self.lost.extend(streams)

    def on_fenced(self) -> None:
        self.fenced += 1

    async def on_ask(self, question: dict[str, Any]) -> dict[str, Any]:
        self.questions.append(question)
        return {"streams": 1, "echo": question}

    async def wait_publications(self, count: int, timeout: float = 5.0) -> None:
        """Until ``count`` publications have arrived (bounded by ``timeout``)."""
        await wait_until(lambda: len(self.publications) >= count, self._arrived, timeout)


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll ``condition`` (bounded) for state that has no event to await."""
    deadline = time.monotonic() + timeout
    while not await _value(condition()):
        assert time.monotonic() < deadline, "condition not met in %.1f s" % timeout
        await asyncio.sleep(0.02)


async def _value(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) else result


Pair = tuple[Broker, RecordingHandler, Broker, RecordingHandler]


@pytest.fixture(params=BROKERS)
def make_pair(request: Any, io_loop: Any) -> Iterator[Callable[..., Any]]:
    """A factory: ``await make_pair(history_size=..., history_ttl=...)`` gives a started
    :data:`Pair`; everything is closed after the test."""
    made: list[Broker] = []

    async def make(history_size: int = 100, history_ttl: float = 60.0) -> Pair:
        if request.param == "local":
            broker = LocalBroker(Retention(size=history_size, ttl=history_ttl))
            handler = RecordingHandler()
            broker.start(handler)
            made.append(broker)
            return broker, handler, broker, handler
        from tornado_sse.cluster.broker import RedisBroker

        server = request.getfixturevalue("redis_server")
        pair: list[Any] = []
        for _ in range(2):
            redis_broker = RedisBroker(
                server.url, retention=Retention(size=history_size, ttl=history_ttl)
            )
            handler = RecordingHandler()
            redis_broker.start(handler)
            made.append(redis_broker)
            pair += [redis_broker, handler]
        await until(lambda: all(b.ready for b in made))
        return pair[0], pair[1], pair[2], pair[3]

    yield make

    async def close_all() -> None:
        for broker in made:
            await broker.close()

    io_loop.run_sync(close_all)


@pytest.mark.gen_test(timeout=20)
async def test_publications_reach_every_instance_in_order_with_increasing_ids(make_pair):
    started = first_id()
    a, handler_a, b, handler_b = await make_pair()
    for broker in (a, b):
        await broker.subscribe({"room"})
    ids = []
    for i in range(6):
        publisher = a if i % 2 == 0 else b
        ids.append(await publisher.publish("room", b"data: %d\n\n" % i))
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert started <= ids[0] <= first_id()  # ids start at the time in microseconds
    for handler in (handler_a, handler_b):
        await handler.wait_publications(6)
        assert handler.publications == [
            ("room", event_id, b"data: %d\n\n" % i) for i, event_id in enumerate(ids)
        ]


@pytest.mark.gen_test(timeout=20)
async def test_history_holds_the_channels_events_after_an_id(make_pair):
    a, _, b, _ = await make_pair()
    x1 = await a.publish("x", b"x1")
    y1 = await b.publish("y", b"y1")
    x2 = await b.publish("x", b"x2")
    window = await a.history({"x"}, x1 - 1)
    assert window.replay(x1 - 1).events == ((x1, b"x1"), (x2, b"x2"))
    assert (await b.history({"x", "y"}, x1)).replay(x1).events == ((y1, b"y1"), (x2, b"x2"))
    assert (await a.history({"y"}, x2)).replay(x2).events == ()
    assert not (await a.history({"y"}, x2)).replay(x2).gap


@pytest.mark.gen_test(timeout=20)
async def test_history_gives_a_gap_for_ids_out_of_the_window_or_never_issued(make_pair):
    a, _, b, _ = await make_pair(history_size=3)
    ids = [await a.publish("x", b"e%d" % i) for i in range(5)]
    assert (await b.history({"x"}, ids[0])).replay(ids[0]).gap  # ids[1] fell out
    kept = (await b.history({"x"}, ids[1])).replay(ids[1])
    assert kept.events == ((ids[2], b"e2"), (ids[3], b"e3"), (ids[4], b"e4"))
    assert (await a.history({"x"}, ids[4] + 1)).replay(ids[4] + 1).gap  # never issued


@pytest.mark.gen_test(timeout=20)
async def test_history_forgets_events_older_than_the_ttl(make_pair):
    a, _, b, _ = await make_pair(history_ttl=0.2)
    event_id = await a.publish("x", b"e")
    assert (await b.history({"x"}, event_id - 1)).replay(event_id - 1).events == ((event_id, b"e"),)

    async def expired() -> bool:
        return (await b.history({"x"}, event_id - 1)).replay(event_id - 1).gap

    await until(expired)


@pytest.mark.gen_test(timeout=20)
async def test_a_send_is_routed_to_the_instance_holding_the_token(make_pair):
    a, handler_a, b, handler_b = await make_pair()
    await a.register("tok", b"record of tok")
    assert await b.route("tok", b"data: hi\n\n", False) == "ok"
    assert handler_a.sends == [("tok", b"data: hi\n\n", False)]
    handler_a.answer = lambda token: "buffered"
    assert await b.route("tok", None, True) == "buffered"
    assert handler_a.sends[-1] == ("tok", None, True)
    if b is not a:
        assert handler_b.sends == []


@pytest.mark.gen_test(timeout=20)
async def test_the_holders_error_comes_back_with_its_status_and_code(make_pair):
    a, handler_a, b, _ = await make_pair()
    await a.register("tok", b"record of tok")

    def refuse(token: str) -> str:
        raise BufferFull("3 events are already queued for this connecting stream")

    handler_a.answer = refuse
    with pytest.raises(GatewayError) as raised:
        await b.route("tok", b"data: x\n\n", False)
    assert (raised.value.status, raised.value.code) == (429, "BUFFER_FULL")


@pytest.mark.gen_test(timeout=20)
async def test_unknown_and_unregistered_tokens_are_not_found(make_pair):
    a, handler_a, b, _ = await make_pair()
    with pytest.raises(TokenNotFound):
        await b.route("nobody", b"data: x\n\n", False)
    await a.register("tok", b"record of tok")
    a.unregister("tok")

    async def gone() -> bool:
        try:
            await b.route("tok", None, False)
        except TokenNotFound:
            return True
        return False

    await until(gone)


@pytest.mark.parametrize("make_pair", ["redis"], indirect=True)
@pytest.mark.gen_test(timeout=20)
async def test_an_instance_receives_only_the_channels_it_subscribes_to(make_pair):
    a, handler_a, b, handler_b = await make_pair()
    await a.subscribe({"mine"})
    await b.subscribe({"theirs"})
    await b.publish("mine", b"1")
    await a.publish("theirs", b"2")
    await handler_a.wait_publications(1)
    await handler_b.wait_publications(1)
    assert [p[0] for p in handler_a.publications] == ["mine"]
    assert [p[0] for p in handler_b.publications] == ["theirs"]


@pytest.mark.parametrize("make_pair", ["redis"], indirect=True)
@pytest.mark.gen_test(timeout=20)
async def test_subscriptions_are_counted_and_dropped_after_the_last_one(make_pair):
    a, handler_a, b, _ = await make_pair()
    await a.subscribe({"room"})
    await a.subscribe({"room"})
    a.unsubscribe({"room"})
    await b.publish("room", b"still")
    await handler_a.wait_publications(1)  # one subscriber is left
    a.unsubscribe({"room"})
    await until(lambda: "room" not in a.channels.subscribed)
    marker = await b.publish("room", b"gone")
    await a.subscribe({"other"})
    await b.publish("other", b"after")
    await handler_a.wait_publications(2)
    assert [p[2] for p in handler_a.publications] == [b"still", b"after"]
    assert all(p[1] != marker for p in handler_a.publications)


# -- users and presence ------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_presence_counts_streams_per_user_with_info_and_anonymous_ones(make_pair):
    a, _, b, _ = await make_pair()
    await a.enter("ann", compact_json({"name": "Ann"}), ["room"], announce=(), limit=0)
    await b.enter("ann", None, ["room", "other"], announce=(), limit=0)
    await b.enter("bob", compact_json({"name": "Bob"}), ["room"], announce=(), limit=0)
    await a.enter(None, None, ["room"], announce=(), limit=0)
    snapshot = await b.presence("room", 5.0)
    assert snapshot.to_json("room") == {
        "channel": "room",
        "users": [
            {"user": "ann", "info": {"name": "Ann"}, "streams": 2},
            {"user": "bob", "info": {"name": "Bob"}, "streams": 1},
        ],
        "anonymous": 1,
    }
    await a.exit("ann", ["room"], announce=(), stream=True)
    await a.exit(None, ["room"], announce=(), stream=True)
    await b.exit("bob", ["room"], announce=(), stream=True)
    assert (await a.presence("room", 5.0)).to_json("room")["users"] == [
        {"user": "ann", "info": {"name": "Ann"}, "streams": 1}
    ]
    assert (await a.presence("room", 5.0)).anonymous == 0


@pytest.mark.gen_test(timeout=20)
async def test_presence_encodes_any_user_id_and_info_and_lists_users_by_id(make_pair):
    a, _, b, _ = await make_pair()
    users = ["b", 'a"q', "a\\z", "a/b", "a", "a!"]
    for n, user in enumerate(users):
        await (a if n % 2 else b).enter(
            user, compact_json({"n": n, "name": "Zoë"}), ["room"], announce=(), limit=0
        )
    await a.enter("a", None, ["room"], announce=(), limit=0)  # no info: the known one stays
    body = json.loads((await b.presence("room", 5.0)).body("room"))
    assert body["users"] == [
        {
            "user": user,
            "info": {"n": users.index(user), "name": "Zoë"},
            "streams": 1 + (user == "a"),
        }
        for user in sorted(users)
    ]
    await b.exit("a", ["room"], announce=(), stream=True)
    snapshot = await a.presence("room", 5.0)
    assert [(m.user, m.streams) for m in snapshot.users] == [(u, 1) for u in sorted(users)]


@pytest.mark.gen_test(timeout=20)
async def test_presence_is_written_again_when_redis_lost_it(redis_server):
    from tornado_sse.cluster.broker import RedisBroker

    broker = RedisBroker(redis_server.url, retention=Retention(size=10, ttl=60.0))
    broker.start(RecordingHandler())
    try:
        await until(lambda: broker.ready)
        await broker.enter("ann", compact_json({"name": "Ann"}), ["room"], announce=(), limit=0)
        await broker.enter("ann", None, ["room"], announce=(), limit=0)
        await broker.enter(None, None, ["room"], announce=(), limit=0)
        client = aioredis.from_url(redis_server.url)
        await client.flushall()
        await client.aclose()
        await broker.users._restore()  # what the link runs when it is back
        snapshot = await broker.presence("room", 5.0)
        # The counts come back; the info lived only in Redis.
        assert snapshot.to_json("room")["users"] == [{"user": "ann", "info": None, "streams": 2}]
        assert snapshot.anonymous == 1
    finally:
        await broker.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_dead_instances_streams_leave_the_listing_and_their_leaves_are_decided(
    redis_server,
):
    from tornado_sse.cluster.broker import RedisBroker

    brokers = [RedisBroker(redis_server.url, retention=Retention(size=10, ttl=60.0)) for _ in "ab"]
    for broker in brokers:
        broker.start(RecordingHandler())
    a, b = brokers
    try:
        await until(lambda: a.ready and b.ready)
        await a.enter("ann", compact_json({"n": 1}), ["room"], announce=["room"], limit=0)
        await b.enter("ann", None, ["room"], announce=["room"], limit=0)
        await a.enter("bob", compact_json({"n": 2}), ["room"], announce=["room"], limit=0)
        await a.enter(None, None, ["room"], announce=(), limit=0)
        await b.enter(None, None, ["room"], announce=(), limit=0)
        # a dies as a crash leaves it: its presence counts stay, its instance key is gone, and
        # it is still a member of the instances (a graceful close would have left them).
        await a.close()
        client = aioredis.from_url(redis_server.url)
        await client.delete("tornado_sse:instance:" + a.id)
        await client.sadd("tornado_sse:instances", a.id)
        await client.aclose()
        # b finds a dead on its next look for dead instances (every few seconds).
        await until(lambda: a.id in b.directory.dead, timeout=12)
        first = await b.presence("room", 0.05)
        assert first.to_json("room")["users"] == [{"user": "ann", "info": {"n": 1}, "streams": 1}]
        assert first.anonymous == 1 and first.leaves == ()  # bob's leave waits for the delay
        leaves: list[Any] = []

        async def decided() -> bool:
            leaves.extend((await b.presence("room", 0.05)).leaves)
            return bool(leaves)

        await until(decided)
        assert [(x.user, x.info) for x in leaves] == [("bob", {"n": 2})]
        assert (await b.presence("room", 0.05)).leaves == ()  # decided once
    finally:
        for broker in brokers:
            await broker.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_join_is_decided_once_for_two_streams_on_two_instances(make_pair):
    a, _, b, _ = await make_pair()
    first = await a.enter("ann", None, ["room", "quiet"], announce=["room"], limit=0)
    second = await b.enter("ann", None, ["room", "quiet"], announce=["room"], limit=0)
    assert (first.joins, second.joins) == ({"room": 0}, {})  # no join event given: none published
    assert await a.exit("ann", ["room", "quiet"], announce=["room"], stream=True) == []
    assert await b.exit("ann", ["room", "quiet"], announce=["room"], stream=True) == ["room"]


@pytest.mark.gen_test(timeout=20)
async def test_a_new_stream_of_a_user_is_given_their_sends_since_its_connect_began(make_pair):
    a, _, b, _ = await make_pair()
    old, _ = await a.send_user("ann", b"data: old\n\n", False, keep=60.0)
    await asyncio.sleep(0.05)  # the stream below began connecting after "old"
    began = time.monotonic()
    first, answers = await a.send_user("ann", b"data: one\n\n", False, keep=60.0)
    assert answers == []  # nobody holds ann's streams yet
    await b.send_user("bob", b"data: bob's\n\n", False, keep=60.0)
    second, _ = await b.send_user(ODD_USER, None, True, keep=60.0)
    closing = time.monotonic()
    third, _ = await b.send_user("ann", None, True, keep=60.0)
    closed = time.monotonic()
    assert old < first < third
    entering = time.monotonic()
    entered = await b.enter("ann", None, ["room"], announce=(), limit=0, began=began)
    slack = time.monotonic() - entering + 0.005  # Redis times come through the enter call
    assert [(s.mark, s.frame, s.close) for s in entered.sends] == [
        (first, b"data: one\n\n", False),
        (third, None, True),
    ]
    # Each send with when it was made, on this process's clock.
    assert began - slack <= entered.sends[0].at <= entered.sends[1].at
    assert closing - slack <= entered.sends[1].at <= closed + slack
    assert entered.through == third
    await asyncio.sleep(0.05)  # the stream below began connecting after the close to it
    now = time.monotonic()
    counted = await a.enter(ODD_USER, None, [], announce=(), limit=0, began=now)
    assert counted.sends == () and counted.through >= second  # sent before it began
    # Not a new stream, or anonymous: no sends are read.
    assert (await a.enter("ann", None, ["more"], announce=(), limit=None, began=began)).sends == ()
    assert (await a.enter(None, None, ["room"], announce=(), limit=0, began=began)).sends == ()
    # Now b holds a stream of ann's: a send from a asks b to deliver it, with its mark.
    mark, answers = await a.send_user("ann", b"data: two\n\n", False, keep=60.0)
    question = {"op": "send", "user": "ann", "frame": "data: two\n\n", "close": False}
    asked = [{"streams": 1, "echo": {**question, "mark": list(mark)}}]
    assert mark > third and answers == ([] if a is b else asked)


@pytest.mark.gen_test(timeout=20)
async def test_a_user_send_whose_reply_redis_lost_is_logged_once(redis_server):
    from tornado_sse.cluster.broker import RedisBroker

    proxy = CuttableProxy(redis_server.port)
    await proxy.start()
    broker = RedisBroker(proxy.url, retention=Retention())
    broker.start(RecordingHandler())
    try:
        await until(lambda: broker.ready)
        await broker.send_user("bob", None, False, keep=60.0)  # Redis has the script now
        began = time.monotonic()
        proxy.lose_reply_to(b"data: once")
        mark, _ = await broker.send_user("ann", b"data: once\n\n", False, keep=60.0)
        assert proxy.lost == 1  # the command ran, and ran again on a fresh connection
        entered = await broker.enter("ann", None, [], announce=(), limit=0, began=began)
        assert [(s.mark, s.frame, s.close) for s in entered.sends] == [
            (mark, b"data: once\n\n", False)
        ]
    finally:
        await broker.close()
        await proxy.cut()


# A user id and an info that JSON must escape (quotes, backslashes, non-ASCII).
ODD_USER = 'a"b\\c'
ODD_INFO = {"name": 'Ann "Ä" \\ ö', "tags": [1, None, "x"]}


@pytest.mark.gen_test(timeout=20)
async def test_the_broker_publishes_the_joins_and_leaves_it_decides(make_pair):
    a, handler_a, b, handler_b = await make_pair()
    for broker in (a, b):
        await broker.subscribe({"room"})
    join = presence_event("presence_join", ODD_USER, compact_json(ODD_INFO))
    entered = await a.enter(
        ODD_USER, compact_json(ODD_INFO), ["room", "quiet"], announce=["room"], limit=0, join=join
    )
    joins = entered.joins
    assert list(joins) == ["room"] and joins["room"] > 0
    again = await b.enter(ODD_USER, None, ["room"], announce=["room"], limit=0, join=join)
    assert again.joins == {}
    await a.exit(ODD_USER, ["room", "quiet"], announce=["room"], stream=True)
    assert await b.exit(ODD_USER, ["room"], announce=["room"], stream=True) == ["room"]
    leaves: list[Any] = []

    async def settled() -> bool:
        leaves.extend(await b.settle_leaves([("room", ODD_USER)], 0.05))
        return bool(leaves)

    await until(settled)
    assert [(x.channel, x.user, x.info) for x in leaves] == [("room", ODD_USER, ODD_INFO)]
    assert await a.settle_leaves([("room", ODD_USER)], 0.05) == []  # decided already
    leave = presence_event("presence_leave", ODD_USER, compact_json(ODD_INFO))
    for handler in (handler_a, handler_b):
        await handler.wait_publications(2)
        assert [(c, tail) for c, _, tail in handler.publications] == [
            ("room", join),
            ("room", leave),
        ]
        assert handler.publications[0][1] == joins["room"]
    since = joins["room"] - 1
    window = await a.history({"room"}, since)
    assert [tail for _, tail in window.replay(since).events] == [join, leave]  # kept


@pytest.mark.gen_test(timeout=20)
async def test_the_leaves_due_together_are_decided_in_one_call_each_once(make_pair):
    a, handler_a, b, _ = await make_pair()
    await a.subscribe({"room.1", "room.2"})
    users = ["u%d" % i for i in range(5)]
    for n, user in enumerate(users):
        await b.enter(
            user,
            compact_json({"n": n}),
            ["room.1", "room.2"],
            announce=["room.1", "room.2"],
            limit=0,
        )
    for user in users[:4]:  # the last one stays
        await b.exit(user, ["room.1", "room.2"], announce=["room.1", "room.2"], stream=True)
    due = [(c, u) for u in users for c in ("room.1", "room.2")]
    await asyncio.sleep(0.1)  # past the delay (0.05) on every clock
    leaves = await a.settle_leaves(due, 0.05)
    assert sorted((x.channel, x.user, x.info) for x in leaves) == sorted(
        (c, u, {"n": n}) for n, u in enumerate(users[:4]) for c in ("room.1", "room.2")
    )
    assert await b.settle_leaves(due, 0.05) == []
    await handler_a.wait_publications(8)
    assert sorted((c, tail) for c, _, tail in handler_a.publications) == sorted(
        (c, presence_event("presence_leave", u, compact_json({"n": n})))
        for n, u in enumerate(users[:4])
        for c in ("room.1", "room.2")
    )


@pytest.mark.gen_test(timeout=20)
async def test_a_leave_is_due_only_after_the_delay_and_only_once(make_pair):
    a, _, b, _ = await make_pair()
    await a.enter("ann", compact_json({"n": 1}), ["room"], announce=["room"], limit=0)
    assert await a.exit("ann", ["room"], announce=["room"], stream=True) == ["room"]
    assert await b.settle_leaves([("room", "ann")], 0.3) == []  # too early
    leaves: list[Any] = []

    async def settled() -> bool:
        for broker in (a, b):
            leaves.extend(await broker.settle_leaves([("room", "ann")], 0.3))
        return bool(leaves)

    await until(settled)
    assert [(x.channel, x.user, x.info) for x in leaves] == [("room", "ann", {"n": 1})]
    assert await a.settle_leaves([("room", "ann")], 0.3) == []  # decided already
    assert (await b.enter("ann", None, ["room"], announce=["room"], limit=0)).joins == {"room": 0}


@pytest.mark.gen_test(timeout=20)
async def test_coming_back_within_the_delay_is_neither_a_leave_nor_a_join(make_pair):
    a, _, b, _ = await make_pair()
    await a.enter("ann", None, ["room"], announce=["room"], limit=0)
    await a.exit("ann", ["room"], announce=["room"], stream=True)
    assert (await b.enter("ann", None, ["room"], announce=["room"], limit=0)).joins == {}
    await asyncio.sleep(0.1)  # the delay (0.05) has passed: the user is still there
    assert await a.settle_leaves([("room", "ann")], 0.05) == []


@pytest.mark.gen_test(timeout=20)
async def test_the_per_user_limit_counts_streams_on_every_instance(make_pair):
    a, _, b, _ = await make_pair()
    await a.enter("ann", None, [], announce=(), limit=2)
    await b.enter("ann", None, ["room"], announce=(), limit=2)
    with pytest.raises(TooManyStreams):
        await a.enter("ann", None, ["room"], announce=(), limit=2)
    assert (await a.presence("room", 5.0)).users[0].streams == 1  # the refused one not counted
    await a.enter("ann", None, ["room"], announce=(), limit=None)  # a live subscription
    await b.exit("ann", ["room"], announce=(), stream=True)
    await a.enter("ann", None, [], announce=(), limit=2)


@pytest.mark.gen_test(timeout=20)
async def test_questions_reach_the_other_instances_holding_a_users_streams(make_pair):
    a, handler_a, b, handler_b = await make_pair()
    await a.enter("ann", None, [], announce=(), limit=0)
    answers = await b.ask_user("ann", {"op": "send", "user": "ann"})
    if a is b:  # a single process: the gateway reaches every stream itself
        assert answers == [] and handler_a.questions == []
    else:
        assert answers == [{"streams": 1, "echo": {"op": "send", "user": "ann"}}]
        assert handler_b.questions == []
    assert await a.ask_user("nobody", {"op": "send"}) == []


@pytest.mark.gen_test(timeout=20)
async def test_a_question_about_a_token_reaches_its_holder(make_pair):
    a, handler_a, b, _ = await make_pair()
    await a.register("tok", b"record of tok")
    answer = await b.ask_token("tok", {"op": "subscribe", "token": "tok"})
    assert answer["streams"] == 1 and handler_a.questions[-1]["token"] == "tok"
    with pytest.raises(TokenNotFound):
        await b.ask_token("nobody", {"op": "subscribe"})
