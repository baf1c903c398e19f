"""Stateless streams over real sockets (PROTOCOL.md section 9, and the connect-rate cap of
section 7): JWT connects without a callback, refusals, expiry, the rate cap, and logs that
never hold a token."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from tests.support.backend import Answer
from tests.support.helpers import (
    assert_json_error,
    open_and_close_another,
    open_with_token,
    read_to_clean_end,
)
from tests.support.process import start_gateway
from tests.support.sse_client import open_stream
from tests.support.tokens import (
    SECRET,
    claims,
    ec_keys,
    hmac_by_hand,
    rsa_keys,
    sign,
    tampered,
    unsigned,
)
from tornado_sse.client import mint_jwt
from tornado_sse.log import TextFormatter


def jwt_path(token: str, path: str = "/sse/jwt") -> str:
    return "%s?jwt=%s" % (path, token)


async def publish(gw, channel: str, data: str) -> None:
    status, _ = await gw.send({"channel": channel, "event": {"data": data}})
    assert status == 200


# -- JWT streams open without a connect callback -------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_hs256_stream_opens_without_connect_callback_and_backend_hears_its_disconnect(
    gateway, backend
):
    gw = gateway(jwt_secret=SECRET)
    path = jwt_path(mint_jwt("42", ["news"], 60, {"name": "Ann"}, secret=SECRET))
    stream = await gw.open(path)
    assert stream.headers["content-type"].startswith("text/event-stream")
    await publish(gw, "news", "hello")
    (event,) = await stream.wait_events(1)
    assert event.data == "hello"
    listing = json.loads((await gw.get("/internal/connections", internal=True)).body)
    (entry,) = listing["connections"]
    assert (entry["user"], entry["channels"], entry["url"]) == ("42", ["news"], path)
    await stream.aclose()
    (disconnect,) = await backend.wait_for_calls("disconnect")
    assert disconnect.body["reason"] == "client_closed"
    assert disconnect.body["token"] == entry["token"]
    assert disconnect.body["request"]["url"] == path
    assert backend.of("connect") == []


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
@pytest.mark.gen_test(timeout=10)
async def test_asymmetric_jwt_stream_opens_with_callback_url_unset(gateway, backend, algorithm):
    pair = ec_keys() if algorithm == "ES256" else rsa_keys()
    gw = gateway(callback_url=None, jwt_public_key=pair.public_pem)
    ready = await gw.get("/readyz")
    assert ready.code == 200, ready.body
    stream = await gw.open(jwt_path(sign(claims(channels=["c"]), pair.private, algorithm)))
    await publish(gw, "c", "signed")
    assert [e.data for e in await stream.wait_events(1)] == ["signed"]
    plain = await gw.stream("/sse/no-jwt")
    await assert_json_error(plain, 503, "SERVICE_NOT_CONFIGURED")
    assert backend.calls == []


@pytest.mark.gen_test(timeout=10)
async def test_jwt_stream_replays_from_last_event_id_like_any_other(gateway, backend):
    gw = gateway(jwt_secret=SECRET)
    first = await gw.open(jwt_path(mint_jwt("42", ["feed"], 60, secret=SECRET)))
    for i in range(3):
        await publish(gw, "feed", "e%d" % i)
    events = await first.wait_events(3)
    await first.aclose()
    for i in range(3, 5):
        await publish(gw, "feed", "e%d" % i)
    token = mint_jwt("42", ["feed"], 60, secret=SECRET)
    second = await gw.open(jwt_path(token) + "&lastEventId=" + events[1].last_event_id)
    assert [e.data for e in await second.wait_events(3)] == ["e2", "e3", "e4"]
    assert backend.of("connect") == []


@pytest.mark.gen_test(timeout=10)
async def test_stream_without_jwt_still_goes_through_the_connect_callback(gateway, backend):
    gw = gateway(jwt_secret=SECRET)
    stream, token = await open_with_token(gw, backend, "/sse/plain?x=1")
    assert token and stream.status == 200


@pytest.mark.gen_test(timeout=10)
async def test_without_a_jwt_key_the_jwt_parameter_reaches_the_backend(gateway, backend):
    # A backend written for the Node gateway may use ?jwt= itself: nothing changes for it.
    gw = gateway()
    path = jwt_path(sign(claims()), "/sse/theirs")
    stream, _ = await open_with_token(gw, backend, path)
    assert stream.status == 200


# -- refusals --------------------------------------------------------------------------------


def forged_tokens() -> dict[str, str]:
    rsa = rsa_keys()
    return {
        "bad-signature": tampered(sign(claims())),
        "other-secret": sign(claims(), "another-secret-of-forty-bytes-0123456789"),
        "alg-none": unsigned(claims()),
        "hs256-with-the-public-pem": hmac_by_hand(claims(), rsa.public_pem),
        "rs256-of-another-key": sign(claims(), rsa_keys(3072).private, "RS256"),
        "wrong-audience": sign(claims(aud="elsewhere", iss="https://app")),
        "wrong-issuer": sign(claims(aud="sse", iss="https://evil")),
        "missing-exp": sign(claims(aud="sse", iss="https://app", exp=None)),
        "bad-channels": sign(claims(aud="sse", iss="https://app", channels="news")),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize("case", list(forged_tokens()))
@pytest.mark.gen_test(timeout=10)
async def test_invalid_jwt_is_401_before_any_callback(gateway, backend, case):
    rsa = rsa_keys()
    gw = gateway(
        jwt_secret=SECRET,
        jwt_public_key=rsa.public_pem,
        jwt_audience="sse",
        jwt_issuer="https://app",
    )
    token = forged_tokens()[case]
    stream = await gw.stream(jwt_path(token))
    body = await assert_json_error(stream, 401, "INVALID_JWT")
    assert token not in json.dumps(body)
    assert backend.calls == []
    assert len(gw.gateway.registry) == 0


@pytest.mark.gen_test(timeout=10)
async def test_expired_jwt_is_401_jwt_expired_before_any_callback(gateway, backend):
    gw = gateway(jwt_secret=SECRET)
    stream = await gw.stream(jwt_path(sign(claims(exp=int(time.time()) - 1))))
    await assert_json_error(stream, 401, "JWT_EXPIRED")
    assert backend.calls == []


@pytest.mark.gen_test(timeout=10)
async def test_repeated_jwt_parameter_is_401(gateway, backend):
    gw = gateway(jwt_secret=SECRET)
    token = sign(claims())
    stream = await gw.stream("/sse/x?jwt=%s&jwt=%s" % (token, token))
    await assert_json_error(stream, 401, "INVALID_JWT")
    assert backend.calls == []


# -- expiry -----------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=15)
async def test_at_exp_the_stream_gets_jwt_expired_and_retry_then_ends_with_one_disconnect(
    gateway, backend
):
    gw = gateway(jwt_secret=SECRET)
    exp = int(time.time()) + 2
    stream = await gw.open(jwt_path(sign(claims(channels=["t"], exp=exp))))
    await publish(gw, "t", "before")
    await stream.wait_events(1)
    assert await read_to_clean_end(stream, timeout=5)
    assert time.time() >= exp
    assert [(e.type, e.data) for e in stream.events] == [("message", "before"), ("jwt_expired", "")]
    tail = bytes(stream.raw).split(b"data: before\n\n", 1)[1]
    assert tail.startswith(b"event: jwt_expired\ndata: \n\nretry: "), tail
    assert 1000 <= stream.parser.retry <= 5000
    (disconnect,) = await backend.wait_for_calls("disconnect")
    assert (disconnect.body["reason"], disconnect.body["detail"]) == (
        "server_closed",
        "jwt_expired",
    )
    # Exactly one: a later stream's disconnect arrives, and still only one for this token.
    await open_and_close_another(gw, backend, "/sse/later")
    assert len(backend.of("disconnect", disconnect.token)) == 1
    assert backend.of("connect", disconnect.token) == []


# -- the connect-rate cap ---------------------------------------------------------------------


@pytest.mark.gen_test(timeout=15)
async def test_rate_cap_refuses_a_burst_before_any_callback_and_recovers(gateway, backend):
    gw = gateway(max_connects_per_second=2)
    started = time.monotonic()
    streams = await asyncio.gather(*(gw.stream("/sse/burst%d" % i) for i in range(8)))
    elapsed = time.monotonic() - started
    accepted = [s for s in streams if s.status == 200]
    refused = [s for s in streams if s.status != 200]
    # A bucket of 2 that refills at 2 per second: 2 at once, and 2 a second after.
    assert 1 <= len(accepted) <= 2 + int(2 * elapsed) + 1, (len(accepted), elapsed)
    assert len(refused) >= 8 - (2 + int(2 * elapsed) + 1)
    for stream in refused:
        await assert_json_error(stream, 503, "RATE_LIMITED")
    await backend.wait_for_calls("connect", count=len(accepted))
    assert len(backend.of("connect")) == len(accepted)  # no callback for a refused stream
    # Recovery: once a token is back in the bucket (half a second), a stream opens again.
    for _ in range(20):  # at most 20 tries, 0.1 s apart
        stream = await gw.stream("/sse/later")
        if stream.status == 200:
            break
        await assert_json_error(stream, 503, "RATE_LIMITED")
        await asyncio.sleep(0.1)
    assert stream.status == 200


@pytest.mark.gen_test(timeout=10)
async def test_rate_cap_comes_before_the_jwt_is_looked_at(gateway, backend):
    gw = gateway(jwt_secret=SECRET, max_connects_per_second=1)
    await gw.open(jwt_path(sign(claims())))
    stream = await gw.stream(jwt_path("not-a-jwt"))
    await assert_json_error(stream, 503, "RATE_LIMITED")


@pytest.mark.gen_test(timeout=10)
async def test_rate_limited_stream_with_retry_on_unavailable_gets_a_retry_stream(gateway, backend):
    gw = gateway(max_connects_per_second=1, retry_on_unavailable=True)
    await gw.open("/sse/first")
    stream = await gw.stream("/sse/second")
    assert stream.status == 200
    await stream.read_to_end()
    assert b": 503 RATE_LIMITED\n\n" in stream.raw and 1000 <= stream.parser.retry <= 5000
    await backend.wait_for_calls("connect")
    assert len(backend.of("connect")) == 1


# -- no log line holds a token ------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.gen_test(timeout=30)
async def test_no_log_line_holds_the_jwt(backend, log_format):
    backend.connect_answer = Answer(status=500)  # the callback path logs its failures too
    gw = await start_gateway(
        {
            "CALLBACK_URL": backend.url,
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": log_format,
        }
    )
    tokens = []
    try:

        async def refused(path: str, status: int) -> None:
            stream = await open_stream(gw.port, path)
            assert stream.status == status, (path, stream.status)
            await stream.read_to_end()
            await stream.aclose()

        good = mint_jwt("42", ["c"], 60, secret=SECRET)
        # Valid for 1 to 2 s: long enough to open, short enough to expire within the read.
        short = sign(claims(exp=int(time.time()) + 2))
        tokens += [good, short]
        opened = await open_stream(gw.port, jwt_path(good))
        assert opened.status == 200
        expiring = await open_stream(gw.port, jwt_path(short))
        assert expiring.status == 200
        for bad, status in (
            (tampered(good), 401),
            (sign(claims(exp=int(time.time()) - 1)), 401),
            (unsigned(claims()), 401),
        ):
            tokens.append(bad)
            await refused(jwt_path(bad), status)
        await refused("/sse/dup?jwt=%s&jwt=%s" % (good, good), 401)
        await refused("/nowhere?jwt=" + good, 404)
        await refused("/sse/cb?jwt_not=1&x=" + good, 500)  # the backend's 500, passed on
        await expiring.read_to_end(timeout=5)  # the expiry and its disconnect are logged
        await expiring.aclose()
        await opened.aclose()
        await backend.wait_for_calls("disconnect", count=2)
    finally:
        await gw.stop()
    lines = gw.log
    joined = "\n".join(lines)
    assert "stream opened" in joined and "stream closed" in joined and "jwt refused" in joined
    assert "jwt_expired" in joined
    for token in tokens:
        for part in [token, *(p for p in token.split(".") if len(p) > 8)]:
            leaking = [line for line in lines if part in line]
            assert leaking == [], leaking


@pytest.mark.gen_test(timeout=10)
async def test_an_uncaught_error_is_logged_without_the_query_string(gateway, backend, caplog):
    gw = gateway(jwt_secret=SECRET)
    token = sign(claims())

    def broken(request):
        raise RuntimeError("a bug")

    gw.gateway.admit = broken
    with caplog.at_level(logging.DEBUG):
        stream = await gw.stream(jwt_path(token))
        await assert_json_error(stream, 500, "INTERNAL_ERROR")
    formatter = TextFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("uncaught exception" in line and "a bug" in line for line in lines), lines
    assert not [line for line in lines if token in line or "jwt=" in line]


@pytest.mark.gen_test(timeout=10)
async def test_connect_metrics_count_jwt_streams_refusals_and_the_rate_cap(gateway, backend):
    gw = gateway(jwt_secret=SECRET, max_connects_per_second=3)
    await gw.open(jwt_path(sign(claims())))
    for token in (tampered(sign(claims())), sign(claims(exp=1))):
        assert (await gw.stream(jwt_path(token))).status == 401
    await assert_json_error(await gw.stream(jwt_path(sign(claims()))), 503, "RATE_LIMITED")
    text = (await gw.get("/metrics", internal=True)).body.decode()
    for outcome in ("jwt", "jwt_invalid", "jwt_expired", "rate_limited"):
        assert 'tornado_sse_connects_total{outcome="%s"} 1.0' % outcome in text, text
    assert 'outcome="accepted"' not in text


# -- users, presence and limits work for JWT streams as for the others ----------------------------


@pytest.mark.gen_test(timeout=10)
async def test_jwt_streams_count_in_presence_take_user_sends_and_meet_the_user_limit(
    gateway, backend
):
    gw = gateway(jwt_secret=SECRET, max_streams_per_user=2)
    token = mint_jwt("ann", ["room"], 60, {"name": "Ann"}, secret=SECRET)
    first = await gw.open(jwt_path(token))
    second = await gw.open(jwt_path(mint_jwt("ann", ["room"], 60, secret=SECRET)))
    presence = json.loads((await gw.get("/internal/presence?channel=room", internal=True)).body)
    assert presence["users"] == [{"user": "ann", "info": {"name": "Ann"}, "streams": 2}]
    status, answer = await gw.send({"user": "ann", "event": {"data": "to ann"}})
    assert (status, answer) == (200, {"status": "ok", "streams": 2})
    for stream in (first, second):
        assert [e.data for e in await stream.wait_events(1)] == ["to ann"]
    third = await gw.stream(jwt_path(mint_jwt("ann", ["room"], 60, secret=SECRET)))
    await assert_json_error(third, 429, "TOO_MANY_STREAMS")
    # As for a connect answer that names a user past the limit, the backend hears about it.
    (refused,) = await backend.wait_for_calls("disconnect")
    assert (refused.body["reason"], refused.body["detail"]) == ("error", "user_limit")
    assert backend.of("connect") == []
