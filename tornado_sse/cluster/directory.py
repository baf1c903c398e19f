"""Which instance holds each token, which instances are alive, and what a dead one leaves.

Every instance (one gateway process) has a random id and keeps, with ``<p>`` the prefix:

- ``<p>instance:<id>``: "this instance is alive", a key with a short TTL refreshed every few
  seconds, and its id in the set ``<p>instances``;
- ``<p>token:<token>`` = ``<id>`` for each of its tokens (written again whenever the link comes
  back, since Redis may have lost it), so a send anywhere finds the holder;
- ``<p>streams:<id>``: a hash of token → the stream's record (the request captured at connect,
  opaque bytes to this module), kept while the stream lives and expiring a while after the
  instance stops refreshing it;
- ``<p>open:<id>``: how many streams it has open, for cluster-wide counts.

A token whose holder's key has expired has no holder. When an instance's key has expired
without a graceful goodbye (SIGKILL, a lost machine), every survivor tries to claim its
streams with one atomic script: exactly one gets the records and reports those streams ended
(PROTOCOL 2: ``instance_lost``); the others get nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from ..log import fields
from .link import RedisLink

log = logging.getLogger("tornado_sse.redis")

#: Seconds an instance stays "alive" without refreshing its key: the longest a dead instance's
#: tokens keep answering anything but 404.
INSTANCE_TTL = 15
#: Seconds between refreshes of the instance key, and between looks for dead instances.
INSTANCE_REFRESH = 5
#: Seconds a dead instance's stream records are kept for a survivor to claim.
RECORDS_TTL = 300
#: Seconds a token key lives without refresh (refreshed every third of it).
TOKEN_TTL = 3600
#: Token keys written per pipeline round trip when re-registering.
BATCH = 1000

# KEYS: token key. ARGV: instance key prefix. The holder's id if it is alive, else nil (and the
# stale token key is deleted).
HOLDER_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if not owner then return nil end
if redis.call('EXISTS', ARGV[1] .. owner) == 1 then return owner end
redis.call('DEL', KEYS[1])
return nil
"""

# KEYS: the dead instance's key, its records hash, its open count, the instances set. ARGV:
# its id. Its records (token, record, token, record...) for the one caller that claims them;
# nil if it is alive or someone claimed them already.
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[3])
local records = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
return records
"""

#: Receives the streams of an instance that died: (token, record) pairs, once cluster-wide.
OnLost = Callable[[list[tuple[str, bytes]]], None]


class TokenDirectory:
    """The token keys, stream records and liveness of one instance."""

    def __init__(self, link: RedisLink, instance: str, prefix: str) -> None:
        self.link = link
        self.instance = instance
        self.prefix = prefix
        self._records: dict[str, bytes] = {}
        self._open = 0
        self._open_written: int | None = None
        self._writing_count = False
        self._on_lost: OnLost | None = None
        self._holder = link.client.register_script(HOLDER_SCRIPT)
        self._claim = link.client.register_script(CLAIM_SCRIPT)
        link.on_up(self._announce)
        link.every(INSTANCE_REFRESH, self._refresh)
        link.every(TOKEN_TTL / 3, self._register_all)
        link.on_close(self._leave)

    def start(self, on_lost: OnLost) -> None:
        """Hand the streams of dead instances this instance claims to ``on_lost``."""
        self._on_lost = on_lost

    # -- keys ----------------------------------------------------------------------------------

    def _instance_key(self, instance: str) -> str:
        return "%sinstance:%s" % (self.prefix, instance)

    def _records_key(self, instance: str) -> str:
        return "%sstreams:%s" % (self.prefix, instance)

    def _open_key(self, instance: str) -> str:
        return "%sopen:%s" % (self.prefix, instance)

    def _token_key(self, token: str) -> str:
        return "%stoken:%s" % (self.prefix, token)

    @property
    def _instances(self) -> str:
        return self.prefix + "instances"

    # -- tokens --------------------------------------------------------------------------------

    async def register(self, token: str, record: bytes) -> None:
        """Map ``token`` to this instance and keep its ``record`` for a survivor, should this
        instance die; raises ``BrokerUnavailable`` if Redis cannot."""
        self.link.require()
        try:
            async with self.link.client.pipeline(transaction=True) as pipe:
                pipe.set(self._token_key(token), self.instance, ex=TOKEN_TTL)
                pipe.hset(self._records_key(self.instance), token, record)
                await pipe.execute()
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        self._records[token] = record

    def unregister(self, token: str) -> None:
        """Forget ``token`` now; its keys are deleted in the background (or expire)."""
        self._records.pop(token, None)
        if self.link.up:
            self.link.spawn(self._forget(token))

    async def holder(self, token: str) -> str | None:
        """The id of the live instance holding ``token``, if any (raises ``RedisError``)."""
        owner = await self._holder(keys=[self._token_key(token)], args=[self._instance_key("")])
        return owner.decode() if owner is not None else None

    async def _forget(self, token: str) -> None:
        # If this fails the key expires by itself, and lookups check that its holder lives.
        with contextlib.suppress(RedisError):
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.delete(self._token_key(token))
                pipe.hdel(self._records_key(self.instance), token)
                await pipe.execute()

    # -- counts --------------------------------------------------------------------------------

    def count_open(self, open_streams: int) -> None:
        """Say how many streams this instance has open now (written in the background, the
        latest value winning)."""
        self._open = open_streams
        if self.link.up and not self._writing_count:
            self._writing_count = True
            self.link.spawn(self._write_count())

    async def _write_count(self) -> None:
        try:
            while self._open_written != self._open:
                value = self._open
                await self.link.client.set(self._open_key(self.instance), value)
                self._open_written = value
        except RedisError:
            self._open_written = None  # written again at the next refresh
        finally:
            self._writing_count = False

    async def open_count(self) -> int:
        """Streams open on every live instance (this one's own count is exact)."""
        others = [i for i in await self._members() if i != self.instance]
        if not others:
            return self._open
        async with self.link.client.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(self._instance_key(other))
                pipe.get(self._open_key(other))
            answers = await pipe.execute()
        total = self._open
        for alive, count in zip(answers[::2], answers[1::2], strict=True):
            if alive and count is not None:
                total += int(count)
        return total

    # -- liveness ------------------------------------------------------------------------------

    async def _announce(self) -> None:
        """After (re)connecting: say this instance lives, and write again what Redis may
        have lost (its tokens, their records, its open count)."""
        self._open_written = None
        await self._refresh()
        await self._register_all()

    async def _refresh(self) -> None:
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.set(self._instance_key(self.instance), b"1", ex=INSTANCE_TTL)
            pipe.sadd(self._instances, self.instance)
            pipe.expire(self._records_key(self.instance), RECORDS_TTL)
            pipe.set(self._open_key(self.instance), self._open, ex=RECORDS_TTL)
            await pipe.execute()
        self._open_written = self._open
        await self._claim_dead()

    async def _register_all(self) -> None:
        records = list(self._records.items())
        for start in range(0, len(records), BATCH):
            async with self.link.client.pipeline(transaction=False) as pipe:
                for token, record in records[start : start + BATCH]:
                    pipe.set(self._token_key(token), self.instance, ex=TOKEN_TTL)
                    pipe.hset(self._records_key(self.instance), token, record)
                await pipe.execute()

    async def _members(self) -> list[str]:
        """The ids in the instances set (live ones, and dead ones nobody claimed yet)."""
        members = await self.link.client.smembers(self._instances)
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def _claim_dead(self) -> None:
        """Claim the streams of every instance whose liveness key has expired."""
        for instance in await self._members():
            if instance == self.instance:
                continue
            flat = await self._claim(
                keys=[
                    self._instance_key(instance),
                    self._records_key(instance),
                    self._open_key(instance),
                    self._instances,
                ],
                args=[instance],
            )
            if flat is None:
                continue
            lost = [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]
            log.warning(
                "an instance died; reporting its streams",
                extra=fields(instance=instance, streams=len(lost)),
            )
            if lost and self._on_lost is not None:
                self._on_lost(lost)
            await asyncio.sleep(0)

    async def _leave(self) -> None:
        """A graceful goodbye: this instance reported its own streams, nobody need claim them.
        Without the instance key, the others answer 404 for any token key left behind."""
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.delete(self._instance_key(self.instance))
            pipe.delete(self._records_key(self.instance))
            pipe.delete(self._open_key(self.instance))
            pipe.srem(self._instances, self.instance)
            await pipe.execute()
