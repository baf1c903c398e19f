"""The Redis broker: the :class:`~tornado_sse.broker.Broker` of one instance in a cluster.

While Redis is unreachable, open streams stay open, sends to local tokens still work (the
gateway delivers those itself), every other send answers 503 ``BROKER_UNAVAILABLE`` and new
streams are refused with that code; the link is retried with capped exponential backoff and,
once back, the instance re-registers its tokens (Redis may have lost them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from redis.exceptions import RedisError

from ..broker import BrokerHandler
from ..errors import BrokerUnavailable
from ..history import Retention, Window
from ..presence import Leave, Snapshot
from ..user_sends import Entered, SendMark
from .channels import ChannelBus
from .directory import INSTANCE_TTL, Report, TokenDirectory
from .keys import KeySpace
from .link import RedisLink
from .presence import PresenceStore
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
        cluster: bool = False,
        prefix: str = "tornado_sse:",
        instance_ttl: float = INSTANCE_TTL,
    ) -> None:
        """``url`` is the Redis URL, or with ``cluster`` the Redis Cluster nodes to start
        from (URLs, comma-separated); ``instance_ttl`` the seconds this instance counts as
        alive without refreshing its key."""
        self.id = uuid.uuid4().hex
        self.link = RedisLink(url, sentinels=sentinels, master=sentinel_master, cluster=cluster)
        keys = KeySpace(prefix, cluster=cluster)
        self.directory = TokenDirectory(self.link, self.id, keys, instance_ttl)
        self.router = Router(self.link, self.directory, self.id, keys)
        self.channels = ChannelBus(self.link, keys, retention)
        self.users = PresenceStore(
            self.link, self.id, keys, self.channels, lambda: self.directory.dead
        )

    @property
    def ready(self) -> bool:
        return self.link.up

    @property
    def instance(self) -> str:
        return self.id

    @property
    def keeps_records(self) -> bool:
        return True

    def start(self, handler: BrokerHandler) -> None:
        self.channels.start(handler.on_publication, handler.on_gap)
        self.router.start(handler.on_send, handler.on_ask)
        self.directory.start(handler.on_lost, handler.on_fenced)
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

    def unregister(self, token: str, report: Report | None = None) -> None:
        self.directory.unregister(token, report)

    @property
    def unreported(self) -> int:
        return self.directory.unreported

    async def report_all(self, deadline: float) -> int:
        return await self.directory.release_all(deadline)

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

    async def ask_token(self, token: str, question: dict[str, Any]) -> dict[str, Any]:
        return await self.router.ask_token(token, question)

    async def ask_user(self, user: str, question: dict[str, Any]) -> list[dict[str, Any]]:
        self.link.require()
        try:
            holders = await self.users.holders(user)
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        return await self._ask_all(holders, question)

    async def send_user(
        self, user: str, frame: bytes | None, close: bool, keep: float
    ) -> tuple[SendMark, list[dict[str, Any]]]:
        self.link.require()
        try:
            mark, holders = await self.users.send(user, frame, close, keep)
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        question = {
            "op": "send",
            "user": user,
            "frame": frame.decode("utf-8") if frame is not None else None,
            "close": close,
            "mark": list(mark),
        }
        try:
            return mark, await self._ask_all(holders, question)
        except BrokerUnavailable:
            # Refused (503): the streams still connecting must not get it from the log either,
            # or the backend's retry would give it to them twice.
            await self.users.unsend(user, mark)
            raise

    async def _ask_all(self, holders: list[str], question: dict[str, Any]) -> list[dict[str, Any]]:
        """Ask ``holders`` but this instance ``question``; their answers. Raises
        ``BrokerUnavailable`` if one cannot be reached or does not answer."""
        others = [i for i in holders if i != self.id]
        if not others:
            return []
        answers = await asyncio.gather(
            *(self.router.ask(i, question) for i in others), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                if isinstance(answer, BrokerUnavailable):
                    raise answer
                raise BrokerUnavailable("an instance holding this user's streams failed")
        return [a for a in answers if not isinstance(a, BaseException)]

    async def enter(
        self,
        user: str | None,
        info: str | None,
        channels: Collection[str],
        *,
        announce: Collection[str],
        limit: int | None,
        join: bytes | None = None,
        began: float | None = None,
    ) -> Entered:
        return await self.users.enter(user, info, channels, announce, limit, join, began)

    async def exit(
        self,
        user: str | None,
        channels: Collection[str],
        *,
        announce: Collection[str],
        stream: bool,
    ) -> list[str]:
        return await self.users.exit(user, channels, announce, stream)

    async def settle_leaves(self, due: Sequence[tuple[str, str]], delay: float) -> list[Leave]:
        return await self.users.settle_leaves(due, delay)

    async def presence(self, channel: str, delay: float) -> Snapshot:
        return await self.users.presence(channel, delay)
