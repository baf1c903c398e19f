"""Channel events through Redis: cluster-wide ids, the history list and fan-out in one script.

A publish runs one Lua script that takes the next id, appends the event to the history list and
publishes it on ``<prefix>events``, so ids increase in publish order across the cluster and
history and delivery cannot disagree. Events travel and are kept without their ``id:`` line:
``<id> <channel>\\n<tail>`` on the pub/sub channel, ``<time> <id> <channel>\\n<tail>`` in the list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from redis.exceptions import RedisError

from ..history import Window, first_id
from .link import RedisLink

# KEYS: id counter, history list. ARGV: channel, tail, history size, publish time, pub/sub
# channel of events, first id minus one (used once per cluster).
PUBLISH_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[6]) end
local id = string.format('%d', redis.call('INCR', KEYS[1]))
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[4] .. ' ' .. id .. ' ' .. ARGV[1] .. '\\n' .. ARGV[2])
  redis.call('LTRIM', KEYS[2], -size, -1)
end
redis.call('PUBLISH', ARGV[5], id .. ' ' .. ARGV[1] .. '\\n' .. ARGV[2])
return id
"""

#: Receives each event published anywhere in the cluster: (channel, id, tail).
OnPublication = Callable[[str, int, bytes], None]


class ChannelBus:
    """Publishes channel events and reads their history, shared by the whole cluster."""

    def __init__(self, link: RedisLink, prefix: str, history_size: int, history_ttl: float) -> None:
        self.link = link
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._counter = prefix + "event_id"
        self._list = prefix + "history"
        self._events = prefix + "events"
        self._publish = link.client.register_script(PUBLISH_SCRIPT)
        self._on_publication: OnPublication | None = None
        link.listen(self._events, self._on_event)

    def start(self, on_publication: OnPublication) -> None:
        """Hand every event received to ``on_publication``."""
        self._on_publication = on_publication

    async def publish(self, channel: str, tail: bytes) -> int:
        """Publish ``tail`` on ``channel`` cluster-wide; returns its id."""
        self.link.require()
        try:
            event_id = await self._publish(
                keys=[self._counter, self._list],
                args=[
                    channel,
                    tail,
                    self.history_size,
                    repr(time.time()),
                    self._events,
                    first_id() - 1,
                ],
            )
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        return int(event_id)

    async def window(self, channels: Collection[str], since: int) -> Window:
        """What the history list holds of ``channels`` after ``since``."""
        self.link.require()
        try:
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.lrange(self._list, 0, -1)
                pipe.get(self._counter)
                entries, current = await pipe.execute()
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        if current is None:  # nothing was ever published: no id is known
            return Window(events=(), dropped_through=0, last_id=-1)
        last_id = int(current)
        oldest = time.time() - self.history_ttl
        kept = []
        for entry in entries:
            head, _, tail = entry.partition(b"\n")
            at, event_id, channel = head.split(b" ", 2)
            if float(at) >= oldest:
                kept.append((int(event_id), channel.decode(), tail))
        dropped_through = kept[0][0] - 1 if kept else last_id
        return Window(
            events=tuple((i, tail) for i, ch, tail in kept if i > since and ch in channels),
            dropped_through=dropped_through,
            last_id=last_id,
        )

    def _on_event(self, data: bytes) -> None:
        head, _, tail = data.partition(b"\n")
        event_id, channel = head.split(b" ", 1)
        if self._on_publication is not None:
            self._on_publication(channel.decode(), int(event_id), tail)
