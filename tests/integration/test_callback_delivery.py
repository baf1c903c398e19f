"""How callbacks reach the backend (PROTOCOL 1.4, 2 and 3, v2): never twice by accident, with an
``Idempotency-Key``, retried only when asked, within a deadline that includes waiting for a free
connection, and bounded in what they read back. Every test watches what a real backend server
receives and what a real client sees."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import time
import uuid
from collections import Counter

import pytest

from tests.support.backend import Answer, Callback, FakeBackend
from tests.support.helpers import assert_json_error, connects_for, open_and_close_another
from tests.support.ports import unused_port
from tests.support.process import rss_bytes, start_gateway
from tests.support.raw_http import send_request
from tests.support.sse_client import open_stream

MIB = 1024 * 1024


def assert_each_once(calls: list[Callback]) -> None:
    """Every ``(action, token)`` the backend received, it received exactly once."""
    counts = Counter((c.action, c.token) for c in calls)
    repeated = {pair: n for pair, n in counts.items() if n > 1}
    assert not repeated, repeated


async def open_and_leave(gw, paths: list[str]) -> list[int]:
    """Open a stream for each of ``paths`` at once, read each answer's status, then leave."""
    streams = await asyncio.gather(*(gw.stream(path) for path in paths))
    for stream in streams:
        await stream.aclose()
    return [s.status for s in streams]


@pytest.fixture
def dropping_backend(io_loop):
    fake = FakeBackend(drop_reused=True)
    yield fake
    fake.close()


@pytest.fixture
def idle_backend(io_loop):
    fake = FakeBackend(idle_timeout=1.0)
    yield fake
    fake.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_backend_that_drops_reused_connections_hears_each_callback_once(
    gateway, dropping_backend
):
    backend = dropping_backend
    gw = gateway(callback_url=backend.url)
    statuses: list[int] = []
    for wave in range(10):  # 200 streams, 20 at a time, so that connections are reused
        statuses += await open_and_leave(gw, ["/sse/d%d-%d" % (wave, i) for i in range(20)])
    connects = backend.of("connect")
    assert len(connects) == 200 and len({c.token for c in connects}) == 200
    # Every connect was accepted or lost after it was written: either way the backend may know
    # the token, so each one is told its disconnect exactly once.
    await backend.wait_for_calls("disconnect", 200, timeout=20)
    assert_each_once(backend.calls)
    assert {c.token for c in backend.of("disconnect")} == {c.token for c in connects}
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses


@pytest.mark.gen_test(timeout=60)
async def test_a_backend_with_a_one_second_keep_alive_hears_each_callback_once(
    gateway, idle_backend
):
    backend = idle_backend
    gw = gateway(callback_url=backend.url)
    statuses: list[int] = []
    # Gaps below the backend's 1 s keep-alive (connections are reused) and above it (they are
    # not: CALLBACK_KEEPALIVE_SECONDS is 1 by default).
    for wave, gap in enumerate([0.3, 0.6, 1.3, 0.2, 2.0]):
        statuses += await open_and_leave(gw, ["/sse/k%d-%d" % (wave, i) for i in range(40)])
        await backend.wait_for_calls("disconnect", 40 * (wave + 1), timeout=10)
        await asyncio.sleep(gap)
    connects, disconnects = backend.of("connect"), backend.of("disconnect")
    assert_each_once(backend.calls)
    # A connect written just as the backend closed its connection may never have been read:
    # its client gets 503 and the backend still hears the disconnect (it might know the token).
    assert {c.token for c in connects} <= {c.token for c in disconnects}
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 195, Counter(statuses)


@pytest.mark.gen_test(timeout=20)
async def test_every_callback_carries_a_unique_uuid4_idempotency_key(gateway, backend):
    gw = gateway()
    for i in range(5):
        await open_and_close_another(gw, backend, "/sse/key%d" % i)
    keys = [c.headers.get("idempotency-key") for c in backend.calls]
    assert len(keys) == 10 and len(set(keys)) == 10
    assert all(uuid.UUID(k).version == 4 and str(uuid.UUID(k)) == k for k in keys)


@pytest.mark.gen_test(timeout=20)
async def test_a_failed_disconnect_is_retried_with_the_same_key_until_it_succeeds(gateway, backend):
    backend.disconnect_answers = [Answer(status=500), Answer(status=500)]
    gw = gateway(disconnect_retry_seconds=10.0)
    stream = await gw.open("/sse/retry")
    (connect,) = await backend.wait_for_calls("connect")
    await stream.aclose()
    attempts = await backend.wait_for_calls("disconnect", 3, token=connect.token, timeout=10)
    assert [c.raw for c in attempts] == [attempts[0].raw] * 3  # the same body each time
    assert len({c.headers["idempotency-key"] for c in attempts}) == 1
    assert attempts[0].headers["idempotency-key"] != connect.headers["idempotency-key"]
    # Answered 200 at the third attempt: no fourth, as the next stream's disconnect shows.
    await open_and_close_another(gw, backend, "/sse/after-retry")
    assert len(backend.of("disconnect", connect.token)) == 3


@pytest.mark.gen_test(timeout=20)
async def test_without_retries_a_failed_disconnect_is_sent_once(gateway, backend):
    backend.disconnect_answers = [Answer(status=500)]
    gw = gateway()
    stream = await gw.open("/sse/once")
    (connect,) = await backend.wait_for_calls("connect")
    await stream.aclose()
    await backend.wait_for_calls("disconnect", token=connect.token)
    await open_and_close_another(gw, backend, "/sse/after-once")
    assert len(backend.of("disconnect", connect.token)) == 1


@pytest.mark.gen_test(timeout=20)
async def test_a_backend_that_reads_the_connect_then_drops_hears_one_disconnect(gateway, backend):
    backend.connect_answer = Answer(drop=True)
    gw = gateway()
    stream = await gw.stream("/sse/read-then-drop")
    body = await assert_json_error(stream, 503, "BACKEND_UNAVAILABLE")
    (connect,) = connects_for(backend, "/sse/read-then-drop")
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert disconnect.body["reason"] == "error"
    assert disconnect.body["detail"] == "connect_timeout"
    assert disconnect.body["request"] == connect.body["request"]
    assert "127.0.0.1" not in json.dumps(body)


@pytest.mark.gen_test(timeout=20)
async def test_a_backend_status_of_599_is_passed_through(gateway, backend):
    backend.connect_answer = Answer(status=599)
    gw = gateway()
    stream = await gw.stream("/sse/599")
    await assert_json_error(stream, 599, "BACKEND_ERROR")


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (None, 503, "BACKEND_UNAVAILABLE"),  # nothing listens on the callback port
        (Answer(delay=5.0), 504, "GATEWAY_TIMEOUT"),
        (Answer(drop=True), 503, "BACKEND_UNAVAILABLE"),
        (Answer(status=500, body=b"Traceback at db.internal:5432"), 500, "BACKEND_ERROR"),
    ],
    ids=["unreachable", "timing-out", "dropping", "failing"],
)
@pytest.mark.gen_test(timeout=20)
async def test_public_errors_name_no_address_port_or_library(
    gateway, backend, answer, status, code
):
    if answer is None:
        port = unused_port()
        gw = gateway(callback_url="http://127.0.0.1:%d/callback" % port)
    else:
        port = backend.port
        backend.connect_answer = answer
        gw = gateway(callback_timeout_seconds=0.5)
    stream = await gw.stream("/sse/leak")
    body = json.dumps(await assert_json_error(stream, status, code))
    for leak in ("127.0.0.1", str(port), "/callback", "Curl", "curl", "Errno", "db.internal"):
        assert leak not in body, body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.gen_test(timeout=60)
async def test_a_50_mb_connect_answer_is_refused_without_the_memory_growing(backend, chunked):
    backend.connect_answer = Answer(
        body=b'{"channels": []' + b" " * (50 * MIB) + b"}", chunked=chunked
    )
    gw = await start_gateway({"CALLBACK_URL": backend.url})
    try:
        first = await open_stream(gw.port, "/sse/warm-up")  # imports and pools are in place
        await first.read_to_end()
        await first.aclose()
        before = rss_bytes(gw.pid)
        for i in range(3):
            stream = await open_stream(gw.port, "/sse/huge%d" % i)
            await assert_json_error(stream, 502, "BAD_CALLBACK_RESPONSE")
            await stream.aclose()
        grown = rss_bytes(gw.pid) - before
        assert grown < 8 * MIB, grown  # one answer read whole would be 50 MiB
        (disconnect,) = await backend.wait_for_calls(
            "disconnect", token=connects_for(backend, "/sse/huge0")[0].token
        )
        assert disconnect.body["detail"] == "bad_callback_response"
    finally:
        await gw.stop()


@pytest.mark.gen_test(timeout=30)
async def test_a_compressed_connect_answer_is_decoded_and_bounded_once_decoded(gateway, backend):
    gw = gateway()
    answer = json.dumps({"channels": ["news"], "user": "ann"}).encode()
    backend.connect_answer = Answer(
        body=gzip.compress(answer), headers={"Content-Encoding": "gzip"}
    )
    stream = await open_stream(gw.port, "/sse/zipped")
    assert stream.status == 200
    (connect,) = await backend.wait_for_calls("connect")
    assert "gzip" in connect.headers.get("accept-encoding", "")
    assert await gw.send({"channel": "news", "event": {"data": "hi"}}) == (200, {"status": "ok"})
    assert [e.data for e in await stream.wait_events(1)] == ["hi"]
    await stream.aclose()
    # 64 KiB and more once decoded, a few hundred bytes on the wire: refused all the same.
    bomb = b'{"channels": []' + b" " * (4 * MIB) + b"}"
    backend.connect_answer = Answer(body=gzip.compress(bomb), headers={"Content-Encoding": "gzip"})
    refused = await open_stream(gw.port, "/sse/bomb")
    await assert_json_error(refused, 502, "BAD_CALLBACK_RESPONSE")
    await refused.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_connects_queued_behind_a_hanging_backend_get_504_within_the_timeout(
    gateway, backend
):
    backend.connect_answer = Answer(delay=30.0)
    gw = gateway(callback_timeout_seconds=2.0, callback_max_clients=100)
    started = time.monotonic()
    streams = await asyncio.gather(
        *(open_stream(gw.port, "/sse/q%d" % i, timeout=10) for i in range(200))
    )
    elapsed = time.monotonic() - started
    try:
        assert [s.status for s in streams] == [504] * 200
        assert elapsed < 5.0, elapsed
        # Those that were sent timed out: the backend may know them, so each hears once.
        connects = backend.of("connect")
        assert 100 <= len(connects) <= 200
        await backend.wait_for_calls("disconnect", len(connects), timeout=10)
        assert_each_once(backend.calls)
        assert {c.body["detail"] for c in backend.of("disconnect")} == {"connect_timeout"}
    finally:
        for stream in streams:
            await stream.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_a_connect_whose_client_left_before_it_was_sent_is_never_sent(gateway, backend):
    backend.connect_answer = Answer(delay=30.0)
    gw = gateway(callback_timeout_seconds=1.0, callback_max_clients=2)
    waiting = [asyncio.ensure_future(open_stream(gw.port, "/sse/hold%d" % i)) for i in range(2)]
    await backend.wait_for_calls("connect", 2)  # both slots are taken by hanging callbacks
    # These wait for a slot; their clients leave before one is free.
    pending = [await send_request(gw.port, "/sse/left%d" % i) for i in range(10)]
    for _, writer in pending:
        writer.close()
    for stream in await asyncio.gather(*waiting):
        assert stream.status == 504
        await stream.aclose()
    backend.connect_answer = Answer()
    await open_and_close_another(gw, backend, "/sse/after-leavers")
    assert [c for c in backend.of("connect") if "/left" in c.body["request"]["url"]] == []
    # The two hanging connects timed out: the backend may know them, so each hears once.
    assert len(backend.of("disconnect")) == 3


@pytest.mark.gen_test(timeout=30)
async def test_disconnects_are_not_starved_by_a_storm_of_connects(gateway, backend):
    gw = gateway(callback_timeout_seconds=5.0, callback_max_clients=2)
    stream = await gw.open("/sse/leaving")
    (connect,) = await backend.wait_for_calls("connect")
    backend.connect_answer = Answer(delay=1.0)
    storm = [
        asyncio.ensure_future(open_stream(gw.port, "/sse/s%d" % i, timeout=10)) for i in range(20)
    ]
    await backend.wait_for_calls("connect", 3)  # both slots now serve slow connects
    left_at = time.monotonic()
    await stream.aclose()
    await backend.wait_for_calls("disconnect", token=connect.token, timeout=5)
    waited = time.monotonic() - left_at
    # The disconnect takes the first slot that frees (about 1 s), not one behind 18 connects.
    assert waited < 2.0, waited
    for opened in await asyncio.gather(*storm):
        await opened.aclose()


@pytest.mark.gen_test(timeout=30)
async def test_a_shutdown_that_times_out_says_how_many_disconnects_were_undelivered(backend):
    backend.disconnect_answer = Answer(delay=20.0)  # never answers in time
    gw = await start_gateway(
        {"CALLBACK_URL": backend.url, "SHUTDOWN_TIMEOUT_SECONDS": "1", "LOG_LEVEL": "debug"}
    )
    streams = [await open_stream(gw.port, "/sse/u%d" % i) for i in range(3)]
    assert [s.status for s in streams] == [200] * 3
    tokens = {c.token for c in await backend.wait_for_calls("connect", 3)}
    gw.signal(signal.SIGTERM)
    assert await gw.wait(15) == 0
    for stream in streams:
        await stream.aclose()
    (line,) = [line for line in gw.log if "undelivered=" in line]
    assert "undelivered=3" in line, line
    listed = {line.split("token=")[1].split()[0] for line in gw.log if "undelivered token=" in line}
    assert listed == tokens


@pytest.mark.gen_test(timeout=20)
async def test_a_large_disconnect_answer_after_a_connect_on_the_same_handle_is_a_success(
    gateway, backend
):
    # One callback handle carries both callbacks; the connect's bound on its answer must not
    # make the disconnect's long answer a failure (and a retry).
    backend.disconnect_answers = [Answer(status=200, body=b"x" * (200 * 1024))]
    gw = gateway(disconnect_retry_seconds=10.0, callback_max_clients=1)
    stream = await gw.open("/sse/long-answer")
    (connect,) = await backend.wait_for_calls("connect")
    await stream.aclose()
    await backend.wait_for_calls("disconnect", token=connect.token)
    await open_and_close_another(gw, backend, "/sse/after-long-answer")
    assert len(backend.of("disconnect", connect.token)) == 1
