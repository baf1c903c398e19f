"""The Redis broker: the :class:`~tornado_sse.broker.Broker` of one instance in a cluster.

While Redis is unreachable, open streams stay open, sends to local tokens still work (the
gateway delivers those itself), every other send answers 503 ``BROKER_UNAVAILABLE`` and new
streams are refused with that code; the link is retried with capped exponential backoff and,
once back, the instance re-registers its tokens (Redis may have lost them).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from redis.exceptions import RedisError

from ..broker import BrokerHandler
from ..history import Retention, Window
from .channels import ChannelBus
from .directory import TokenDirectory
from .link import RedisLink
from .router import Router


class RedisBroker:
    """The broker of one gateway process in a cluster that shares ``url`` (a Redis URL)."""

    def __init__(
        self,
        url: str,
        *,
        retention: Retention,
        sentinels: str | None = None,
        sentinel_master: str | None = None,
        prefix: str = "tornado_sse:",
    ) -> None:
        self.id = uuid.uuid4().hex
        self.link = RedisLink(url, sentinels=sentinels, master=sentinel_master)
        self.directory = TokenDirectory(self.link, self.id, prefix)
        self.router = Router(self.link, self.directory, self.id, prefix)
        self.channels = ChannelBus(self.link, prefix, retention)

    @property
    def ready(self) -> bool:
        return self.link.up

    @property
    def instance(self) -> str:
        return self.id

    def start(self, handler: BrokerHandler) -> None:
        self.channels.start(handler.on_publication, handler.on_gap)
        self.router.start(handler.on_send)
        self.directory.start(handler.on_lost)
        self.link.start()

    async def wait_ready(self, timeout: float) -> bool:
        return await self.link.wait_up(timeout)

    async def close(self) -> None:
        await self.link.close()

    async def publish(self, channel: str, tail: bytes) -> int:
        return await self.channels.publish(channel, tail)

    async def history(self, channels: Collection[str], since: int) -> Window:
        return await self.channels.window(channels, since)

    async def subscribe(self, channels: Collection[str]) -> None:
        await self.channels.subscribe(channels)

    def unsubscribe(self, channels: Collection[str]) -> None:
        self.channels.unsubscribe(channels)

    async def register(self, token: str, record: bytes) -> None:
        await self.directory.register(token, record)

    def unregister(self, token: str) -> None:
        self.directory.unregister(token)

    def count_open(self, open_streams: int) -> None:
        self.directory.count_open(open_streams)

    async def open_count(self, local: int) -> int:
        self.link.require()
        try:
            return await self.directory.open_count()
        except RedisError as exc:
            raise self.link.unavailable(exc) from None

    async def route(self, token: str, frame: bytes | None, close: bool) -> str:
        return await self.router.route(token, frame, close)
