"""The gateway's decisions without HTTP: connect outcomes, the disconnect rule, replay, sends
and shutdown, with a fake backend and writers injected through ``make_app``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.helpers import open_accepted
from tornado_sse.app import make_app
from tornado_sse.backend import ConnectOutcome
from tornado_sse.broker import LocalBroker
from tornado_sse.config import Settings
from tornado_sse.connection import State
from tornado_sse.errors import (
    BackendAuthFailed,
    BackendError,
    BackendUnavailable,
    BadCallbackResponse,
    GatewayTimeout,
    Outcome,
    ServiceNotConfigured,
    ShuttingDown,
    TokenNotFound,
    TooManyConnections,
)
from tornado_sse.gateway import Gateway
from tornado_sse.history import Retention
from tornado_sse.protocol import Event, RequestSnapshot, SendRequest
from tornado_sse.registry import Registry


class FakeBackend:
    """Answers every connect with ``outcome`` and records the disconnects it is told."""

    def __init__(self) -> None:
        self.outcome = ConnectOutcome(Outcome.ACCEPTED, status=200)
        self.connects: list[str] = []
        self.disconnects: list[tuple[str, str, str | None, str]] = []
        self.before_answer: Any = None  # called while the "callback" is in flight

    async def connect(
        self, token: str, request: RequestSnapshot, abandoned: Any = None
    ) -> ConnectOutcome:
        self.connects.append(token)
        if self.before_answer is not None:
            self.before_answer()
        return self.outcome

    def disconnect(self, token: str, reason: str, request: RequestSnapshot, detail: Any) -> None:
        self.disconnects.append((token, reason, detail, request.url))

    pending_disconnects = 0

    async def drain(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


class FakeWriter:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended = self.aborted = False

    def write_frame(self, frame: bytes) -> int:
        self.frames.append(frame)
        return 0

    def end(self) -> None:
        self.ended = True

    def abort(self) -> None:
        self.aborted = True


def make_gateway(backend: FakeBackend | None, **settings: Any) -> Gateway:
    values = {"callback_url": "http://127.0.0.1:9/cb", "heartbeat_interval_seconds": 60.0}
    app = make_app(
        Settings(**{**values, **settings}),
        backend=backend,  # type: ignore[arg-type]
        broker=LocalBroker(Retention(size=settings.get("history_size", 1000), ttl=300.0)),
        registry=Registry(),
    )
    gateway = app.gateway
    if backend is None:
        gateway.backend = None  # as without CALLBACK_URL
    gateway.broker.start(gateway)
    return gateway


def request(url: str = "/sse/x", last_event_id: str | None = None) -> RequestSnapshot:
    return RequestSnapshot(url, {"host": "h"}, "rid", last_event_id)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.mark.gen_test
async def test_an_accepted_connect_opens_with_its_channels_and_queued_sends(backend):
    gw = make_gateway(backend)
    backend.outcome = ConnectOutcome(Outcome.ACCEPTED, status=200, channels=("a",))
    conn = gw.admit(request())
    backend.before_answer = lambda: gw.registry.send(conn.token, b"early", False)
    assert await gw.connect(conn)
    writer = FakeWriter()
    await open_accepted(gw, conn, writer)
    assert conn.state is State.OPEN and conn.channels == ("a",)
    assert writer.frames == [b"early"]
    assert await gw.send(SendRequest(None, "a", Event("hi"), False)) == "ok"
    assert writer.frames[1].startswith(b"id: ") and writer.frames[1].endswith(b"data: hi\n\n")


@pytest.mark.parametrize(
    ("outcome", "error", "disconnect_detail"),
    [
        (ConnectOutcome(Outcome.TIMEOUT), GatewayTimeout, "connect_timeout"),
        (
            ConnectOutcome(Outcome.BAD_ANSWER, 200, message="x"),
            BadCallbackResponse,
            "bad_callback_response",
        ),
        (ConnectOutcome(Outcome.REJECTED, 401), BackendAuthFailed, None),
        (ConnectOutcome(Outcome.REJECTED, 418), BackendError, None),
        (ConnectOutcome(Outcome.UNAVAILABLE, message="refused"), BackendUnavailable, None),
    ],
)
@pytest.mark.gen_test
async def test_a_failed_connect_raises_its_error_and_applies_the_disconnect_rule(
    backend, outcome, error, disconnect_detail
):
    gw = make_gateway(backend)
    backend.outcome = outcome
    conn = gw.admit(request())
    with pytest.raises(error) as raised:
        await gw.connect(conn)
    if outcome.status == 418:
        assert raised.value.status == 418
    assert conn.state is State.CLOSED and gw.registry.get(conn.token) is None
    if disconnect_detail is None:
        assert backend.disconnects == []
    else:
        assert backend.disconnects == [(conn.token, "error", disconnect_detail, "/sse/x")]


@pytest.mark.gen_test
async def test_a_client_that_left_during_the_callback_is_reported_once_as_client_closed(backend):
    gw = make_gateway(backend)
    conn = gw.admit(request())
    backend.before_answer = lambda: gw.client_left(conn)
    assert await gw.connect(conn) is False
    assert backend.disconnects == [(conn.token, "client_closed", None, "/sse/x")]


@pytest.mark.gen_test
async def test_an_open_stream_is_reported_once_whatever_ends_it(backend):
    gw = make_gateway(backend)
    conn = gw.admit(request())
    assert await gw.connect(conn)
    writer = FakeWriter()
    await open_accepted(gw, conn, writer)
    gw.client_left(conn)
    gw.client_left(conn)
    with pytest.raises(TokenNotFound):
        await gw.send(SendRequest(conn.token, None, None, True))
    assert backend.disconnects == [(conn.token, "client_closed", None, "/sse/x")]


def test_admit_refuses_without_a_callback_url_while_draining_and_when_full():
    with pytest.raises(ServiceNotConfigured):
        make_gateway(None).admit(request())
    draining = make_gateway(FakeBackend())
    draining.draining = True
    with pytest.raises(ShuttingDown):
        draining.admit(request())
    full = make_gateway(FakeBackend(), max_connections=1)
    full.admit(request())
    with pytest.raises(TooManyConnections):
        full.admit(request())


@pytest.mark.gen_test
async def test_a_reconnect_replays_its_channels_events_after_its_id(backend):
    gw = make_gateway(backend)
    backend.outcome = ConnectOutcome(Outcome.ACCEPTED, status=200, channels=("a",))
    first = await gw.broker.publish("a", b"data: 1\n\n")
    await gw.broker.publish("b", b"data: other\n\n")
    third = await gw.broker.publish("a", b"data: 3\n\n")
    conn = gw.admit(request(last_event_id=str(first)))
    assert await gw.connect(conn)
    writer = FakeWriter()
    await open_accepted(gw, conn, writer)
    assert writer.frames == [b"id: %d\ndata: 3\n\n" % third]


@pytest.mark.parametrize("last_event_id", ["nonsense", "1"])
@pytest.mark.gen_test
async def test_an_unknown_id_starts_the_stream_with_a_gap_event(backend, last_event_id):
    gw = make_gateway(backend)
    backend.outcome = ConnectOutcome(Outcome.ACCEPTED, status=200, channels=("a",))
    await gw.broker.publish("a", b"data: 1\n\n")
    conn = gw.admit(request(last_event_id=last_event_id))
    assert await gw.connect(conn)
    writer = FakeWriter()
    await open_accepted(gw, conn, writer)
    assert writer.frames == [b"event: history_gap\ndata: %s\n\n" % last_event_id.encode()]


@pytest.mark.gen_test
async def test_with_history_off_a_reconnect_gets_neither_replay_nor_gap(backend):
    gw = make_gateway(backend, history_size=0)
    backend.outcome = ConnectOutcome(Outcome.ACCEPTED, status=200, channels=("a",))
    await gw.broker.publish("a", b"data: 1\n\n")
    conn = gw.admit(request(last_event_id="1"))
    assert await gw.connect(conn)
    writer = FakeWriter()
    await open_accepted(gw, conn, writer)
    assert writer.frames == []


@pytest.mark.gen_test
async def test_shutdown_ends_every_stream_with_a_retry_hint_and_reports_it(backend):
    gw = make_gateway(backend)
    writers = []
    for _ in range(3):
        conn = gw.admit(request())
        assert await gw.connect(conn)
        writers.append(FakeWriter())
        await open_accepted(gw, conn, writers[-1])
    assert await gw.shutdown()
    for writer in writers:
        assert writer.ended and writer.frames[-1].startswith(b"retry: ")
        assert 1000 <= int(writer.frames[-1][7:-2]) <= 5000
    assert sorted(d[1:3] for d in backend.disconnects) == [("server_closed", "shutdown")] * 3
    with pytest.raises(ShuttingDown):
        gw.admit(request())
