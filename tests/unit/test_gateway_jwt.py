"""The gateway's decisions for stateless streams, without HTTP: JWT connects, expiry from one
shared timer, and the connect-rate cap (PROTOCOL.md sections 7 and 9)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.helpers import open_accepted
from tests.support.tokens import SECRET, claims, sign
from tests.unit.test_gateway import FakeBackend, FakeWriter, make_gateway, request
from tornado_sse.connection import State
from tornado_sse.errors import (
    CloseDetail,
    CloseReason,
    InvalidJWT,
    JWTExpired,
    RateLimited,
    ServiceNotConfigured,
)
from tornado_sse.gateway import JWT_EXPIRED_FRAME, Gateway


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


async def open_jwt_stream(gw: Gateway, token: str, path: str = "/sse/x"):
    conn = gw.admit(request("%s?jwt=%s" % (path, token)))
    assert await gw.connect(conn)
    writer = FakeWriter()
    await open_accepted(gw, conn, writer)
    return conn, writer


@pytest.mark.gen_test
async def test_a_jwt_stream_opens_without_a_callback_and_its_backend_hears_the_disconnect(
    backend,
):
    gw = make_gateway(backend, jwt_secret=SECRET)
    token = sign(claims(sub="7", channels=["room"], info={"name": "Ann"}))
    conn, writer = await open_jwt_stream(gw, token)
    assert backend.connects == []
    assert (conn.user, conn.channels, conn.info.value) == ("7", ("room",), {"name": "Ann"})
    assert (await gw.connections(10))["connections"][0]["user"] == "7"
    gw.client_left(conn)
    assert backend.disconnects == [(conn.token, "client_closed", None, conn.request.url)]


@pytest.mark.gen_test
async def test_a_jwt_stream_needs_no_callback_url():
    gw = make_gateway(None, jwt_secret=SECRET)
    conn, writer = await open_jwt_stream(gw, sign(claims(channels=["a"])))
    assert conn.state is State.OPEN and gw.configured
    assert gw.readiness()[0]
    with pytest.raises(ServiceNotConfigured, match="only streams with a 'jwt'"):
        gw.admit(request("/sse/x"))


@pytest.mark.gen_test
async def test_without_a_jwt_key_the_jwt_parameter_is_the_backends_business(backend):
    gw = make_gateway(backend)
    conn = gw.admit(request("/sse/x?jwt=whatever"))
    assert await gw.connect(conn)
    assert backend.connects == [conn.token]


@pytest.mark.gen_test
async def test_a_refused_jwt_registers_nothing(backend):
    gw = make_gateway(backend, jwt_secret=SECRET)
    forged = sign(claims(), "another-secret-of-forty-bytes-0123456789")
    with pytest.raises(InvalidJWT):
        gw.admit(request("/sse/x?jwt=" + forged))
    expired = sign(claims(exp=int(time.time()) - 5))
    with pytest.raises(JWTExpired):
        gw.admit(request("/sse/x?jwt=" + expired))
    assert len(gw.registry) == 0 and backend.connects == [] and backend.disconnects == []


@pytest.mark.gen_test
async def test_expire_ends_the_due_streams_with_the_event_and_a_retry_hint(backend):
    gw = make_gateway(backend, jwt_secret=SECRET)
    now = int(time.time())
    first, first_out = await open_jwt_stream(gw, sign(claims(exp=now + 100)))
    second, second_out = await open_jwt_stream(gw, sign(claims(exp=now + 200)))
    assert gw.expire(now + 99) == 0
    assert gw.expire(now + 100) == 1
    assert first.state is State.CLOSED and second.state is State.OPEN
    assert first.close_reason is CloseReason.SERVER_CLOSED
    assert first.close_detail is CloseDetail.JWT_EXPIRED
    (frame,) = first_out.frames
    assert JWT_EXPIRED_FRAME == b"event: jwt_expired\ndata: \n\n"
    assert frame.startswith(JWT_EXPIRED_FRAME)
    retry = frame[len(JWT_EXPIRED_FRAME) :]
    assert retry.startswith(b"retry: ") and retry.endswith(b"\n\n")
    assert 1000 <= int(retry[7:-2]) <= 5000
    assert first_out.ended and not first_out.aborted
    assert backend.disconnects == [(first.token, "server_closed", "jwt_expired", first.request.url)]
    gw.client_left(second)
    assert gw.expire(now + 300) == 0  # an ended stream is not ended again
    assert len(backend.disconnects) == 2


def expiry_timers(gw: Gateway) -> list[asyncio.TimerHandle]:
    """The loop's pending timers that run the gateway's expiry check."""
    loop = asyncio.get_running_loop()
    return [
        h
        for h in loop._scheduled  # type: ignore[attr-defined]
        if not h.cancelled() and getattr(h._callback, "__self__", None) is gw
    ]


@pytest.mark.gen_test
async def test_one_timer_serves_every_jwt_stream(backend):
    gw = make_gateway(backend, jwt_secret=SECRET)
    now = int(time.time())
    for i in range(50):
        await open_jwt_stream(gw, sign(claims(exp=now + 30 + i)))
    assert len(expiry_timers(gw)) == 1
    gw.stop()
    assert expiry_timers(gw) == []


@pytest.mark.gen_test(timeout=10)
async def test_the_shared_timer_ends_a_stream_at_its_exp(backend):
    gw = make_gateway(backend, jwt_secret=SECRET)
    exp = int(time.time()) + 2
    conn, writer = await open_jwt_stream(gw, sign(claims(exp=exp)))
    ended = asyncio.get_running_loop().create_future()
    gw.registry.on_ended = lambda c: ended.done() or ended.set_result(time.time())
    at = await asyncio.wait_for(ended, 5)
    assert exp <= at < exp + 2  # rechecked every second at least
    assert writer.frames[0].startswith(JWT_EXPIRED_FRAME)


@pytest.mark.gen_test
async def test_the_rate_cap_refuses_past_its_burst_before_any_jwt_work(backend):
    gw = make_gateway(backend, jwt_secret=SECRET, max_connects_per_second=2)
    gw.admit(request())
    gw.admit(request("/sse/x?jwt=" + sign(claims())))
    with pytest.raises(RateLimited):
        gw.admit(request("/sse/x?jwt=not-even-a-jwt"))  # refused before it is looked at
    assert gw.wants_retry_stream(RateLimited()) is False
    assert make_gateway(backend, retry_on_unavailable=True).wants_retry_stream(RateLimited())
