"""The registry's decisions without HTTP: queueing, fan-out, slow consumers, exactly-once ends."""

from __future__ import annotations

import time

import pytest

from tornado_sse.connection import Connection, State
from tornado_sse.errors import BufferFull, CloseReason, TokenNotFound
from tornado_sse.history import (
    ENTRY_OVERHEAD,
    History,
    Retention,
    id_at,
    parse_event_id,
    parse_rules,
)
from tornado_sse.protocol import RequestSnapshot
from tornado_sse.registry import Registry
from tornado_sse.user_sends import UserSend


class FakeWriter:
    """Records frames; ``backlog`` plays the bytes the socket has not taken."""

    def __init__(self, backlog: int = 0) -> None:
        self.frames: list[bytes] = []
        self.backlog = backlog
        self.ended = False
        self.aborted = False

    def write_frame(self, frame: bytes) -> int:
        self.frames.append(frame)
        return self.backlog

    @property
    def queued(self) -> int:
        return self.backlog

    def end(self) -> None:
        self.ended = True

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
def ended() -> list[tuple[str, str | None, str | None, bool]]:
    return []


@pytest.fixture
def registry(ended) -> Registry:
    def record(conn: Connection) -> None:
        ended.append((conn.token, conn.close_reason, conn.close_detail, conn.backend_may_know))

    return Registry(max_pending_events=2, max_queued_bytes=100, on_ended=record)


def connection(registry: Registry, token: str = "t", channels: tuple[str, ...] = ()) -> Connection:
    conn = Connection(token, RequestSnapshot("/sse/x", {}, "rid"))
    conn.channels = channels
    registry.add(conn)
    return conn


def test_sends_during_connect_are_queued_in_order_and_written_on_open(registry):
    conn = connection(registry)
    assert registry.send("t", b"one", False) == "buffered"
    assert registry.send("t", None, False) == "buffered"  # {token} alone queues nothing
    assert registry.send("t", b"two", False) == "buffered"
    writer = FakeWriter()
    assert registry.open(conn, writer)
    assert writer.frames == [b"one", b"two"]
    assert registry.send("t", b"three", False) == "ok"
    assert writer.frames[-1] == b"three"


def test_pending_queue_is_bounded(registry):
    connection(registry)
    registry.send("t", b"1", False)
    registry.send("t", b"2", False)
    with pytest.raises(BufferFull):
        registry.send("t", b"3", False)


def test_buffered_close_ends_the_stream_right_after_the_queued_events(registry, ended):
    conn = connection(registry)
    registry.send("t", b"last", True)
    with pytest.raises(TokenNotFound):
        registry.send("t", b"after close", False)
    writer = FakeWriter()
    assert not registry.open(conn, writer)
    assert writer.frames == [b"last"] and writer.ended
    assert ended == [("t", "server_closed", None, True)]


def test_a_stream_being_counted_gets_its_users_sends_once_each_in_mark_order():
    registry = Registry(max_pending_events=10)
    conn = connection(registry)
    conn.user = "ann"
    registry.bind_user(conn)
    # Delivered while it is counted: held. (0, 1) was sent before its connect began, (0, 3)
    # is in the log the count reads too, (0, 5) came after that read.
    assert registry.send_user("ann", b"before", False, (0, 1)) == 1
    assert registry.send_user("ann", b"logged", False, (0, 3)) == 1
    assert registry.send_user("ann", b"after", False, (0, 5)) == 1
    logged = (UserSend((0, 2), b"first", False, 1.0), UserSend((0, 3), b"logged", False, 1.0))
    registry.catch_up(conn, logged, through=(0, 4))
    # Once counted, a send the log gave is skipped; a later one is queued.
    assert registry.send_user("ann", b"logged", False, (0, 3)) == 0
    assert registry.send_user("ann", b"later", False, (0, 6)) == 1
    writer = FakeWriter()
    assert registry.open(conn, writer)
    assert writer.frames == [b"first", b"logged", b"after", b"later"]


def test_user_sends_are_queued_among_token_sends_in_the_order_they_were_made(registry, ended):
    # registry: at most 2 events queued while connecting.
    conn = connection(registry)
    conn.user = "ann"
    registry.bind_user(conn)
    made = time.monotonic() - 0.5  # the user send below was made before the token send
    assert registry.send("t", b"token", False) == "buffered"
    registry.catch_up(conn, (UserSend((0, 1), b"user", False, made),), through=(0, 1))
    writer = FakeWriter()
    assert registry.open(conn, writer)
    assert writer.frames == [b"user", b"token"]


def test_a_user_close_made_before_queued_token_sends_ends_the_stream_after_them(registry, ended):
    conn = connection(registry)
    conn.user = "ann"
    registry.bind_user(conn)
    made = time.monotonic() - 0.5  # the close was made before the token send
    assert registry.send("t", b"accepted", False) == "buffered"
    logged = (
        UserSend((0, 1), b"bye", True, made),
        UserSend((0, 2), b"after the close", False, made),
    )
    registry.catch_up(conn, logged, through=(0, 2))
    with pytest.raises(TokenNotFound):  # closing: a token send now is refused
        registry.send("t", b"later", False)
    writer = FakeWriter()
    assert not registry.open(conn, writer)
    # The event accepted for the token is written, then the close ends the stream.
    assert writer.frames == [b"bye", b"accepted"] and writer.ended
    assert ended == [("t", "server_closed", None, True)]


def test_a_user_close_from_the_log_ends_the_stream_when_it_opens(registry, ended):
    conn = connection(registry)
    conn.user = "ann"
    registry.bind_user(conn)
    logged = (UserSend((0, 1), b"bye", True, 1.0), UserSend((0, 2), b"too late", False, 1.0))
    registry.catch_up(conn, logged, through=(0, 2))
    writer = FakeWriter()
    assert not registry.open(conn, writer)
    assert writer.frames == [b"bye"] and writer.ended
    assert ended == [("t", "server_closed", None, True)]


def test_a_user_close_whose_event_has_no_room_still_ends_the_stream(registry, ended):
    # registry: at most 2 events queued while connecting.
    conn = connection(registry)
    conn.user = "ann"
    registry.bind_user(conn)
    assert registry.send("t", b"one", False) == registry.send("t", b"two", False) == "buffered"
    bye = UserSend((0, 1), b"bye", True, time.monotonic())  # made after the two sends
    registry.catch_up(conn, (bye,), through=(0, 1))
    other = connection(registry, "u")
    other.user = "bob"
    registry.bind_user(other)
    registry.catch_up(other, (), through=(0, 0))
    registry.send("u", b"one", False)
    registry.send("u", b"two", False)
    assert registry.send_user("bob", b"bye", True, (0, 2)) == 0  # the event found no room
    for c in (conn, other):
        writer = FakeWriter()
        assert not registry.open(c, writer)
        assert writer.frames == [b"one", b"two"] and writer.ended
    assert ended == [("t", "server_closed", None, True), ("u", "server_closed", None, True)]


def test_close_is_exactly_once_and_the_first_reason_wins(registry, ended):
    conn = connection(registry)
    registry.open(conn, FakeWriter())
    registry.close(conn, "client_closed")
    registry.close(conn, "server_closed")
    registry.close(conn, "error", "write_failed")
    assert ended == [("t", "client_closed", None, True)]
    assert registry.get("t") is None and registry.open_count == 0


def test_client_leaving_during_connect_is_reported_when_the_backend_accepts(registry, ended):
    conn = connection(registry)
    registry.close(conn, "client_closed")
    assert ended == []  # the backend's answer is not known yet
    assert not registry.open(conn, FakeWriter())
    assert ended == [("t", "client_closed", None, True)]


def test_client_leaving_during_a_refused_connect_is_not_reported_to_the_backend(registry, ended):
    conn = connection(registry)
    registry.close(conn, "client_closed")
    registry.fail(conn, backend_may_know=False)
    assert [e[3] for e in ended] == [False]


def test_connect_timeout_reports_error_unless_the_client_left_first(registry, ended):
    registry.fail(connection(registry, "a"), backend_may_know=True, detail="connect_timeout")
    gone = connection(registry, "b")
    registry.close(gone, "client_closed")
    registry.fail(gone, backend_may_know=True, detail="connect_timeout")
    assert ended == [
        ("a", "error", "connect_timeout", True),
        ("b", "client_closed", None, True),
    ]


def test_slow_consumer_is_aborted_once_its_backlog_passes_the_bound(registry, ended):
    conn = connection(registry)
    writer = FakeWriter(backlog=50)
    registry.open(conn, writer)
    registry.send("t", b"x" * 10, False)
    assert conn.state is State.OPEN
    writer.backlog = 101
    registry.send("t", b"y", False)
    assert writer.aborted and conn.state is State.CLOSED
    assert ended == [("t", "error", "slow_consumer", True)]


def test_publish_writes_the_same_bytes_to_every_subscriber_once(registry):
    writers = []
    for i in range(3):
        conn = connection(registry, "t%d" % i, channels=("a", "b") if i else ("a",))
        writer = FakeWriter()
        registry.open(conn, writer)
        writers.append(writer)
    frame = b"id: 1\ndata: x\n\n"
    assert registry.publish("a", 1, frame) == 3
    assert registry.publish("b", 2, b"b") == 2
    assert registry.publish("nobody", 3, b"c") == 0
    assert writers[0].frames == [frame]
    assert all(w.frames[0] is frame for w in writers)  # encoded once, shared


def test_held_stream_gets_replay_then_only_newer_live_events(registry):
    conn = connection(registry, channels=("a",))
    writer = FakeWriter()
    registry.open(conn, writer, hold=True)
    registry.publish("a", 11, b"live-11")  # also in the replay: must not be written twice
    registry.publish("a", 12, b"live-12")
    assert writer.frames == []
    registry.release(conn, [(10, b"replay-10"), (11, b"replay-11")], after=9)
    assert writer.frames == [b"replay-10", b"replay-11", b"live-12"]
    registry.publish("a", 13, b"live-13")
    assert writer.frames[-1] == b"live-13"


def test_heartbeat_skips_streams_younger_than_half_an_interval(registry):
    old, young = connection(registry, "old"), connection(registry, "young")
    old_writer, young_writer = FakeWriter(), FakeWriter()
    registry.open(old, old_writer)
    registry.open(young, young_writer)
    old.opened_at -= 10
    assert registry.heartbeat(min_age=5) == 1
    assert old_writer.frames == [b": heartbeat\n\n"] and young_writer.frames == []


def behind(registry: Registry, backlogs: dict[str, int]) -> dict[str, FakeWriter]:
    """Open a stream per token, each of which reports ``backlog`` bytes queued from its next
    write on; then write one frame to each."""
    writers = {}
    for token, backlog in backlogs.items():
        writer = writers[token] = FakeWriter()
        registry.open(connection(registry, token), writer)
        writer.backlog = backlog
        registry.send(token, b"x", False)
    return writers


def test_past_the_total_bound_the_streams_furthest_behind_are_closed_first(ended):
    registry = Registry(max_queued_bytes=10_000, max_total_queued_bytes=1000, on_ended=None)
    registry.on_ended = lambda conn: ended.append(
        (conn.token, conn.close_reason, conn.close_detail)
    )
    writers = behind(registry, {"a": 300, "b": 100, "c": 250, "d": 200})
    assert registry.queued_bytes == 850 and ended == []
    writers["e"] = behind(registry, {"e": 150})["e"]  # 1000: at the bound, not past it
    assert ended == []
    registry.send("b", b"more", False)  # "b" now reports 100 again: still 1000
    writers["b"].backlog = 400
    registry.send("b", b"more", False)  # 1300: past it
    # Closed from the furthest behind until the total is under 7/8 of the bound (875).
    assert ended == [("b", "error", "slow_consumer"), ("a", "error", "slow_consumer")]
    assert writers["b"].aborted and writers["a"].aborted
    assert registry.queued_bytes == 250 + 200 + 150
    assert {c.token for c in registry.connections()} == {"c", "d", "e"}


def test_the_total_is_measured_again_before_any_stream_is_closed(ended):
    registry = Registry(max_queued_bytes=10_000, max_total_queued_bytes=1000, on_ended=None)
    registry.on_ended = lambda conn: ended.append(conn.token)
    writers = behind(registry, {"a": 600, "b": 300})
    writers["a"].backlog = 0  # its socket drained since its last write, unseen
    writers["c"] = behind(registry, {"c": 200})["c"]  # 1100 as last seen, 500 in truth
    assert ended == []
    assert registry.queued_bytes == 500


def test_a_stream_that_closes_gives_its_share_of_the_total_back():
    registry = Registry(max_queued_bytes=10_000, max_total_queued_bytes=10_000)
    behind(registry, {"a": 600, "b": 300})
    assert registry.queued_bytes == 900
    conn = registry.get("a")
    assert conn is not None
    registry.close(conn, CloseReason.CLIENT_CLOSED)
    assert registry.queued_bytes == 300
    assert registry.released_bytes == 600


def test_writes_that_queue_nothing_are_not_accounted(registry):
    writers = behind(registry, {"a": 0, "b": 0})
    assert registry.queued_bytes == 0
    writers["a"].backlog = 50
    registry.send("a", b"x", False)
    assert registry.queued_bytes == 50
    writers["a"].backlog = 0
    registry.send("a", b"x", False)  # drained: its share goes back to 0
    assert registry.queued_bytes == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replay(history: History, last_event_id: str, channels: set[str]):
    """The replay a stream of ``channels`` gets after ``last_event_id``, as the gateway asks."""
    since = parse_event_id(last_event_id)
    assert since is not None, last_event_id
    return history.window(channels, since).replay(since)


def test_history_keeps_the_last_events_of_each_channel_and_reports_gaps():
    clock = Clock()
    history = History(Retention(size=2, ttl=60), first_id=100, clock=clock)
    for i in range(100, 106):
        history.append(i, "a" if i % 2 else "b", b"f%d" % i)  # a: 101 103 105, b: 100 102 104
    assert replay(history, "102", {"a", "b"}).events == (
        (103, b"f103"),
        (104, b"f104"),
        (105, b"f105"),
    )
    assert replay(history, "103", {"b"}).events == ((104, b"f104"),)
    assert replay(history, "100", {"a"}).gap  # a kept only 103 and 105: 101 is gone
    assert replay(history, "102", {"a"}).events == ((103, b"f103"), (105, b"f105"))
    assert replay(history, "101", {"b"}).events == ((102, b"f102"), (104, b"f104"))
    assert replay(history, "100", {"a", "b"}).gap  # never partial: a cannot be replayed
    assert replay(history, "105", {"a"}).events == ()
    assert replay(history, "106", {"a"}).gap  # never issued
    assert replay(history, "98", {"a"}).gap  # before the history started
    assert parse_event_id("abc") is None  # not an id: the gateway answers a gap
    clock.now += 61
    assert replay(history, "104", {"a"}).gap  # expired


def test_a_channel_window_never_shrinks_because_of_another_channels_publishes():
    history = History(Retention(size=50, ttl=60), first_id=1, clock=Clock())
    history.append(1, "quiet", b"q")
    for i in range(2, 5002):
        history.append(i, "busy", b"b")
    assert replay(history, "0", {"quiet"}).events == ((1, b"q"),)
    assert len(history) == 51


def test_history_rules_give_channels_their_own_size_and_ttl():
    clock = Clock()
    rules = parse_rules("ticker.*=1/10,chat.*=3/3600")
    history = History(Retention(size=2, ttl=60, rules=rules), first_id=1, clock=clock)
    for i, channel in enumerate(["ticker.x", "ticker.x", "chat.y"] * 3, start=1):
        history.append(i, channel, b"e%d" % i)
    assert replay(history, "7", {"ticker.x"}).events == ((8, b"e8"),)
    assert replay(history, "6", {"ticker.x"}).gap  # size 1: 7 is gone
    assert replay(history, "0", {"chat.y"}).events == ((3, b"e3"), (6, b"e6"), (9, b"e9"))
    clock.now += 11
    assert replay(history, "7", {"ticker.x"}).gap  # ttl 10 s
    assert replay(history, "0", {"chat.y"}).events == ((3, b"e3"), (6, b"e6"), (9, b"e9"))


def test_a_channel_whose_rule_keeps_nothing_is_left_out_of_replays():
    rules = parse_rules("live.*=0/0")
    history = History(Retention(size=5, ttl=60, rules=rules), first_id=1, clock=Clock())
    history.append(1, "live.x", b"l")
    history.append(2, "room", b"r")
    assert replay(history, "0", {"room", "live.x"}).events == ((2, b"r"),)


def test_history_max_bytes_drops_the_oldest_events_first_and_counts_them():
    size = len(b"x" * 1000) + ENTRY_OVERHEAD
    history = History(Retention(size=1000, ttl=60, max_bytes=10 * size), first_id=1, clock=Clock())
    for i in range(1, 21):
        history.append(i, "a" if i <= 10 else "b", b"x" * 1000)
    assert history.bytes == 10 * size and len(history) == 10
    assert replay(history, "0", {"a"}).gap  # all of a went first
    assert [i for i, _ in replay(history, "10", {"b"}).events] == list(range(11, 21))


def test_the_expiry_timer_frees_expired_events_and_forgets_idle_channels():
    clock = Clock()
    history = History(Retention(size=10, ttl=5), first_id=id_at(clock.now), clock=clock)
    first = id_at(clock.now)
    history.append(first, "a", b"x" * 100)
    clock.now += 6
    assert history.expire() == 1
    assert len(history) == 0 and history.bytes == 0
    assert history.channels == 0  # what it dropped is older than the ttl: the clock tells
    assert replay(history, str(first - 1), {"a"}).gap
    # Even from the last event: once a channel has kept nothing for its ttl, the gateway
    # cannot tell a reader that it missed nothing.
    assert replay(history, str(first), {"a"}).gap


def test_a_channel_emptied_by_the_byte_bound_is_remembered_until_its_ttl_passes():
    clock = Clock()
    size = 100 + ENTRY_OVERHEAD
    retention = Retention(size=10, ttl=5, max_bytes=size)
    history = History(retention, first_id=id_at(clock.now), clock=clock)
    first = id_at(clock.now)
    history.append(first, "a", b"x" * 100)
    history.append(first + 1, "b", b"y" * 100)  # pushes a's only event out
    history.expire()
    assert history.channels == 2
    assert replay(history, str(first - 1), {"a"}).gap
    clock.now += 6
    history.expire()
    assert history.channels == 0
    assert replay(history, str(first - 1), {"a"}).gap  # older than the ttl: still a gap
