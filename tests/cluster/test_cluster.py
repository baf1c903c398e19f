"""Several gateway processes sharing one real Redis act as one gateway (PROTOCOL 6)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.cluster.conftest import ready_status, wait_ready
from tests.support.backend import Answer
from tests.support.helpers import open_with_token
from tests.support.ports import unused_ports
from tests.support.sse_client import open_stream


@pytest.mark.gen_test(timeout=60)
async def test_send_reaches_a_token_held_by_another_instance(cluster, backend):
    gateways = await cluster(3)
    streams = []
    try:
        for i, gw in enumerate(gateways):
            streams.append(await open_with_token(gw, backend, "/sse/on-%d" % i))
        for i, (_, token) in enumerate(streams):
            via = gateways[(i + 1) % 3]  # never the instance that holds the stream
            for n in range(5):
                assert await via.send({"token": token, "event": {"data": "%d-%d" % (i, n)}}) == (
                    200,
                    {"status": "ok"},
                )
        for i, (stream, _) in enumerate(streams):
            events = await stream.wait_events(5)
            assert [e.data for e in events] == ["%d-%d" % (i, n) for n in range(5)]
        # close through another instance: the stream ends, the token is then unknown everywhere
        stream, token = streams[0]
        assert await gateways[2].send({"token": token, "close": True}) == (200, {"status": "ok"})
        await stream.read_to_end()
        await backend.wait_for_calls("disconnect", token=token)
        for gw in gateways:
            status, body = await gw.send({"token": token, "event": {"data": "late"}})
            assert (status, body["error"]["code"]) == (404, "TOKEN_NOT_FOUND")
        status, _ = await gateways[1].send({"token": "no-such-token", "event": {"data": "x"}})
        assert status == 404
    finally:
        for stream, _ in streams:
            stream.close()


@pytest.mark.gen_test(timeout=60)
async def test_channel_fanout_reaches_every_instance_once_in_order(cluster, backend):
    backend.connect_answer = Answer(body=b'{"channels": ["room"]}')
    gateways = await cluster(3)
    streams = []
    try:
        for i, gw in enumerate(gateways):
            for j in range(10):
                streams.append((await open_with_token(gw, backend, "/sse/r%d-%d" % (i, j)))[0])
        for n in range(30):
            via = gateways[n % 3]
            assert await via.send({"channel": "room", "event": {"data": str(n)}}) == (
                200,
                {"status": "ok"},
            )
        for stream in streams:
            events = await stream.wait_events(30)
            assert [e.data for e in events] == [str(n) for n in range(30)]
            ids = [int(e.last_event_id) for e in events]
            assert ids == sorted(set(ids))
        assert len({tuple(e.last_event_id for e in s.events) for s in streams}) == 1
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.gen_test(timeout=60)
async def test_replay_after_reconnecting_to_another_instance(cluster, backend):
    backend.connect_answer = Answer(body=b'{"channels": ["feed"]}')
    a, b, c = await cluster(3)
    first, _ = await open_with_token(a, backend, "/sse/first")
    for n in range(5):
        await c.send({"channel": "feed", "event": {"data": str(n)}})
    events = await first.wait_events(5)
    await first.aclose()
    for n in range(5, 10):  # missed while away
        await c.send({"channel": "feed", "event": {"data": str(n)}})
    second, _ = await open_with_token(
        b, backend, "/sse/second", {"Last-Event-ID": events[-1].last_event_id}
    )
    try:
        await a.send({"channel": "feed", "event": {"data": "live"}})
        got = await second.wait_events(6)
        assert [e.data for e in got] == ["5", "6", "7", "8", "9", "live"]
    finally:
        second.close()


@pytest.mark.gen_test(timeout=60)
async def test_buffered_send_through_another_instance_during_connect(cluster, backend):
    a, b = await cluster(2)
    answers = []

    async def greet(body):
        answers.append(await b.send({"token": body["token"], "event": {"data": "hello"}}))

    backend.on_connect = greet
    stream, _ = await open_with_token(a, backend, "/sse/greeted")
    try:
        assert answers == [(200, {"status": "buffered"})]
        assert [e.data for e in await stream.wait_events(1)] == ["hello"]
    finally:
        stream.close()


@pytest.mark.gen_test(timeout=90)
async def test_redis_outage_keeps_streams_alive_and_sends_resume_after(
    cluster, backend, redis_server
):
    a, b = await cluster(2)
    stream_a, token_a = await open_with_token(a, backend, "/sse/a")
    stream_b, token_b = await open_with_token(b, backend, "/sse/b")
    try:
        redis_server.kill()
        await wait_ready(a, 503)
        await wait_ready(b, 503)
        status, body = await ready_status(a)
        assert body["status"] == "not_ready" and "Redis" in " ".join(body["reasons"])
        # A send that must cross instances cannot be routed: 503, never a silent 200.
        status, body = await a.send({"token": token_b, "event": {"data": "x"}})
        assert (status, body["error"]["code"]) == (503, "BROKER_UNAVAILABLE")
        status, body = await a.send({"channel": "any", "event": {"data": "x"}})
        assert (status, body["error"]["code"]) == (503, "BROKER_UNAVAILABLE")
        # Local tokens still work, and heartbeats go on.
        assert await a.send({"token": token_a, "event": {"data": "local"}}) == (
            200,
            {"status": "ok"},
        )
        beats = stream_b.heartbeats
        await stream_b.wait_until(lambda s: s.heartbeats >= beats + 2, timeout=10)
        refused = await open_stream(a.port, "/sse/new")
        assert refused.status == 503
        refused.close()

        redis_server.start()
        await wait_ready(a, 200, timeout=30)
        await wait_ready(b, 200, timeout=30)
        assert await a.send({"token": token_b, "event": {"data": "back"}}) == (
            200,
            {"status": "ok"},
        )
        assert [e.data for e in await stream_b.wait_events(1)] == ["back"]
        assert [e.data for e in await stream_a.wait_events(1)] == ["local"]
        assert not stream_a.ended and not stream_b.ended
    finally:
        stream_a.close()
        stream_b.close()


@pytest.mark.gen_test(timeout=90)
async def test_tokens_of_a_killed_instance_answer_404_from_the_others(cluster, backend):
    a, b = await cluster(2)
    stream, token = await open_with_token(a, backend, "/sse/doomed")
    a.signal(signal.SIGKILL)
    await a.wait(10)
    stream.close()
    started = time.monotonic()
    while True:  # bounded: the contract gives 60 s
        status, body = await b.send({"token": token, "event": {"data": "x"}})
        if status == 404:
            break
        assert status == 503, (status, body)
        assert time.monotonic() - started < 60
        await asyncio.sleep(0.25)
    assert body["error"]["code"] == "TOKEN_NOT_FOUND"
    assert time.monotonic() - started < 60


@pytest.mark.gen_test(timeout=90)
async def test_processes_2_share_the_port_and_route_through_redis(cluster, backend):
    (gw,) = await cluster(1, "--processes", "2")
    streams = []
    try:
        for i in range(8):
            streams.append(await open_with_token(gw, backend, "/sse/p%d" % i))
        for _, token in streams:
            for n in range(3):  # each send lands on either process
                assert await gw.send({"token": token, "event": {"data": "%d" % n}}) == (
                    200,
                    {"status": "ok"},
                )
        for stream, _ in streams:
            assert [e.data for e in await stream.wait_events(3)] == ["0", "1", "2"]
    finally:
        for stream, _ in streams:
            stream.close()
    gw.signal(signal.SIGTERM)
    assert await gw.wait(30) == 0, "\n".join(gw.log[-40:])
    disconnects = await backend.wait_for_calls("disconnect", 8)
    assert {c.token for c in disconnects} == {t for _, t in streams}


@pytest.mark.gen_test(timeout=60)
async def test_a_burst_of_concurrent_connects_all_register_with_redis(cluster, backend):
    (gw,) = await cluster(1)
    streams = await asyncio.gather(*(open_stream(gw.port, "/sse/b%d" % i) for i in range(300)))
    try:
        assert [s.status for s in streams].count(200) == 300
        status, body = await ready_status(gw)
        assert status == 200, body
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.gen_test(timeout=60)
async def test_each_process_serves_its_own_metrics_on_its_own_port(cluster, backend):
    internal = unused_ports(3)
    (gw,) = await cluster(1, "--processes", "2", INTERNAL_PORT=str(internal))
    # Each process i serves the internal API and its own /metrics on INTERNAL_PORT + 1 + i;
    # the processes bind them as they start, so wait (bounded) until both answer.
    deadline = time.monotonic() + 20
    pages = {}
    for port in (internal + 1, internal + 2):
        while port not in pages:
            try:
                response = await AsyncHTTPClient().fetch("http://127.0.0.1:%d/metrics" % port)
                pages[port] = response.body.decode()
            except OSError:  # not bound yet
                assert time.monotonic() < deadline, "no metrics on port %d:\n%s" % (
                    port,
                    "\n".join(gw.log),
                )
                await asyncio.sleep(0.1)
    assert all("tornado_sse_open_streams" in page for page in pages.values())
    shared = await AsyncHTTPClient().fetch("http://127.0.0.1:%d/metrics" % internal)
    assert b"tornado_sse_open_streams" in shared.body
    public = await AsyncHTTPClient().fetch(gw.base_url + "/metrics", raise_error=False)
    assert public.code == 404


@pytest.mark.gen_test(timeout=60)
async def test_events_bigger_than_a_read_of_the_subscription_arrive_whole_and_in_order(
    cluster, backend
):
    # 700,000 bytes of data is read from the subscription in several reads (256 KiB each), and
    # the small events around it share reads with its first and last part.
    backend.connect_answer = Answer(body=b'{"channels": ["room"]}')
    a, b = await cluster(2)
    stream = (await open_with_token(a, backend, "/sse/reader"))[0]
    try:
        sent = ["small-%d" % n for n in range(20)]
        sent[10] = "".join(chr(ord("a") + n % 26) for n in range(700_000))
        for data in sent:
            assert await b.send({"channel": "room", "event": {"data": data}}) == (
                200,
                {"status": "ok"},
            )
        events = await stream.wait_events(20)
        assert [e.data for e in events] == sent
        # ...through the live subscription, not through a restart of the link and a replay
        assert [line for line in a.log if "redis link down" in line] == []
    finally:
        stream.close()
