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
(PROTOCOL 2: ``instance_lost``); the others get nothing. The claim marks the dead instance
``claimed:<id>`` and records it in the ``dead`` sorted set (the presence scripts skip the
counts of the instances there).

**The exactly-once rule across instances: a stream's end is reported by whoever removes its
record.** A survivor reports the records it claimed; the instance itself reports a stream only
once its record is gone from Redis (:meth:`TokenDirectory.release`), and keeps the report
pending while Redis cannot be reached: sent as soon as the link is back, or, if it never comes
back before the instance stops, left to the survivor that claims the record. So an instance
that shuts down (or dies) while Redis is unreachable never reports a stream a survivor reports
again. A record that is missing although nobody claimed it (Redis lost it) is the instance's to
report.

**Fenced by time.** A survivor may claim an instance's records once its key has expired, even
if that instance still runs (cut off from Redis, or its process stopped) and holds the streams
open. So an instance that has not refreshed its key for :data:`FENCE_SHARE` of the TTL (counted
from the moment it sent its last refresh that succeeded, which is no later than the moment the
key's TTL began) ends every stream it holds itself and takes no new one until a refresh
succeeds; it never writes again the record of a stream it holds from before (a record a
survivor claimed stays claimed). Its streams have then ended before anyone can claim them, and
each end is reported once, by whoever removes the record.

Each script touches the keys of one instance only (one hash slot in a Redis Cluster); the
instances set and the dead set are written by separate commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from redis.exceptions import RedisError

from ..errors import BrokerUnavailable
from ..log import fields
from .keys import KeySpace
from .link import RedisLink

log = logging.getLogger("tornado_sse.redis")

#: Seconds an instance stays "alive" without refreshing its key, by default
#: (``REDIS_INSTANCE_TTL_SECONDS``): the longest a dead instance's tokens keep answering anything
#: but 404. The key is refreshed, and dead instances are looked for, every third of it.
INSTANCE_TTL = 15.0
#: Of the instance TTL, how long an instance may go without a refresh that succeeded before it
#: ends its own streams (see "Fenced by time" above): the rest is the margin for a late timer.
FENCE_SHARE = 0.8
#: Seconds a dead instance's stream records are kept for a survivor to claim.
RECORDS_TTL = 300
#: Seconds a token key lives without refresh (refreshed every third of it).
TOKEN_TTL = 3600
#: Token keys written per pipeline round trip when re-registering.
BATCH = 1000
#: Records taken back per script call when streams end.
RELEASE_BATCH = 500
#: Seconds a dead instance stays in the dead set (longer than presence keys live).
DEAD_KEPT = 7200

# KEYS: token key. ARGV: instance key prefix. The holder's id if it is alive, else nil (and the
# stale token key is deleted).
HOLDER_SCRIPT = """
local owner = redis.call('GET', KEYS[1])
if not owner then return nil end
if redis.call('EXISTS', ARGV[1] .. owner) == 1 then return owner end
redis.call('DEL', KEYS[1])
return nil
"""

# KEYS: the token key. ARGV: the dead holder's id. Deletes the key if it still names it.
FORGET_HOLDER_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the dead instance's key, its records hash, its open count, its claimed mark. ARGV: the
# mark's ttl. Its records (token, record, token, record...) for the one caller that claims
# them; nil if it is alive; an empty list if someone claimed them already.
CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
redis.call('DEL', KEYS[3])
local records = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
if #records > 0 then redis.call('SET', KEYS[4], '1', 'EX', ARGV[1]) end
return records
"""

# KEYS: this instance's records hash, its claimed mark, this batch's key. ARGV: tokens of
# streams that ended here. Removes their records; returns the tokens whose end this instance
# reports: those whose record it removed, and those whose record is missing although nobody
# claimed this instance's records. Run again for the same batch (a reply lost), it returns the
# same tokens.
RELEASE_SCRIPT = """
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.call('SMEMBERS', KEYS[3]) end
local claimed = redis.call('EXISTS', KEYS[2]) == 1
local mine = {}
for _, token in ipairs(ARGV) do
  if redis.call('HDEL', KEYS[1], token) == 1 or not claimed then table.insert(mine, token) end
end
if #mine > 0 then
  redis.call('SADD', KEYS[3], unpack(mine))
  redis.call('EXPIRE', KEYS[3], 60)
end
return mine
"""

# KEYS: this instance's key, records hash, open count. A goodbye: with no record left, deletes
# all three and returns 1; with records left (streams whose end this instance could not take
# back), deletes only the instance key, so that a survivor claims them now, and returns 0.
LEAVE_SCRIPT = """
if redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""

#: Receives the streams of an instance that died: (token, record) pairs, once cluster-wide.
OnLost = Callable[[list[tuple[str, bytes]]], None]
#: Sends the disconnect of one stream that ended here, once its record is released.
Report = Callable[[], None]
#: Ends every stream this instance holds (it could not refresh its liveness in time).
OnFenced = Callable[[], None]


class TokenDirectory:
    """The token keys, stream records and liveness of one instance."""

    def __init__(
        self, link: RedisLink, instance: str, keys: KeySpace, ttl: float = INSTANCE_TTL
    ) -> None:
        self.link = link
        self.instance = instance
        self.keys = keys
        #: Seconds the instance key lives without a refresh.
        self.ttl = ttl
        #: Event loop time from which this instance's key may have expired, less the margin
        #: (0 until a refresh succeeds: no stream is taken before that).
        self._fence_at = 0.0
        self._fence_timer: asyncio.TimerHandle | None = None
        self._on_fenced: OnFenced | None = None
        #: Instances found dead (their liveness key expired), this one never among them.
        self.dead: frozenset[str] = frozenset()
        self._records: dict[str, bytes] = {}
        #: Reports of streams that ended here, waiting for their records to be released.
        self._reports: dict[str, Report] = {}
        self._releasing = False
        self._open = 0
        self._open_written: int | None = None
        self._writing_count = False
        self._on_lost: OnLost | None = None
        self._holder = link.client.register_script(HOLDER_SCRIPT)
        self._forget_holder = link.client.register_script(FORGET_HOLDER_SCRIPT)
        self._claim = link.client.register_script(CLAIM_SCRIPT)
        self._release = link.client.register_script(RELEASE_SCRIPT)
        self._goodbye = link.client.register_script(LEAVE_SCRIPT)
        link.on_up(self._announce)
        link.every(ttl / 3, self._refresh)
        link.every(TOKEN_TTL / 3, self._register_all)
        link.every(1.0, self._retry_release)
        link.on_close(self._leave)

    def start(self, on_lost: OnLost, on_fenced: OnFenced) -> None:
        """Hand the streams of dead instances this instance claims to ``on_lost``; call
        ``on_fenced`` when this instance must end its own streams, its liveness key being
        about to expire."""
        self._on_lost = on_lost
        self._on_fenced = on_fenced

    # -- tokens --------------------------------------------------------------------------------

    async def register(self, token: str, record: bytes) -> None:
        """Map ``token`` to this instance and keep its ``record`` for a survivor, should this
        instance die; raises ``BrokerUnavailable`` if Redis cannot, or if this instance has
        not refreshed its liveness in time (a survivor may be about to claim its streams)."""
        self.link.require()
        if self._overdue():
            raise BrokerUnavailable("Redis is unreachable: this instance cannot refresh its key")
        try:
            # One transaction with one Redis; two slots (so two commands) in a cluster.
            async with self.link.client.pipeline(transaction=not self.link.cluster) as pipe:
                pipe.set(self.keys.token(token), self.instance, ex=TOKEN_TTL)
                pipe.hset(self.keys.records(self.instance), token, record)
                await pipe.execute()
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        self._records[token] = record

    def unregister(self, token: str, report: Report | None = None) -> None:
        """Forget ``token`` now; its keys are deleted in the background (or expire). With
        ``report``, call it once this instance's record of the stream is released and the end
        is this instance's to report (see the module docstring): right away with the link up,
        when it comes back otherwise, never if a survivor claimed the record."""
        self._records.pop(token, None)
        if report is not None or token not in self._reports:
            self._reports[token] = report or _nothing
        if self.link.up:
            self.link.spawn(self._forget(token))
            self.link.spawn(self._retry_release())

    async def holder(self, token: str) -> str | None:
        """The id of the live instance holding ``token``, if any (raises ``RedisError``)."""
        if not self.link.cluster:
            owner = await self._holder(keys=[self.keys.token(token)], args=[self.keys.instance("")])
            return owner.decode() if owner is not None else None
        # The token's key and its holder's key lie in different slots: two commands.
        found = await self.link.client.get(self.keys.token(token))
        if found is None:
            return None
        holder = found.decode()
        if await self.link.client.exists(self.keys.instance(holder)):
            return holder
        await self._forget_holder(keys=[self.keys.token(token)], args=[holder])
        return None

    async def _forget(self, token: str) -> None:
        # If this fails the key expires by itself, and lookups check that its holder lives.
        with contextlib.suppress(RedisError):
            await self.link.client.delete(self.keys.token(token))

    async def _retry_release(self) -> None:
        """:meth:`release_pending` in the background: what fails is retried later."""
        try:
            await self.release_pending()
        except (RedisError, OSError) as exc:
            log.info("stream records not released yet", extra=fields(error=str(exc)))

    @property
    def unreported(self) -> int:
        """Ended streams whose report waits for their record to be released."""
        return len(self._reports)

    async def release_pending(self) -> None:
        """Release the records of the streams that ended here and send the reports that are
        this instance's; those that fail stay pending (raises ``RedisError``/``OSError``)."""
        if self._releasing:
            return
        self._releasing = True
        try:
            while self._reports:
                tokens = list(self._reports)[:RELEASE_BATCH]
                batch = "%s:%s" % (self.keys.records(self.instance), uuid.uuid4().hex)
                mine = await self._release(
                    keys=[
                        self.keys.records(self.instance),
                        self.keys.claimed(self.instance),
                        batch,
                    ],
                    args=tokens,
                )
                owned = {t.decode() for t in mine}
                for token in tokens:
                    report = self._reports.pop(token)
                    if token in owned:
                        report()
                    else:
                        log.info(
                            "a stream's end was reported by a survivor",
                            extra=fields(token=token),
                        )
        finally:
            self._releasing = False

    async def release_all(self, deadline: float) -> int:
        """At shutdown: try until ``deadline`` (monotonic) to release every pending record
        and send its report; returns how many are left to a survivor."""
        while self._reports and time.monotonic() < deadline:
            try:
                left = max(deadline - time.monotonic(), 0.01)
                await asyncio.wait_for(self.release_pending(), left)
            except (RedisError, OSError, TimeoutError):
                await asyncio.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
        return len(self._reports)

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
                await self.link.client.set(self.keys.open(self.instance), value)
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
                pipe.exists(self.keys.instance(other))
                pipe.get(self.keys.open(other))
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
        await self._register_all(replace=True)
        if self._reports:
            self.link.spawn(self._retry_release())

    # -- the fence -----------------------------------------------------------------------------

    def _overdue(self) -> bool:
        """Whether this instance's key may expire any moment (no refresh succeeded in time)."""
        return asyncio.get_running_loop().time() >= self._fence_at

    def _arm(self, sent: float) -> None:
        """A refresh sent at loop time ``sent`` succeeded: the key lives at least ``ttl`` from
        then; end the streams at :data:`FENCE_SHARE` of it unless another refresh succeeds."""
        self._fence_at = sent + self.ttl * FENCE_SHARE
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        self._fence_timer = asyncio.get_running_loop().call_at(self._fence_at, self._check_fence)

    def _check_fence(self) -> None:
        """If no refresh succeeded in time, end every stream this instance holds, and forget
        their records at once so that nothing writes them again (a survivor may claim them).
        Called by the timer, and before anything that writes the liveness key or records: after
        a stopped process resumes, its due timer may run after other work."""
        if not self._overdue() or not self._records:
            return
        log.warning(
            "this instance could not refresh its liveness in Redis in time: ending its streams",
            extra=fields(streams=len(self._records), ttl=self.ttl),
        )
        self._records.clear()
        if self._on_fenced is not None:
            self._on_fenced()

    async def _refresh(self) -> None:
        self._check_fence()
        sent = asyncio.get_running_loop().time()
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.instance(self.instance), b"1", px=int(self.ttl * 1000))
            pipe.sadd(self.keys.instances, self.instance)
            pipe.expire(self.keys.records(self.instance), RECORDS_TTL)
            pipe.set(self.keys.open(self.instance), self._open, ex=RECORDS_TTL)
            pipe.zrem(self.keys.dead, self.instance)  # alive again after a long cut
            await pipe.execute()
        self._arm(sent)
        self._open_written = self._open
        await self._claim_dead()

    async def _register_all(self, replace: bool = False) -> None:
        """Write every token key and record again; with ``replace``, drop first the records of
        streams that are no longer here and not waiting for a release (records this instance
        no longer accounts for; those of streams whose report is pending stay, to be
        released)."""
        self._check_fence()
        records = list(self._records.items())
        if replace:
            held = await self.link.client.hkeys(self.keys.records(self.instance))
            stale = [
                token
                for token in (t.decode() for t in held)
                if token not in self._records and token not in self._reports
            ]
            if stale:
                await self.link.client.hdel(self.keys.records(self.instance), *stale)
        for start in range(0, len(records), BATCH):
            async with self.link.client.pipeline(transaction=False) as pipe:
                for token, record in records[start : start + BATCH]:
                    pipe.set(self.keys.token(token), self.instance, ex=TOKEN_TTL)
                    pipe.hset(self.keys.records(self.instance), token, record)
                await pipe.execute()

    async def _members(self) -> list[str]:
        """The ids in the instances set (live ones, and dead ones nobody claimed yet)."""
        members = await self.link.client.smembers(self.keys.instances)
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def _claim_dead(self) -> None:
        """Claim the streams of every instance whose liveness key has expired, and learn
        which instances are dead."""
        for instance in await self._members():
            if instance == self.instance:
                continue
            flat = await self._claim(
                keys=[
                    self.keys.instance(instance),
                    self.keys.records(instance),
                    self.keys.open(instance),
                    self.keys.claimed(instance),
                ],
                args=[RECORDS_TTL],
            )
            if flat is None:
                continue
            now_ms = int(time.time() * 1000)
            async with self.link.client.pipeline(transaction=False) as pipe:
                pipe.zadd(self.keys.dead, {instance: now_ms})
                pipe.srem(self.keys.instances, instance)
                await pipe.execute()
            lost = [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]
            log.warning(
                "an instance died; reporting its streams",
                extra=fields(instance=instance, streams=len(lost)),
            )
            if lost and self._on_lost is not None:
                self._on_lost(lost)
            await asyncio.sleep(0)
        await self._read_dead()

    async def _read_dead(self) -> None:
        now_ms = int(time.time() * 1000)
        async with self.link.client.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.dead, 0, now_ms - DEAD_KEPT * 1000)
            pipe.zrange(self.keys.dead, 0, -1)
            _, members = await pipe.execute()
        dead = {m.decode() if isinstance(m, bytes) else m for m in members}
        dead.discard(self.instance)
        self.dead = frozenset(dead)

    async def _leave(self) -> None:
        """A graceful goodbye. Without the instance key, the others answer 404 for any token
        key left behind. If every record was released, nobody need claim anything; records left
        (ends this instance could not take back) are claimed by a survivor right away."""
        keys, me = self.keys, self.instance
        alone = await self._goodbye(keys=[keys.instance(me), keys.records(me), keys.open(me)])
        if int(alone) == 1:
            await self.link.client.srem(keys.instances, self.instance)


def _nothing() -> None:
    """The report of a stream whose end nobody need hear of (its connect never reached the
    backend): its record is released all the same."""
