"""The stream endpoint over real loopback sockets (PROTOCOL.md sections 1 and 3).

Connect outcomes and their HTTP mapping, the stream's headers, the connect callback's body,
routing by SSE_PATH_PREFIX, isolation of concurrent streams, payload fidelity and heartbeats.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time

import pytest

from tests.support.backend import Answer
from tests.support.helpers import (
    assert_json_error,
    connects_for,
    is_uuid4,
)
from tests.support.ports import unused_port

STREAM_HEADERS = {
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-accel-buffering": "no",
    "access-control-allow-origin": "*",
}


def assert_stream_head(stream) -> None:
    """The head of an accepted stream (PROTOCOL 1.5)."""
    assert stream.status == 200
    assert stream.headers.get("content-type") == "text/event-stream; charset=utf-8", stream.headers
    for name, value in STREAM_HEADERS.items():
        assert stream.headers.get(name) == value, (name, stream.headers)


# -- connect outcomes (PROTOCOL 1.4) ----------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 204])
@pytest.mark.gen_test(timeout=10)
async def test_backend_2xx_opens_a_stream_with_the_sse_headers(gateway, backend, status):
    # body=None: the fake passes its body to finish(), and a 204 may carry none, not even b"".
    backend.connect_answer = Answer(status=status, body=None if status == 204 else b"")
    gw = gateway()
    stream = await gw.stream("/sse/ok", headers={"Accept-Encoding": "gzip, deflate"})
    assert_stream_head(stream)
    assert "content-encoding" not in stream.headers  # never compressed
    (connect,) = await backend.wait_for_calls("connect")
    code, answer = await gw.send({"token": connect.token, "event": {"data": "first"}})
    assert (code, answer) == (200, {"status": "ok"})
    events = await stream.wait_events(1)
    assert [e.data for e in events] == ["first"]


@pytest.mark.parametrize(
    ("status", "code"), [(401, "BACKEND_AUTH_FAILED"), (403, "BACKEND_FORBIDDEN")]
)
@pytest.mark.gen_test(timeout=10)
async def test_backend_401_and_403_are_passed_to_client(gateway, backend, status, code):
    backend.connect_answer = Answer(status=status, body=b'{"channels": ["x"]}')
    gw = gateway()
    stream = await gw.stream()
    await assert_json_error(stream, status, code)
    assert len(backend.of("connect")) == 1


@pytest.mark.parametrize("status", [500, 404, 418, 400, 503])
@pytest.mark.gen_test(timeout=10)
async def test_other_backend_status_is_passed_to_client_as_backend_error(gateway, backend, status):
    backend.connect_answer = Answer(status=status, body=b"<html>backend page</html>")
    gw = gateway()
    stream = await gw.stream()
    await assert_json_error(stream, status, "BACKEND_ERROR")


@pytest.mark.gen_test(timeout=10)
async def test_backend_redirect_is_not_followed_but_passed_as_backend_error(gateway, backend):
    # Following the redirect would POST (or GET) the backend a second time and not give 302.
    backend.connect_answer = Answer(status=302, headers={"Location": backend.url + "?again"})
    gw = gateway()
    stream = await gw.stream()
    await assert_json_error(stream, 302, "BACKEND_ERROR")
    assert "location" not in stream.headers
    assert len(backend.calls) == 1


@pytest.mark.gen_test(timeout=10)
async def test_backend_that_answers_too_late_gives_504(gateway, backend):
    backend.connect_answer = Answer(delay=1.0)
    gw = gateway(callback_timeout_seconds=0.2)
    started = time.monotonic()
    stream = await gw.stream()
    elapsed = time.monotonic() - started
    await assert_json_error(stream, 504, "GATEWAY_TIMEOUT")
    assert 0.15 <= elapsed < 0.9, elapsed  # the timeout, not the backend's answer, ended it


@pytest.mark.gen_test(timeout=10)
async def test_refused_callback_connection_gives_503_backend_unavailable(gateway):
    gw = gateway(callback_url="http://127.0.0.1:%d/callback" % unused_port())
    stream = await gw.stream()
    await assert_json_error(stream, 503, "BACKEND_UNAVAILABLE")


@pytest.mark.gen_test(timeout=10)
async def test_backend_dropping_the_connection_gives_503_backend_unavailable(gateway, backend):
    backend.connect_answer = Answer(drop=True)
    gw = gateway()
    stream = await gw.stream()
    await assert_json_error(stream, 503, "BACKEND_UNAVAILABLE")
    assert len(backend.of("connect")) >= 1


@pytest.mark.gen_test(timeout=10)
async def test_a_connect_the_backend_drops_on_a_pooled_connection_is_resent_once_at_most(
    gateway, backend
):
    # The backend read the connect and closed a reused keep-alive connection without answering.
    # libcurl cannot tell this from an idle connection the backend closed just as it was
    # reused (the common race it protects against), so it sends the same request once more on
    # a fresh connection: same token, same body. Never a third time; the client gets 503.
    gw = gateway()
    await gw.open("/sse/warm")
    backend.connect_answer = Answer(drop=True)
    stream = await gw.stream("/sse/dropped")
    await assert_json_error(stream, 503, "BACKEND_UNAVAILABLE")
    sent = connects_for(backend, "/sse/dropped")
    assert 1 <= len(sent) <= 2
    assert len({c.raw for c in sent}) == 1


BAD_CHANNELS = [
    b'{"channels": "x"}',
    b'{"channels": [1]}',
    b'{"channels": null}',
    b'{"channels": {"a": 1}}',
    b'{"channels": [""]}',
    b'{"channels": ["has space"]}',
    b'{"channels": ["caf\xc3\xa9"]}',
    json.dumps({"channels": ["c" * 201]}).encode(),
    json.dumps({"channels": ["c%d" % i for i in range(101)]}).encode(),
    b'{"bindings": "x"}',
    b'{"bindings": [["nested"]]}',
]


@pytest.mark.parametrize("body", BAD_CHANNELS, ids=lambda b: b[:30].decode("utf-8", "replace"))
@pytest.mark.gen_test(timeout=10)
async def test_2xx_with_unusable_channels_gives_502(gateway, backend, body):
    backend.connect_answer = Answer(status=200, body=body)
    gw = gateway()
    stream = await gw.stream()
    await assert_json_error(stream, 502, "BAD_CALLBACK_RESPONSE")


GOOD_BODIES = [
    b"OK",
    b"",
    b"[1,2]",
    b"null",
    b'"a string"',
    b"{not json",
    b'{"other": 1}',
    b'{"channels": []}',
    json.dumps({"channels": ["c%d" % i for i in range(100)]}).encode(),
    json.dumps({"bindings": ["!~" + "c" * 198]}).encode(),
]


@pytest.mark.parametrize("body", GOOD_BODIES, ids=lambda b: b[:30].decode("utf-8", "replace"))
@pytest.mark.gen_test(timeout=10)
async def test_2xx_with_a_usable_or_foreign_body_opens_the_stream(gateway, backend, body):
    backend.connect_answer = Answer(status=200, body=body)
    gw = gateway()
    stream = await gw.stream()
    assert_stream_head(stream)


@pytest.mark.gen_test(timeout=10)
async def test_without_callback_url_streams_get_503_and_no_callback(gateway, backend):
    gw = gateway(callback_url=None)
    stream = await gw.stream()
    await assert_json_error(stream, 503, "SERVICE_NOT_CONFIGURED")
    assert backend.calls == []


@pytest.mark.gen_test(timeout=10)
async def test_nothing_reaches_the_client_before_the_backend_answers(gateway, backend):
    answered_at: list[float] = []

    async def slow_backend(body):
        await backend.pause(0.3)
        answered_at.append(time.monotonic())  # the fake answers right after this hook

    backend.on_connect = slow_backend
    gw = gateway()
    head_at: list[float] = []

    async def client():
        stream = await gw.stream()
        head_at.append(time.monotonic())
        return stream

    task = asyncio.ensure_future(client())
    await backend.wait_for_calls("connect")
    assert not task.done()
    stream = await task
    assert_stream_head(stream)
    assert answered_at and head_at[0] >= answered_at[0], (answered_at, head_at)


@pytest.mark.gen_test(timeout=10)
async def test_a_refusal_after_a_slow_callback_still_gets_its_own_status(gateway, backend):
    # Had the gateway sent "200" early to keep the client waiting, it could not send 403 now.
    backend.connect_answer = Answer(status=403, delay=0.3)
    gw = gateway()
    stream = await gw.stream()
    await assert_json_error(stream, 403, "BACKEND_FORBIDDEN")


# -- the connect callback (PROTOCOL 1.2 and 3) ------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_connect_callback_body_is_compact_json_with_token_url_and_headers(gateway, backend):
    gw = gateway()
    await gw.open("/sse/room/7?user=42", headers={"Authorization": "Bearer t"})
    (connect,) = await backend.wait_for_calls("connect")
    body = connect.body
    assert set(body) == {"action", "token", "request"}
    assert body["action"] == "connect"
    assert is_uuid4(body["token"]), body["token"]
    assert set(body["request"]) == {"url", "headers"}
    assert body["request"]["url"] == "/sse/room/7?user=42"
    headers = body["request"]["headers"]
    assert headers["authorization"] == "Bearer t"
    assert headers["host"] == "127.0.0.1:%d" % gw.port
    assert connect.headers["content-type"].split(";")[0].strip() == "application/json"
    compact = {
        json.dumps(body, separators=(",", ":"), ensure_ascii=escaped).encode()
        for escaped in (True, False)
    }
    assert connect.raw in compact, connect.raw


ODD_TARGETS = [
    "/sse/x?b=2&a=1",
    "/sse/a%2Fb/c?x=1&x=2&y=%20z&empty=&q=caf%C3%A9",
    "/sse/p+q?a=b+c&d=%2B&e=%2b",
    "/sse/x?",
    "/sse//double//slash/",
    "/sse/%7Etilde/..%2F.%2e?flag&=&a==b",
    "/sse/UPPER/Case?Key=Val&key=val",
    "/sse/semi;colon?x=%3B;y=1",
]


@pytest.mark.parametrize("target", ODD_TARGETS)
@pytest.mark.gen_test(timeout=10)
async def test_connect_callback_url_is_the_raw_request_target(gateway, backend, target):
    gw = gateway()
    await gw.open(target)
    (connect,) = await backend.wait_for_calls("connect")
    assert connect.body["request"]["url"] == target


@pytest.mark.gen_test(timeout=10)
async def test_connect_callback_headers_are_lowercased_and_repeats_joined(gateway, backend):
    gw = gateway()
    await gw.open(
        "/sse/h",
        headers=[
            ("X-CamelCase-Header", "Keeps Its Case"),
            ("X-Multi", "one"),
            ("Cookie", "a=1"),
            ("x-multi", "two"),
            ("Cookie", "b=2; c=3"),
            ("X-MULTI", "three"),
        ],
    )
    (connect,) = await backend.wait_for_calls("connect")
    headers = connect.body["request"]["headers"]
    assert all(name == name.lower() for name in headers), headers
    assert headers["x-camelcase-header"] == "Keeps Its Case"
    assert headers["x-multi"] == "one, two, three"
    assert headers["cookie"] == "a=1; b=2; c=3"


@pytest.mark.gen_test(timeout=10)
async def test_client_request_id_is_forwarded_to_the_backend(gateway, backend):
    gw = gateway()
    await gw.open("/sse/rid", headers={"X-Request-ID": "req-abc-123"})
    (connect,) = await backend.wait_for_calls("connect")
    assert connect.headers["x-request-id"] == "req-abc-123"


@pytest.mark.gen_test(timeout=10)
async def test_a_request_id_is_generated_when_the_client_sends_none(gateway, backend):
    gw = gateway()
    await gw.open("/sse/a")
    await gw.open("/sse/b")
    connects = await backend.wait_for_calls("connect", count=2)
    ids = [c.headers.get("x-request-id", "") for c in connects]
    assert all(ids) and ids[0] != ids[1], ids


# -- routing (SSE_PATH_PREFIX) -----------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_custom_prefix_serves_its_paths_and_404s_the_default_one(gateway, backend):
    gw = gateway(sse_path_prefix="/events/")
    await gw.open("/events/feed?x=1")
    (connect,) = await backend.wait_for_calls("connect")
    assert connect.body["request"]["url"] == "/events/feed?x=1"
    stream = await gw.stream("/sse/feed")
    await assert_json_error(stream, 404, "NOT_FOUND", cors=False)
    # The 404 came without asking the backend; a later stream proves no callback was pending.
    await gw.open("/events/later")
    await backend.wait_for_calls("connect", count=2)
    assert [c.body["request"]["url"] for c in backend.calls] == [
        "/events/feed?x=1",
        "/events/later",
    ]


@pytest.mark.gen_test(timeout=10)
async def test_root_prefix_streams_any_path_but_keeps_reserved_ones(gateway, backend):
    gw = gateway(sse_path_prefix="/")
    stream = await gw.open("/anything/at/all?q=1")
    (connect,) = await backend.wait_for_calls("connect")
    assert connect.body["request"]["url"] == "/anything/at/all?q=1"

    health = await gw.get("/healthz")
    assert health.code == 200 and json.loads(health.body) == {"status": "ok"}
    ready = await gw.get("/readyz")
    assert ready.code == 200 and json.loads(ready.body)["status"] == "ready"
    code, answer = await gw.send({"token": connect.token, "event": {"data": "via /internal"}})
    assert (code, answer) == (200, {"status": "ok"})
    assert [e.data for e in await stream.wait_events(1)] == ["via /internal"]

    for path in ("/internal/whatever", "/internal/"):
        other = await gw.stream(path)
        await assert_json_error(other, 404, "NOT_FOUND", cors=False)
        assert "access-control-allow-origin" not in other.headers  # internal: never CORS
    metrics = await gw.get("/metrics")
    assert not metrics.headers.get("Content-Type", "").startswith("text/event-stream")
    # Only /internal/... is the internal API: /internal itself and /internals are streams.
    for path in ("/internal?x=1", "/internals"):
        ordinary = await gw.open(path)
        assert ordinary.headers.get("access-control-allow-origin") == "*"  # a public endpoint
    # None of the reserved paths reached the backend as a stream.
    await gw.open("/last")
    await backend.wait_for_calls("connect", count=4)
    assert [c.body["request"]["url"] for c in backend.calls] == [
        "/anything/at/all?q=1",
        "/internal?x=1",
        "/internals",
        "/last",
    ]


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_concurrent_streams_get_distinct_tokens_and_only_their_own_events(gateway, backend):
    gw = gateway()
    paths = ["/sse/s%d" % i for i in range(3)]
    streams = await asyncio.gather(*(gw.open(p) for p in paths))
    await backend.wait_for_calls("connect", count=3)
    tokens = [connects_for(backend, p)[0].token for p in paths]
    assert len(set(tokens)) == 3 and all(is_uuid4(t) for t in tokens), tokens
    for round_ in ("a", "b"):
        for i, token in enumerate(tokens):
            code, _ = await gw.send({"token": token, "event": {"data": "%s%d" % (round_, i)}})
            assert code == 200
    for i, stream in enumerate(streams):
        events = await stream.wait_events(2)
        assert [e.data for e in events] == ["a%d" % i, "b%d" % i]


@pytest.mark.gen_test(timeout=30)
async def test_200_concurrent_streams_each_get_their_own_events_in_order(gateway, backend):
    gw = gateway()
    count, per_stream = 200, 5
    paths = ["/sse/many/%d" % i for i in range(count)]
    streams = await asyncio.gather(*(gw.open(p) for p in paths))
    await backend.wait_for_calls("connect", count=count)
    tokens = [connects_for(backend, p)[0].token for p in paths]
    assert len(set(tokens)) == count
    for n in range(per_stream):  # interleaved: event n goes to every stream before event n + 1
        results = await asyncio.gather(
            *(
                gw.send({"token": t, "event": {"data": "%d:%d" % (i, n)}})
                for i, t in enumerate(tokens)
            )
        )
        assert all(r == (200, {"status": "ok"}) for r in results)
    for i, stream in enumerate(streams):
        events = await stream.wait_events(per_stream)
        assert [e.data for e in events] == ["%d:%d" % (i, n) for n in range(per_stream)]
    connections = await gw.get("/internal/connections?limit=0", internal=True)
    assert json.loads(connections.body)["count"] == count


@pytest.mark.gen_test(timeout=30)
async def test_1000_rapid_events_arrive_all_and_in_order(gateway, backend):
    gw = gateway()
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    total = 1000
    for n in range(total):
        code, _ = await gw.send({"token": connect.token, "event": {"data": str(n), "id": str(n)}})
        assert code == 200
    events = await stream.wait_events(total, timeout=10)
    assert [e.data for e in events] == [str(n) for n in range(total)]
    assert stream.parser.last_event_id == str(total - 1)


# -- payloads (PROTOCOL 4.2 as seen on the stream) ---------------------------------------------


async def open_and_send(gw, backend, event):
    """Open a stream, send ``event`` to it; the stream once that event has arrived."""
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    code, answer = await gw.send({"token": connect.token, "event": event})
    assert (code, answer) == (200, {"status": "ok"})
    await stream.wait_events(1, timeout=10)
    return stream


@pytest.mark.gen_test(timeout=20)
async def test_a_1mb_event_arrives_intact(gateway, backend):
    rng = random.Random(1)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " "
    lines = ["".join(rng.choices(alphabet, k=1000)) for _ in range(1000)]
    data = "\n".join(lines)
    assert len(data) >= 1_000_000
    gw = gateway()
    stream = await open_and_send(gw, backend, {"data": data})
    expected = b"".join(b"data: %s\n" % line.encode() for line in lines) + b"\n"
    assert bytes(stream.raw) == expected
    assert [e.data for e in stream.events] == [data]


@pytest.mark.gen_test(timeout=10)
async def test_utf8_data_arrives_byte_exact(gateway, backend):
    data = "héllo wörld ✓ 🎉"
    gw = gateway()
    stream = await open_and_send(gw, backend, {"data": data})
    assert bytes(stream.raw) == ("data: %s\n\n" % data).encode("utf-8")
    assert stream.events[0].data == data


@pytest.mark.parametrize(
    ("data", "wire", "received"),
    [
        ("a\r\nb\rc\nd", b"data: a\ndata: b\ndata: c\ndata: d\n\n", "a\nb\nc\nd"),
        ("x\r\n", b"data: x\ndata: \n\n", "x\n"),
        ("\r\r\n\n", b"data: \ndata: \ndata: \ndata: \n\n", "\n\n\n"),
        ("", b"data: \n\n", ""),
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_multiline_data_arrives_as_lf_joined_lines(gateway, backend, data, wire, received):
    gw = gateway()
    stream = await open_and_send(gw, backend, {"data": data})
    assert bytes(stream.raw) == wire
    assert stream.events[0].data == received


@pytest.mark.gen_test(timeout=10)
async def test_named_event_gets_an_event_line(gateway, backend):
    gw = gateway()
    stream = await open_and_send(gw, backend, {"name": "update", "data": "x"})
    assert bytes(stream.raw) == b"event: update\ndata: x\n\n"
    assert (stream.events[0].type, stream.events[0].data) == ("update", "x")


@pytest.mark.gen_test(timeout=10)
async def test_event_id_from_the_backend_is_on_the_id_line(gateway, backend):
    gw = gateway()
    stream = await open_and_send(gw, backend, {"name": "update", "data": "x", "id": "17"})
    assert bytes(stream.raw) == b"id: 17\nevent: update\ndata: x\n\n"
    assert stream.events[0].last_event_id == "17"


# -- heartbeats (PROTOCOL 1.6) ------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_heartbeats_are_sent_periodically_and_not_to_the_backend(gateway, backend):
    gw = gateway(heartbeat_interval_seconds=0.1)
    stream = await gw.open()
    await stream.wait_until(lambda s: s.heartbeats >= 3)
    assert bytes(stream.raw) == b": heartbeat\n\n" * stream.heartbeats
    assert stream.events == []
    assert [c.action for c in backend.calls] == ["connect"]


@pytest.mark.gen_test(timeout=10)
async def test_first_heartbeat_comes_between_half_and_two_intervals_after_open(gateway, backend):
    interval = 0.2
    gw = gateway(heartbeat_interval_seconds=interval)

    async def first_heartbeat_delay(stream, opened):
        await stream.wait_until(lambda s: s.heartbeats >= 1)
        return time.monotonic() - opened

    first = await gw.open("/sse/first")
    delay = await first_heartbeat_delay(first, time.monotonic())
    assert interval / 2 * 0.9 <= delay <= 2 * interval + 0.1, delay
    # A shared timer just ticked: a stream opened late in this period sees the next tick
    # before it is half an interval old, and must not get a heartbeat from it.
    await asyncio.sleep(interval * 0.75)
    late = await gw.open("/sse/late")
    delay = await first_heartbeat_delay(late, time.monotonic())
    assert interval / 2 * 0.9 <= delay <= 2 * interval + 0.1, delay
