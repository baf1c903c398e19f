"""The Redis link's subscription against a real Redis: what it reads in bulk arrives whole and
in order, over RESP3 and RESP2, and a notice that the endpoint moves makes it start over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tornado_sse.cluster.link import RedisLink


async def started_link(url: str, channel: str) -> tuple[RedisLink, asyncio.Queue[bytes]]:
    link = RedisLink(url)
    received: asyncio.Queue[bytes] = asyncio.Queue()
    link.listen(channel, received.put_nowait)
    link.start()
    assert await link.wait_up(10)
    return link, received


async def take(received: asyncio.Queue[bytes], count: int) -> list[bytes]:
    return [await asyncio.wait_for(received.get(), 10) for _ in range(count)]


@pytest.mark.parametrize("protocol", ["3", "2"])
@pytest.mark.gen_test(timeout=60)
async def test_messages_small_and_large_arrive_whole_and_in_order(redis_server, protocol):
    link, received = await started_link(redis_server.url + "?protocol=" + protocol, "ch")
    try:
        sent = [b"m%d" % n for n in range(2000)]
        sent[1000] = bytes(range(256)) * 12_000  # 3 MB, every byte value, over many reads
        pipe = link.client.pipeline(transaction=False)  # one connection: published in order
        for data in sent:
            pipe.publish("ch", data)
        assert await pipe.execute() == [1] * len(sent)
        assert await take(received, len(sent)) == sent
    finally:
        await link.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_notice_that_the_endpoint_moves_makes_the_link_subscribe_again(redis_server):
    link, received = await started_link(redis_server.url, "ch")
    went_down = asyncio.Event()
    link.on_down(went_down.set)
    try:
        await link.publish("ch", b"before")
        assert await take(received, 1) == [b"before"]
        subscription: Any = link._pubsub
        # What a Redis that moves sends on every connection (RESP3 push), after a message.
        subscription._reader.feed_data(
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$4\r\nlast\r\n"
            b">4\r\n+MOVING\r\n:1\r\n:15\r\n+127.0.0.1:6379\r\n"
        )
        assert await take(received, 1) == [b"last"]  # what came before the notice is kept
        await asyncio.wait_for(went_down.wait(), 10)
        assert await link.wait_up(10)
        assert link._pubsub is not subscription
        await link.publish("ch", b"after")
        assert await take(received, 1) == [b"after"]
    finally:
        await link.close()
