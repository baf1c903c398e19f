"""Channel events through Redis: cluster-wide ids, a history per channel, and per-channel
subscriptions, so an instance receives a channel's events only while it has subscribers there.

A publish runs one Lua script that takes the next id from the clock of Redis (see
:func:`tornado_sse.history.next_id`), appends the event to the channel's own history list, trims
it to the channel's size (remembering the highest id it dropped), sets the channel's keys to
expire ``ttl`` after this publish, and publishes the event on the channel's own pub/sub channel.
So ids increase in publish order across the cluster, and history and delivery cannot disagree.

Keys (``<p>`` is the prefix): ``<p>event_id`` (the last id), ``<p>epoch`` (the first id since
the store was last empty: ids below it are unknown, e.g. after a flush or a restart without
persistence), ``<p>h:<channel>`` (``"<id> <tail>"`` items, oldest first), ``<p>d:<channel>``
(the highest id trimmed away). Pub/sub channel ``<p>c:<channel>`` carries ``"<id>\\n<tail>"``.
Events travel and are kept without their ``id:`` line.

In a Redis Cluster the counter and a channel's keys lie in different slots, so a publish is two
scripts: the first takes the next id from the counter (as above), the second, in the channel's
slot, raises it above the channel's own last id if need be (``<p>l:<channel>``), keeps and
publishes the event (``SPUBLISH``); if it raised the id, the counter is raised to it before the
publish is answered. So ids still increase in publish order per channel, and a publish answered
before another one begins has the lower id, whichever channels they are on.

**Order across channels in a cluster.** Two publishes at the same moment take ids 12 and 13
from the counter, then publish on their channels' nodes in either order, and an instance
receives them over different connections (or even over one, from two slots) in either order.
A stream on both channels must still get 12 before 13 (PROTOCOL 5: ids strictly increase, and
a resume after 13 must not miss 12). So:

- the first step also notes the id in ``<p>pending`` (in the counter's slot), and a third step,
  once the event is published, removes it (and raises the counter, as above, if need be);
- the second step refuses an id taken more than :data:`PUBLISH_DEADLINE` before (by its node's
  clock): the publisher starts again with a new id. A pending id older than
  :data:`PENDING_FORGET` can therefore never be published any more, and is forgotten;
- each instance holds every channel event it receives in one queue ordered by id, and writes
  them out through a *watermark*: it reads the highest id below which nothing is pending (one
  script), then publishes a marker on its own probe channel of every node and waits for each to
  come back on that node's connection. Every event with an id up to the watermark was published
  on its node before the watermark was read, so before that node's marker: it has arrived.
  The queue then releases, in id order, every event up to the watermark.

An event arriving with an id below one already written (possible only if the nodes' clocks
differ by more than ``PENDING_FORGET - PUBLISH_DEADLINE``) is dropped and logged, never
written out of order. The wait costs a channel event two round trips to Redis on its way to
the streams (one watermark read, one marker per node, for every event that arrived meanwhile).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import uuid
from collections.abc import Callable, Collection
from typing import Any

from redis.exceptions import RedisError

from ..errors import BrokerUnavailable
from ..history import Retention, Window, id_at
from ..log import fields
from .keys import KeySpace
from .link import RedisLink

log = logging.getLogger("tornado_sse.redis")

# Publishes one channel event with a single Redis, for every script that publishes one (this
# module's, and the presence scripts that announce a join or a leave in the step that decides
# it). Arguments: the keys of the id counter, epoch, history list and dropped id; the tail, the
# history size and ttl in ms (strings) and the pub/sub channel. Takes the next id from the
# clock of Redis, keeps the event in the channel's history (trimmed to its size, remembering
# the highest id trimmed), and publishes the id, a line feed and the tail. Returns the id, as a
# decimal string.
PUBLISH_FUNCTION = """
local function publish_event(counter, epoch, history, dropped, tail, size, ttl, pubsub)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local id = tonumber(redis.call('GET', counter) or '0') + 1
  if now > id then id = now end
  local sid = string.format('%.0f', id)
  redis.call('SET', counter, sid)
  if redis.call('EXISTS', epoch) == 0 then redis.call('SET', epoch, sid) end
  size = tonumber(size)
  if size > 0 then
    local n = redis.call('RPUSH', history, sid .. ' ' .. tail)
    if n > size then
      local cut = redis.call('LRANGE', history, n - size - 1, n - size - 1)
      redis.call('SET', dropped, string.match(cut[1], '^(%d+)'))
      redis.call('LTRIM', history, -size, -1)
    end
    redis.call('PEXPIRE', history, ttl)
    if redis.call('EXISTS', dropped) == 1 then redis.call('PEXPIRE', dropped, ttl) end
  end
  redis.call('PUBLISH', pubsub, sid .. '\\n' .. tail)
  return sid
end
"""

# KEYS: id counter, epoch, history list, dropped key, this publish's own key. ARGV: tail, size,
# ttl in ms, pub/sub channel. Returns the id, as a decimal string. Run again for the same
# publish (a retry on a fresh connection), it returns the same id and publishes nothing.
PUBLISH_SCRIPT = (
    PUBLISH_FUNCTION
    + """
local done = redis.call('GET', KEYS[5])
if done then return done end
local sid = publish_event(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
redis.call('SET', KEYS[5], sid, 'EX', 60)
return sid
"""
)

# The cluster's first step. KEYS: id counter, epoch, pending ids. Returns the next id, as
# PUBLISH_SCRIPT takes it, and the Redis time it was taken at (microseconds), both as decimal
# strings; the id is pending until FINISH_SCRIPT.
NEXT_ID_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
if now > id then id = now end
local sid = string.format('%.0f', id)
local snow = string.format('%.0f', now)
redis.call('SET', KEYS[1], sid)
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], sid) end
redis.call('ZADD', KEYS[3], snow, sid)
return {sid, snow}
"""

# The cluster's second step, in the channel's slot. KEYS: history list, dropped key, the
# channel's last id, this publish's own key. ARGV: tail, size, ttl in ms, pub/sub channel, the
# id of the first step, the time it was taken at (microseconds), the deadline (microseconds).
# Returns the id (the first step's, or one more than the channel's last), or 'late' (and does
# nothing) if the id was taken longer than the deadline ago.
CHANNEL_PUBLISH_SCRIPT = """
local done = redis.call('GET', KEYS[4])
if done then return done end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if now - tonumber(ARGV[6]) > tonumber(ARGV[7]) then return 'late' end
local id = tonumber(ARGV[5])
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last >= id then id = last + 1 end
local sid = string.format('%.0f', id)
redis.call('SET', KEYS[3], sid, 'PX', math.max(tonumber(ARGV[3]), 3600000))
local size = tonumber(ARGV[2])
if size > 0 then
  local n = redis.call('RPUSH', KEYS[1], sid .. ' ' .. ARGV[1])
  if n > size then
    local cut = redis.call('LRANGE', KEYS[1], n - size - 1, n - size - 1)
    redis.call('SET', KEYS[2], string.match(cut[1], '^(%d+)'))
    redis.call('LTRIM', KEYS[1], -size, -1)
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
end
redis.call('SPUBLISH', ARGV[4], sid .. '\\n' .. ARGV[1])
redis.call('SET', KEYS[4], sid, 'EX', 60)
return sid
"""

# The cluster's third step. KEYS: id counter, pending ids. ARGV: the first step's id, the id
# published (or the first step's again). The id is no longer pending; the counter is raised to
# the id published.
FINISH_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: id counter, pending ids. ARGV: microseconds after which a pending id is forgotten.
# Returns the watermark: the highest id such that no id up to it is still to be published.
WATERMARK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - tonumber(ARGV[1])))
local lowest = nil
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local id = tonumber(member)
  if lowest == nil or id < lowest then lowest = id end
end
if lowest ~= nil then return string.format('%.0f', lowest - 1) end
return redis.call('GET', KEYS[1]) or '0'
"""

#: Seconds after taking its id by which a cluster publish must have reached its channel's node;
#: a later one is refused there and starts again with a new id.
PUBLISH_DEADLINE = 2.0
#: Seconds after which a pending id is forgotten by the watermark: it can no longer be
#: published (the rest is the allowance for the nodes' clocks to differ).
PENDING_FORGET = 4.0

#: Seconds a channel nobody here listens to any more stays subscribed (a reload or a second
#: tab then costs no round trip), and between two sweeps of such channels.
UNSUBSCRIBE_AFTER = 1.0

#: Receives each event published on a channel this instance subscribes to: (channel, id, tail).
OnPublication = Callable[[str, int, bytes], None]
#: Told that a channel's events after an id may have been missed for good: (channel, id).
OnGap = Callable[[str, int], None]


class ChannelBus:
    """Publishes channel events, reads their history, and keeps this instance subscribed to
    exactly the channels its streams need."""

    def __init__(self, link: RedisLink, keys: KeySpace, retention: Retention) -> None:
        self.link = link
        self.retention = retention
        self.keys = keys
        self._counter = keys.counter
        self._epoch = keys.epoch
        self._publish = link.client.register_script(PUBLISH_SCRIPT)
        self._next_id = link.client.register_script(NEXT_ID_SCRIPT)
        self._channel_publish = link.client.register_script(CHANNEL_PUBLISH_SCRIPT)
        self._finish = link.client.register_script(FINISH_SCRIPT)
        self._watermark = link.client.register_script(WATERMARK_SCRIPT)
        self._on_publication: OnPublication | None = None
        self._on_gap: OnGap | None = None
        #: Streams of this instance per channel; subscribed (confirmed) channels.
        self._counts: dict[str, int] = {}
        self._active: set[str] = set()
        self._lock = asyncio.Lock()
        #: Per subscribed channel: the last id delivered here, and the Redis time (as an id) at
        #: which the subscription began. A link that was cut catches up from the first of them.
        self._last: dict[str, int] = {}
        self._subscribed_at: dict[str, int] = {}
        #: Live events of channels catching up, held until their catch-up is written.
        self._holding: dict[str, list[tuple[int, bytes]]] = {}
        #: In a cluster: events received and not yet written, by id (see the module
        #: docstring), the highest id written, whether they are being released, and how many
        #: catch-ups run (nothing is released meanwhile: a catch-up may bring lower ids).
        self._queue: list[tuple[int, str, bytes]] = []
        self._written = 0
        self._releasing = False
        self._recovering = 0
        link.listen_prefix(keys.pubsub_prefix, self._on_event)
        link.on_up(self._resubscribe)
        link.every(UNSUBSCRIBE_AFTER, self._sweep)

    def start(self, on_publication: OnPublication, on_gap: OnGap) -> None:
        """Hand every event received to ``on_publication``, and every channel whose missed
        events cannot be caught up to ``on_gap``."""
        self._on_publication = on_publication
        self._on_gap = on_gap

    @property
    def subscribed(self) -> frozenset[str]:
        """The channels this instance is subscribed to now."""
        return frozenset(self._active)

    # -- keys ----------------------------------------------------------------------------------

    def _list(self, channel: str) -> str:
        return self.keys.history(channel)

    def _dropped(self, channel: str) -> str:
        return self.keys.dropped(channel)

    def _pubsub(self, channel: str) -> str:
        return self.keys.pubsub(channel)

    # -- publishing and history ----------------------------------------------------------------

    async def publish(self, channel: str, tail: bytes) -> int:
        """Publish ``tail`` on ``channel`` cluster-wide; returns its id."""
        self.link.require()
        policy = self.retention.policy(channel)
        if self.link.cluster:
            return await self._publish_in_cluster(channel, tail)
        try:
            publish_key = self.keys.published(channel, uuid.uuid4().hex)
            event_id = await self._publish(
                keys=[
                    self._counter,
                    self._epoch,
                    self._list(channel),
                    self._dropped(channel),
                    publish_key,
                ],
                args=[tail, policy.size, int(policy.ttl * 1000), self._pubsub(channel)],
            )
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        return int(event_id)

    def publish_in_script(self, channel: str) -> tuple[list[str], list[Any]]:
        """What a script needs to publish on ``channel`` itself with :data:`PUBLISH_FUNCTION`
        (one Redis, not a cluster): the keys after the counter and epoch (history list,
        dropped id) and the arguments after the tail (history size, ttl in ms, pub/sub
        channel)."""
        policy = self.retention.policy(channel)
        return (
            [self._list(channel), self._dropped(channel)],
            [policy.size, int(policy.ttl * 1000), self._pubsub(channel)],
        )

    async def _publish_in_cluster(self, channel: str, tail: bytes) -> int:
        """:meth:`publish` as the cluster's three steps (see the module docstring); a publish
        whose second step came too late starts once more with a new id."""
        for _ in range(2):
            event_id = await self._publish_once(channel, tail)
            if event_id is not None:
                return event_id
        raise BrokerUnavailable("Redis is too slow: the event could not be published in time")

    async def _publish_once(self, channel: str, tail: bytes) -> int | None:
        policy = self.retention.policy(channel)
        pending = [self._counter, self.keys.pending]
        try:
            first, taken = await self._next_id(keys=[self._counter, self._epoch, self.keys.pending])
            answer = await self._channel_publish(
                keys=[
                    self._list(channel),
                    self._dropped(channel),
                    self.keys.last(channel),
                    self.keys.published(channel, uuid.uuid4().hex),
                ],
                args=[
                    tail,
                    policy.size,
                    int(policy.ttl * 1000),
                    self._pubsub(channel),
                    first,
                    taken,
                    int(PUBLISH_DEADLINE * 1_000_000),
                ],
            )
            late = answer == b"late"
            await self._finish(keys=pending, args=[first, first if late else answer])
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        return None if late else int(answer)

    async def _read_cluster(self, kept: list[str]) -> list[Any]:
        """What :meth:`window` reads, slot by slot: the time, the counter and epoch (one
        slot), then each channel's list and dropped key (one slot each)."""
        client = self.link.client
        answers: list[Any] = [await client.time()]
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(self._counter)
            pipe.get(self._epoch)
            answers += await pipe.execute()
        for channel in kept:
            async with client.pipeline(transaction=False) as pipe:
                pipe.lrange(self._list(channel), 0, -1)
                pipe.get(self._dropped(channel))
                answers += await pipe.execute()
        return answers

    async def window(self, channels: Collection[str], since: int) -> Window:
        """What the channels' history lists hold after ``since`` (see ``Window``); reads only
        those channels' keys, whatever else the store holds."""
        self.link.require()
        kept = [c for c in channels if self.retention.policy(c).keeps]
        try:
            if self.link.cluster:
                answers = await self._read_cluster(kept)
            else:
                async with self.link.client.pipeline(transaction=True) as pipe:
                    pipe.time()
                    pipe.get(self._counter)
                    pipe.get(self._epoch)
                    for channel in kept:
                        pipe.lrange(self._list(channel), 0, -1)
                        pipe.get(self._dropped(channel))
                    answers = await pipe.execute()
            (seconds, micros), current, epoch, *lists = answers
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        if current is None or epoch is None:  # the store is empty: no earlier id is known
            return Window(events=(), dropped_through=0, last_id=-1)
        now = seconds + micros / 1_000_000
        dropped = int(epoch) - 1
        events: list[tuple[int, bytes]] = []
        for i, channel in enumerate(kept):
            entries, trimmed = lists[2 * i], lists[2 * i + 1]
            oldest = id_at(now - self.retention.policy(channel).ttl)
            if not entries:  # nothing kept for at least the ttl (or ever)
                dropped = max(dropped, oldest)
            if trimmed is not None:
                dropped = max(dropped, int(trimmed))
            for entry in entries:
                head, _, tail = entry.partition(b" ")
                event_id = int(head)
                if event_id < oldest:  # older than the ttl: as good as dropped
                    dropped = max(dropped, event_id)
                elif event_id > since:
                    events.append((event_id, tail))
        events.sort()
        return Window(events=tuple(events), dropped_through=dropped, last_id=int(current))

    def _on_event(self, pubsub_channel: bytes, data: bytes) -> None:
        head, _, tail = data.partition(b"\n")
        channel = self.keys.channel_of(pubsub_channel)
        event_id = int(head)
        held = self._holding.get(channel)
        if held is not None:
            held.append((event_id, tail))
            return
        self._deliver(channel, event_id, tail)

    def _deliver(self, channel: str, event_id: int, tail: bytes) -> None:
        last = self._last.get(channel)
        if last is not None and event_id <= last:
            return  # already written (a catch-up and a live copy of one event)
        self._last[channel] = event_id
        if self.link.cluster:
            heapq.heappush(self._queue, (event_id, channel, tail))
            self._release_soon()
        elif self._on_publication is not None:
            self._on_publication(channel, event_id, tail)

    # -- order across channels (cluster) -------------------------------------------------------

    def _release_soon(self) -> None:
        if not self._releasing and self._queue and not self._recovering:
            self._releasing = True
            self.link.spawn(self._release_in_order())  # the link's close waits for it

    async def _release_in_order(self) -> None:
        """Write the queued events out in id order, each once every event with a lower id
        has arrived (see the module docstring); stops when the queue is empty, a catch-up
        begins or the link is lost (the link's recovery starts it again)."""
        try:
            while self._queue and not self._recovering:
                watermark = int(
                    await self._watermark(
                        keys=[self._counter, self.keys.pending],
                        args=[int(PENDING_FORGET * 1_000_000)],
                    )
                )
                await self.link.barrier()
                if self._recovering:
                    break
                self._release_through(watermark)
        except (RedisError, OSError, TimeoutError, BrokerUnavailable) as exc:
            log.info("channel events held until the link is back", extra=fields(error=exc))
        finally:
            self._releasing = False

    def _release_through(self, watermark: int) -> None:
        queue = self._queue
        while queue and queue[0][0] <= watermark:
            event_id, channel, tail = heapq.heappop(queue)
            if event_id <= self._written:
                log.warning(
                    "a channel event arrived after a later one was written: dropped",
                    extra=fields(channel=channel, id=event_id, written=self._written),
                )
                continue
            self._written = event_id
            if self._on_publication is not None:
                self._on_publication(channel, event_id, tail)

    # -- subscriptions -------------------------------------------------------------------------

    async def subscribe(self, channels: Collection[str]) -> None:
        """Count one more stream on each of ``channels`` and return once this instance is
        subscribed to all of them; on failure nothing is counted."""
        self.link.require()
        fresh = []
        for channel in channels:
            count = self._counts.get(channel, 0)
            self._counts[channel] = count + 1
            if count == 0:
                fresh.append(channel)
        if not fresh:
            return
        try:
            async with self._lock:  # in order with the sweep's unsubscribes
                needed = [c for c in fresh if c not in self._active]
                if needed:
                    await self.link.subscribe([self._pubsub(c) for c in needed])
                    self._active.update(needed)
                    seconds, micros = await self.link.client.time()
                    for channel in needed:
                        self._subscribed_at.setdefault(channel, seconds * 1_000_000 + micros)
        except (RedisError, OSError, TimeoutError) as exc:
            self.unsubscribe(channels)
            raise self.link.unavailable(exc) from None
        except BaseException:
            self.unsubscribe(channels)
            raise

    def unsubscribe(self, channels: Collection[str]) -> None:
        """Count one stream less on each of ``channels``; channels left with none are
        unsubscribed by the next sweep."""
        for channel in channels:
            count = self._counts.get(channel, 0) - 1
            if count > 0:
                self._counts[channel] = count
            else:
                self._counts.pop(channel, None)

    async def _sweep(self) -> None:
        if self._lock.locked():
            # A subscribe holds the lock while it waits for Redis's confirmation, which only
            # the link's listening loop (the one running this sweep) can hand over: waiting
            # here would stall both until the subscribe times out. Sweep next time.
            return
        async with self._lock:
            idle = [c for c in self._active if c not in self._counts]
            if idle:
                await self.link.unsubscribe([self._pubsub(c) for c in idle])
                self._active.difference_update(idle)
                for channel in idle:
                    self._last.pop(channel, None)
                    self._subscribed_at.pop(channel, None)

    async def _resubscribe(self) -> None:
        """After (re)connecting, before the link is up: nothing is subscribed on the new link
        yet; the channels still needed are subscribed and caught up once it is."""
        self._active = set()
        needed = list(self._counts)
        if needed:
            self.link.spawn(self._recover(needed))

    async def _recover(self, channels: list[str]) -> None:
        """Subscribe the new link to ``channels`` again, then write what this instance missed
        while it was cut off, from each channel's history, before the live events that came
        meanwhile; a channel that cannot be caught up completely gets a gap."""
        for channel in channels:
            self._holding.setdefault(channel, [])
        self._recovering += 1
        try:
            async with self._lock:
                await self.link.subscribe([self._pubsub(c) for c in channels])
                self._active.update(channels)
            for channel in channels:
                await self._catch_up(channel)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("cannot catch up after the link came back", extra=fields(error=exc))
            for channel in channels:  # the link is down again: the next recovery retries
                self._release(channel)
        finally:
            self._recovering -= 1
            self._release_soon()

    async def _catch_up(self, channel: str) -> None:
        since = self._last.get(channel, self._subscribed_at.get(channel))
        if since is not None and self.retention.policy(channel).keeps:
            replay = (await self.window((channel,), since)).replay(since)
            if replay.gap:
                log.warning("missed channel events are lost", extra=fields(channel=channel))
                if self._on_gap is not None:
                    self._on_gap(channel, since)
            else:
                for event_id, tail in replay.events:
                    self._deliver(channel, event_id, tail)
        self._release(channel)

    def _release(self, channel: str) -> None:
        for event_id, tail in self._holding.pop(channel, []):
            self._deliver(channel, event_id, tail)
