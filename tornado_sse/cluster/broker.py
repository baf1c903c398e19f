"""The Redis broker: the :class:`~tornado_sse.broker.Broker` of one instance in a cluster.

While Redis is unreachable, open streams stay open, sends to local tokens still work (the
gateway delivers those itself), every other send answers 503 ``BROKER_UNAVAILABLE`` and new
streams are refused with that code; the link is retried with capped exponential backoff and,
once back, the instance re-registers its tokens (Redis may have lost them).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

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
        prefix: str = "tornado_sse:",
    ) -> None:
        self.id = uuid.uuid4().hex
        self.link = RedisLink(url)
        self.directory = TokenDirectory(self.link, self.id, prefix)
        self.router = Router(self.link, self.directory, self.id, prefix)
        self.channels = ChannelBus(self.link, prefix, retention)

    @property
    def ready(self) -> bool:
        return self.link.up

    def start(self, handler: BrokerHandler) -> None:
        self.channels.start(handler.on_publication)
        self.router.start(handler.on_send)
        self.link.start()

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

    async def register(self, token: str) -> None:
        await self.directory.register(token)

    def unregister(self, token: str) -> None:
        self.directory.unregister(token)

    async def route(self, token: str, frame: bytes | None, close: bool) -> str:
        return await self.router.route(token, frame, close)
