"""Exactly one disconnect per stream when an instance is cut off from Redis for longer than
its liveness TTL while the others still reach Redis (PROTOCOL 2 and 6, v2): the instance ends
its own streams before a survivor may claim them, and a stream that a survivor reported is
never reported again by its instance. Real redis-server, real gateway processes, a TTL of 3 s
(``REDIS_INSTANCE_TTL_SECONDS``)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.cluster.conftest import wait_ready
from tests.cluster.test_survival import until
from tests.support.helpers import open_with_token, read_to_clean_end
from tests.support.process import start_gateway
from tests.support.proxy import CuttableProxy

TTL = "3"


def survivor_reported(log: list[str]) -> bool:
    return any("reported by a survivor" in line for line in log)


@pytest.mark.gen_test(timeout=40)
async def test_an_instance_cut_off_from_redis_ends_its_streams_before_a_survivor_reports_them(
    backend, redis_server
):
    proxy = CuttableProxy(redis_server.port)
    await proxy.start()
    env = {"CALLBACK_URL": backend.url, "REDIS_INSTANCE_TTL_SECONDS": TTL}
    cut_off = await start_gateway({**env, "REDIS_URL": proxy.url})
    survivor = await start_gateway({**env, "REDIS_URL": redis_server.url})
    try:
        for gw in (cut_off, survivor):
            await wait_ready(gw)
        stream, token = await open_with_token(cut_off, backend, "/sse/partitioned")
        await proxy.cut()
        cut_at = time.monotonic()
        # The instance ends the stream itself (a clean end, with a retry hint), and does so
        # before its key can expire: nobody has reported the stream yet.
        assert await read_to_clean_end(stream, timeout=10)
        stream.close()
        assert time.monotonic() - cut_at < 3.0
        assert b"retry: " in stream.raw
        assert backend.of("disconnect", token) == []
        # Its key expires; the survivor claims the record and reports the stream.
        (lost,) = await backend.wait_for_calls("disconnect", token=token, timeout=15)
        assert (lost.body["reason"], lost.body["detail"]) == ("error", "instance_lost")
        # The link comes back: the instance finds the record claimed and reports nothing.
        await proxy.restore()
        await until(lambda: survivor_reported(cut_off.log), 15, "the release never ran")
        await wait_ready(cut_off)
        assert len(backend.of("disconnect", token)) == 1
    finally:
        await cut_off.stop()
        await survivor.stop()
        await proxy.cut()


@pytest.mark.gen_test(timeout=40)
async def test_a_stopped_instance_resumed_after_its_ttl_ends_its_streams_without_a_second_report(
    backend, redis_server
):
    env = {
        "CALLBACK_URL": backend.url,
        "REDIS_URL": redis_server.url,
        "REDIS_INSTANCE_TTL_SECONDS": TTL,
    }
    stopped = await start_gateway(env)
    survivor = await start_gateway(env)
    try:
        for gw in (stopped, survivor):
            await wait_ready(gw)
        stream, token = await open_with_token(stopped, backend, "/sse/frozen")
        stopped.signal(signal.SIGSTOP)
        try:
            (lost,) = await backend.wait_for_calls("disconnect", token=token, timeout=15)
        finally:
            stopped.signal(signal.SIGCONT)
        assert (lost.body["reason"], lost.body["detail"]) == ("error", "instance_lost")
        # Resumed, it ends the stream the backend was told had ended, and reports it no more.
        assert await read_to_clean_end(stream, timeout=10)
        stream.close()
        await until(lambda: survivor_reported(stopped.log), 15, "the release never ran")
        await wait_ready(stopped)
        assert len(backend.of("disconnect", token)) == 1
        # It serves again: a new stream there is reported once, by itself.
        later, later_token = await open_with_token(stopped, backend, "/sse/later")
        later.close()
        (own,) = await backend.wait_for_calls("disconnect", token=later_token, timeout=10)
        assert own.body["reason"] == "client_closed"
        assert len(backend.of("disconnect", token)) == 1
    finally:
        await stopped.stop()
        await survivor.stop()
