"""A cluster that survives (PROTOCOL 2 and 6, v2): no refusals at start-up, disconnects even
after a crash, no silent hole after a Redis restart, a silent subscription found by its
probe, Sentinel failover, and counts that cover every instance. Real redis-server processes,
real gateway processes where a process must die."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from tornado.httpclient import AsyncHTTPClient

from tests.cluster.conftest import RedisServer, wait_ready
from tests.support.backend import Answer
from tests.support.helpers import open_with_token
from tests.support.ports import unused_port
from tests.support.process import start_gateway
from tests.support.sse_client import open_stream


def channels(names: list[str]) -> Answer:
    return Answer(body=json.dumps({"channels": names}).encode())


async def until(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition()`` (bounded) for state that has no event to await."""
    deadline = time.monotonic() + timeout
    while not await _value(condition()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _value(result: Any) -> Any:
    return await result if asyncio.iscoroutine(result) else result


@pytest.mark.gen_test(timeout=60)
async def test_two_processes_on_a_fresh_redis_refuse_nothing_the_moment_healthz_answers(
    backend, redis_server
):
    gw = await start_gateway(
        {"CALLBACK_URL": backend.url, "REDIS_URL": redis_server.url}, "--processes", "2"
    )
    try:
        # start_gateway returned on the first "listening" line: a process that listens has
        # its link up. Everything at once, with no readiness wait.
        streams = await asyncio.gather(*(open_stream(gw.port, "/sse/s%d" % i) for i in range(20)))
        assert [s.status for s in streams] == [200] * 20
        connects = await backend.wait_for_calls("connect", 20)
        answers = await asyncio.gather(
            *(gw.send({"token": c.token, "event": {"data": "hi"}}) for c in connects)
        )
        assert answers == [(200, {"status": "ok"})] * 20
        for stream in streams:
            assert [e.data for e in await stream.wait_events(1)] == ["hi"]
            await stream.aclose()
    finally:
        await gw.stop()


@pytest.mark.gen_test(timeout=30)
async def test_a_process_waits_for_redis_before_it_listens(backend):
    server = RedisServer(unused_port())  # not started yet
    gw_task = asyncio.ensure_future(
        start_gateway({"CALLBACK_URL": backend.url, "REDIS_URL": server.url}, timeout=20)
    )
    await asyncio.sleep(1.0)  # the gateway is up and waiting for Redis; its port is closed
    assert not gw_task.done()
    server.start()
    gw = await gw_task
    try:
        stream = await open_stream(gw.port, "/sse/first")
        assert stream.status == 200
        await stream.aclose()
    finally:
        await gw.stop()
        server.kill()


@pytest.mark.gen_test(timeout=120)
async def test_a_killed_instances_streams_are_reported_once_by_one_survivor(cluster, backend):
    a, b, c = await cluster(3)
    streams = [await open_with_token(a, backend, "/sse/doomed/%d?x=%d" % (i, i)) for i in range(10)]
    connects = {c.token: c for c in backend.of("connect")}
    a.signal(signal.SIGKILL)
    await a.wait(10)
    started = time.monotonic()
    tokens = {token for _, token in streams}
    await backend.wait_for(
        lambda: {d.token for d in backend.of("disconnect")} >= tokens, timeout=60
    )
    assert time.monotonic() - started < 60
    for stream, _ in streams:
        stream.close()
    # A survivor's next look for dead instances would find nothing: the next stream's
    # disconnect arrives after any duplicate would have.
    later, token = await open_with_token(b, backend, "/sse/later")
    later.close()
    await backend.wait_for_calls("disconnect", token=token, timeout=10)
    for token in tokens:
        (disconnect,) = backend.of("disconnect", token)
        assert disconnect.body["reason"] == "error"
        assert disconnect.body["detail"] == "instance_lost"
        assert disconnect.body["request"] == connects[token].body["request"]
    urls = sorted(d.body["request"]["url"] for d in backend.of("disconnect") if d.token in tokens)
    assert urls == sorted("/sse/doomed/%d?x=%d" % (i, i) for i in range(10))


@pytest.mark.gen_test(timeout=120)
async def test_events_published_across_a_redis_restart_arrive_once_or_as_a_gap(
    cluster, backend, redis_server
):
    backend.connect_answer = channels(["room"])
    a, b = await cluster(2)
    readers = [
        (await open_with_token(gw, backend, "/sse/r%d" % i))[0] for i, gw in enumerate((a, b))
    ]
    accepted: list[str] = []
    stop = asyncio.Event()

    async def publish(gw: Any, name: str) -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            data = "%s%d" % (name, n)
            status, _ = await gw.send({"channel": "room", "event": {"data": data}})
            if status == 200:
                accepted.append(data)
            n += 1
            await asyncio.sleep(0.005)

    publishers = [asyncio.ensure_future(publish(gw, name)) for gw, name in ((a, "a"), (b, "b"))]
    await until(lambda: len(accepted) >= 50, 10, "publishing did not start")
    redis_server.kill()
    await asyncio.sleep(1.0)
    redis_server.start()
    back = time.monotonic()
    # Sends work again within 2 s of Redis being back, through both instances.
    for gw in (a, b):
        await until(lambda gw=gw: _send_ok(gw), 2.5, "sends do not work again")
    assert time.monotonic() - back < 3.0
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*publishers)
    marker = "end"
    assert (await a.send({"channel": "room", "event": {"data": marker}}))[0] == 200
    accepted.append(marker)
    for reader in readers:
        await reader.wait_until(lambda s: any(e.data == marker for e in s.events), 20)
        data = [e.data for e in reader.events]
        gaps = [e for e in reader.events if e.type == "history_gap"]
        assert len(data) == len(set(data)), "an event arrived twice"
        missing = [x for x in accepted if x not in set(data)]
        assert not missing or gaps, "events answered 200 never arrived and no gap said so"
        reader.close()


async def _send_ok(gw: Any) -> bool:
    status, _ = await gw.send({"channel": "probe", "event": {"data": "x"}})
    return status == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_killed_subscription_connection_is_found_by_the_probe_and_recovered(
    cluster, backend, redis_server
):
    backend.connect_answer = channels(["room"])
    a, b = await cluster(2)
    reader, _ = await open_with_token(a, backend, "/sse/reader")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.client_kill_filter(_type="pubsub")
    finally:
        await client.aclose()
    # Within the probe's timeout the subscription is back, and events flow again.
    deadline = time.monotonic() + 15
    n = 0
    while True:
        assert time.monotonic() < deadline, "the subscription did not recover"
        await b.send({"channel": "room", "event": {"data": "after-%d" % n}})
        try:
            await reader.wait_until(
                lambda s: any(e.data.startswith("after") for e in s.events), 0.5
            )
            break
        except TimeoutError:
            n += 1
    reader.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_paused_redis_makes_the_instance_not_ready_until_it_answers(cluster, redis_server):
    (a,) = await cluster(1)
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        await wait_ready(a, 503, timeout=20)  # found silent by the probe, not by an error
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    await wait_ready(a, 200, timeout=20)


@pytest.mark.gen_test(timeout=60)
async def test_the_connection_count_covers_every_process(cluster, backend):
    (gw,) = await cluster(1, "--processes", "2")
    streams = [await open_stream(gw.port, "/sse/c%d" % i) for i in range(4)]
    assert [s.status for s in streams] == [200] * 4
    try:
        counts = set()
        for _ in range(10):  # each request lands on either process
            answer = await AsyncHTTPClient().fetch(gw.base_url + "/internal/connections")
            response = json.loads(answer.body)
            counts.add(response["count"])
            assert all(len(c["instance"]) == 32 for c in response["connections"])
        assert counts == {4}
    finally:
        for stream in streams:
            await stream.aclose()


# -- Sentinel --------------------------------------------------------------------------------


class Sentinel:
    """A redis-sentinel watching ``primary`` as ``mymaster``, on a port of its own."""

    def __init__(self, primary: RedisServer, workdir: str) -> None:
        self.port = unused_port()
        self.conf = "%s/sentinel-%d.conf" % (workdir, self.port)
        with open(self.conf, "w") as f:
            f.write(
                "port %d\nbind 127.0.0.1\nprotected-mode no\n"
                "sentinel monitor mymaster 127.0.0.1 %d 1\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 5000\n" % (self.port, primary.port)
            )
        binary = shutil.which("redis-sentinel") or shutil.which("redis-server")
        assert binary
        args = [binary, self.conf] + ([] if binary.endswith("sentinel") else ["--sentinel"])
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:  # bounded by the deadline
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert time.monotonic() < deadline, "port %d never opened" % port
            time.sleep(0.05)


@pytest.mark.gen_test(timeout=120)
async def test_a_sentinel_failover_keeps_streams_and_delivers_publishes(
    backend, redis_server, tmp_path
):
    replica = RedisServer(unused_port())
    replica.start(replica_of=redis_server.port)
    sentinel = Sentinel(redis_server, str(tmp_path))
    backend.connect_answer = channels(["room"])
    env = {
        "CALLBACK_URL": backend.url,
        "REDIS_SENTINELS": "127.0.0.1:%d" % sentinel.port,
        "REDIS_SENTINEL_MASTER": "mymaster",
    }
    a = await start_gateway(env)
    b = await start_gateway(env)
    try:
        await wait_ready(a)
        await wait_ready(b)
        reader, _ = await open_with_token(a, backend, "/sse/reader")
        assert (await b.send({"channel": "room", "event": {"data": "before"}}))[0] == 200
        await reader.wait_events(1)
        client = aioredis.Redis(host="127.0.0.1", port=sentinel.port)
        await client.execute_command("SENTINEL FAILOVER mymaster")
        await client.aclose()
        failed_over = time.monotonic()
        sent = []
        while time.monotonic() - failed_over < 15:  # bounded: the contract gives 15 s
            data = "after-%d" % len(sent)
            status, _ = await b.send({"channel": "room", "event": {"data": data}})
            if status == 200:
                sent.append(data)
            if len(sent) >= 5:
                break
            await asyncio.sleep(0.2)
        assert len(sent) >= 5, "publishes did not work again after the failover"
        await reader.wait_until(lambda s: [e.data for e in s.events][-1] == sent[-1], 15)
        got = [e.data for e in reader.events if e.type == "message"]
        assert [x for x in got if x.startswith("after")] == sent or any(
            e.type == "history_gap" for e in reader.events
        )
        assert not reader.ended
        reader.close()
    finally:
        await a.stop()
        await b.stop()
        sentinel.stop()
        replica.kill()


@pytest.mark.gen_test(timeout=60)
async def test_a_shutdown_while_redis_is_unreachable_leaves_each_end_to_one_survivor(
    cluster, backend, redis_server
):
    a, b = await cluster(2, SHUTDOWN_TIMEOUT_SECONDS="2")
    streams = [await open_with_token(a, backend, "/sse/going/%d" % i) for i in range(5)]
    tokens = {token for _, token in streams}
    redis_server.pause()
    try:
        a.signal(signal.SIGTERM)
        for stream, _ in streams:  # the streams end at once, Redis or not
            await stream.read_to_end(timeout=10)
            stream.close()
        await a.wait(15)
    finally:
        redis_server.resume()
    # a could not release its records: b reports every stream, once, as instance_lost.
    await backend.wait_for(
        lambda: {d.token for d in backend.of("disconnect")} >= tokens, timeout=40
    )
    later, token = await open_with_token(b, backend, "/sse/later")
    later.close()
    await backend.wait_for_calls("disconnect", token=token, timeout=10)
    for token in tokens:
        (disconnect,) = backend.of("disconnect", token)
        assert disconnect.body["detail"] == "instance_lost"


@pytest.mark.gen_test(timeout=60)
async def test_a_shutdown_during_a_short_redis_stall_reports_its_own_streams_once(
    cluster, backend, redis_server
):
    a, b = await cluster(2, SHUTDOWN_TIMEOUT_SECONDS="10")
    streams = [await open_with_token(a, backend, "/sse/going/%d" % i) for i in range(5)]
    tokens = {token for _, token in streams}
    redis_server.pause()
    try:
        a.signal(signal.SIGTERM)
        for stream, _ in streams:
            await stream.read_to_end(timeout=10)
            stream.close()
        assert backend.of("disconnect") == []  # not before Redis says whose they are
    finally:
        redis_server.resume()
    await backend.wait_for(
        lambda: {d.token for d in backend.of("disconnect")} >= tokens, timeout=15
    )
    assert await a.wait(15) == 0
    for token in tokens:
        (disconnect,) = backend.of("disconnect", token)
        assert disconnect.body["detail"] == "shutdown"
