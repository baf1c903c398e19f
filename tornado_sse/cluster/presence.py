"""Users and presence in Redis: streams per user, members per channel, and the join and leave
decisions, each one atomic script, so two instances never both announce the same join or leave.

Keys (``<p>`` is the prefix; ``<i>`` an instance id, ``<u>`` a user id, ``''`` for anonymous):

- ``<p>u:<u>``: hash ``<i>`` -> streams of the user on that instance (the per-user limit, and
  where user sends and live subscriptions must go);
- ``<p>us:<u>``: stream of the sends to the user of the last seconds (``c``/``k`` then the
  frame, see :func:`~tornado_sse.user_sends.pack`), for their streams whose connect callback
  was in flight; trimmed by each send and expiring with the last;
- ``<p>usd:<send>``: the log id of one send (``<send>`` random), so that a retried send
  script logs it once; it expires with the send;
- ``<p>p:<channel>``: hash ``<i>:<u>`` -> streams of the user on the channel on that instance;
- ``<p>pn:<channel>``: set of the instances that have counted streams on the channel;
- ``<p>pi:<channel>``: hash ``<u>`` -> the user's info (compact JSON);
- ``<p>pa:<channel>``: hash ``<u>`` -> ``j`` (their join was announced and they are there) or
  ``l<ms>`` (their last stream there ended at that Redis time: a leave is due after the delay);
- ``<p>pl:<channel>``: the channel's listing, a sorted set (all scores 0, so ordered by member)
  of ``<u>\\0<entry>``, one per user holding streams there, where ``<entry>`` is the user's
  object of the presence answer already encoded (``{"user":...,"info":...,"streams":n}``).
  Every script that changes a user's count or info there writes their entry again, so that a
  read joins the entries in order and does no work per user.

Each instance's counts are live until the instance is found dead (its instance key, kept by
:class:`~tornado_sse.cluster.directory.TokenDirectory`, expires 15 s without a refresh, and the
next look for dead instances, every 5 s, puts it in the dead set, which every script is given):
the scripts skip the counts of dead instances and reads delete them (and write the entries of
their users again), so a crashed instance's users are gone from presence within about 20 s,
and their leaves are decided by the next read or sweep.

Each script touches one slot of a Redis Cluster (see :mod:`~tornado_sse.cluster.keys`): in a
cluster, the user's part of an enter or exit (the limit and the user's count) and each channel's
part run as separate calls of the same script.
Every key expires :data:`KEY_TTL` after its last write, refreshed by the living instances that
count streams there; after the link comes back each instance writes its counts again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from functools import partial
from typing import Any, TypeVar

from redis.exceptions import RedisError

from ..errors import BrokerUnavailable, TooManyStreams
from ..log import fields
from ..presence import Leave, Snapshot, presence_event
from ..user_sends import Entered, SendMark, pack, parse_mark, unpack
from .channels import PUBLISH_FUNCTION, ChannelBus
from .keys import KeySpace
from .link import RedisLink

T = TypeVar("T")

log = logging.getLogger("tornado_sse.presence")

#: Seconds a presence or user key lives after its last write (refreshed every third of it).
KEY_TTL = 3600
#: The most leaves one script decides and publishes (with one Redis).
SETTLE_BATCH = 100
#: Milliseconds the window of a new stream's user sends reaches back beyond when its connect
#: began, so that it covers the time until the enter script runs; the entries in it from
#: before the connect began are then left out, by the Redis time the script ran at.
SENDS_MARGIN_MS = 5000

# Shared by every script. ARGV[1]: this instance, ARGV[2]: the dead instances (separated by
# spaces), ARGV[3]: the key TTL in ms. KEYS after the first come in fives per channel: members,
# instances, info, announced, listing.
_COMMON = """
local me, ttl = ARGV[1], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local find, sub, NUL = string.find, string.sub, string.char(0)
local dead = {}
for i in string.gmatch(ARGV[2], '%S+') do dead[i] = true end
local function live(i)
  return i == me or not dead[i]
end
local function total(members, instances, user)
  local n = 0
  for _, i in ipairs(redis.call('SMEMBERS', instances)) do
    if live(i) then n = n + tonumber(redis.call('HGET', members, i .. ':' .. user) or '0') end
  end
  return n
end
-- The leave of user from a channel, given their announced state there: if it is due (their
-- last stream there ended at least delay ms ago, and they hold none now), it is forgotten and
-- their info returned ('' for none); else nil.
local function take_leave(members, instances, infos, announced, user, state, delay)
  if not state or sub(state, 1, 1) ~= 'l' or now < tonumber(sub(state, 2)) + delay
      or total(members, instances, user) > 0 then
    return nil
  end
  redis.call('HDEL', announced, user)
  local info = redis.call('HGET', infos, user) or ''
  redis.call('HDEL', infos, user)
  return info
end
local function quoted(text)
  return '"' .. (string.gsub(text, '["\\\\]', '\\\\%0')) .. '"'
end
local function shown(info)
  if not info or info == '' then return 'null' end
  return info
end
-- Write the user's entry of the channel's listing again, from their live streams there and
-- their info; no entry when they hold none. Returns their streams there.
local function list(members, instances, infos, listing, user)
  local old = redis.call('ZRANGEBYLEX', listing, '[' .. user .. NUL, '(' .. user .. '\\1',
    'LIMIT', 0, 1)
  if old[1] then redis.call('ZREM', listing, old[1]) end
  local n = total(members, instances, user)
  if n > 0 then
    local entry = '{"user":' .. quoted(user) .. ',"info":' .. shown(redis.call('HGET', infos, user))
      .. ',"streams":' .. n .. '}'
    redis.call('ZADD', listing, 0, user .. NUL .. entry)
    redis.call('PEXPIRE', listing, ttl)
  end
  return n
end
"""

# KEYS[1]: the user hash, then fives. ARGV[4]: user ('' anonymous), ARGV[5]: limit (-1: not a
# new stream), ARGV[6]: info ('' none), ARGV[7]: the user's presence_join event encoded ('': the
# caller publishes the joins), ARGV[8..]: '1' where the channel announces. With a join event
# (one Redis only), KEYS go on with the id counter and epoch, then each channel's history list
# and dropped id, and ARGV with each channel's history size, ttl in ms and pub/sub channel: each
# join decided is published here, in the step that decides it. The last KEY is the user's send
# log, the last ARGV how many ms ago the stream's connect began (-1: read no sends). Returns
# {'0'} over the limit, else a list: '1' and the indexes of the channels where this is the
# user's join (with a join event: each index followed by the id of the join published),
# separated by spaces, as one string; then the id of the log's last send ('0-0' for none) and
# the id and packed send of each one logged since the connect began.
ENTER_SCRIPT = (
    _COMMON
    + PUBLISH_FUNCTION
    + """
local user, limit, info, join = ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local n = (#KEYS - 2) / 5
if join ~= '' then n = (#KEYS - 4) / 7 end
if user ~= '' and limit >= 0 then
  if limit > 0 then
    local held = 0
    local all = redis.call('HGETALL', KEYS[1])
    for k = 1, #all, 2 do
      if live(all[k]) then
        held = held + tonumber(all[k + 1])
      else
        redis.call('HDEL', KEYS[1], all[k])
      end
    end
    if held >= limit then return {'0'} end
  end
  redis.call('HINCRBY', KEYS[1], me, 1)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local result = {1}
for c = 1, n do
  local members, instances = KEYS[5 * c - 3], KEYS[5 * c - 2]
  local infos, announced, listing = KEYS[5 * c - 1], KEYS[5 * c], KEYS[5 * c + 1]
  redis.call('HINCRBY', members, me .. ':' .. user, 1)
  redis.call('SADD', instances, me)
  redis.call('PEXPIRE', members, ttl)
  redis.call('PEXPIRE', instances, ttl)
  if user ~= '' then
    if info ~= '' or redis.call('HEXISTS', infos, user) == 0 then
      redis.call('HSET', infos, user, info)
      redis.call('PEXPIRE', infos, ttl)
    end
    list(members, instances, infos, listing, user)
    if ARGV[7 + c] == '1' then
      if not redis.call('HGET', announced, user) then
        table.insert(result, c)
        if join ~= '' then
          local k, a = 5 * n + 2 * c + 2, 7 + n + 3 * c
          table.insert(result, publish_event(KEYS[5 * n + 2], KEYS[5 * n + 3], KEYS[k],
            KEYS[k + 1], join, ARGV[a - 2], ARGV[a - 1], ARGV[a]))
        end
      end
      redis.call('HSET', announced, user, 'j')
      redis.call('PEXPIRE', announced, ttl)
    end
  end
end
local answer = {table.concat(result, ' '), '0-0', tostring(now)}
local since = tonumber(ARGV[#ARGV])
if user ~= '' and since >= 0 then
  local log = KEYS[#KEYS]
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  if last[1] then
    answer[2] = last[1][1]
    for _, entry in ipairs(redis.call('XRANGE', log, now - since, '+')) do
      answer[#answer + 1] = entry[1]
      answer[#answer + 1] = entry[2][2]
    end
  end
end
return answer
"""
)

# KEYS as ENTER. ARGV[4]: user, ARGV[5]: '1' to count the stream out of the user's, ARGV[6..]:
# '1' where the channel announces. Returns the indexes of the channels where the user now holds
# no stream and their leave is due after the delay, separated by spaces ('' for none).
EXIT_SCRIPT = (
    _COMMON
    + """
local user = ARGV[4]
if user ~= '' and ARGV[5] == '1' then
  if redis.call('HINCRBY', KEYS[1], me, -1) <= 0 then redis.call('HDEL', KEYS[1], me) end
end
local due = {}
for c = 1, (#KEYS - 1) / 5 do
  local members, instances = KEYS[5 * c - 3], KEYS[5 * c - 2]
  local infos, announced, listing = KEYS[5 * c - 1], KEYS[5 * c], KEYS[5 * c + 1]
  local field = me .. ':' .. user
  if redis.call('HINCRBY', members, field, -1) <= 0 then redis.call('HDEL', members, field) end
  if user ~= '' and list(members, instances, infos, listing, user) == 0 then
    if ARGV[5 + c] == '1' and redis.call('HGET', announced, user) then
      redis.call('HSET', announced, user, 'l' .. now)
      table.insert(due, c)
    else
      redis.call('HDEL', infos, user)
    end
  end
end
return table.concat(due, ' ')
"""
)

# KEYS: one five. ARGV[4]: user, ARGV[5]: delay in ms. Returns {1, info} when the leave is to
# be announced now (and forgets it), else {0}.
SETTLE_SCRIPT = (
    _COMMON
    + """
local members, instances, infos, announced = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user = ARGV[4]
local state = redis.call('HGET', announced, user)
local info = take_leave(members, instances, infos, announced, user, state, tonumber(ARGV[5]))
if not info then return {0} end
return {1, info}
"""
)

# One Redis only. KEYS[1], KEYS[2]: the id counter and epoch, then sixes: a channel's members,
# instances, infos, announced states, history list and dropped id. ARGV[4]: the delay in ms,
# then fours: the user, and the channel's history size, ttl in ms and pub/sub channel. Decides
# each (channel, user) leave as SETTLE_SCRIPT, and publishes each one decided, in the same step,
# as the presence_leave event (PROTOCOL 8) with the info the user was shown with. Returns the
# leaves published as the JSON text [[index, info], ...], each info the compact JSON text the
# user was shown with, as a JSON string ("" for none): one string for the whole batch.
SETTLE_MANY_SCRIPT = (
    _COMMON
    + PUBLISH_FUNCTION
    + """
local delay = tonumber(ARGV[4])
local result = {}
for k = 1, (#KEYS - 2) / 6 do
  local members, instances = KEYS[6 * k - 3], KEYS[6 * k - 2]
  local infos, announced = KEYS[6 * k - 1], KEYS[6 * k]
  local a = 4 * k + 1
  local user = ARGV[a]
  local state = redis.call('HGET', announced, user)
  local info = take_leave(members, instances, infos, announced, user, state, delay)
  if info then
    local tail = 'event: presence_leave\\ndata: {"user":' .. quoted(user) .. ',"info":'
      .. shown(info) .. '}\\n\\n'
    publish_event(KEYS[1], KEYS[2], KEYS[6 * k + 1], KEYS[6 * k + 2], tail,
      ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
    result[#result + 1] = '[' .. k .. ',' .. quoted(info) .. ']'
  end
end
return '[' .. table.concat(result, ',') .. ']'
"""
)

# KEYS: one five. ARGV[4]: leave delay in ms. First drops the counts of dead instances (and
# writes the listing entries of their users again: a user left with no stream there is marked
# gone now); then returns {anonymous, users, leaves}. users is the "users" array of the presence
# answer as JSON text, the listing's entries in their order (by user id) joined, so that
# neither this script nor the gateway does work per user; leaves is the JSON text
# [[user, info], ...] of the leaves decided now, each info the user's compact JSON text as a
# JSON string ("" for none).
PRESENCE_SCRIPT = (
    _COMMON
    + """
local members, instances, infos, announced, listing = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local delay = tonumber(ARGV[4])
local dead = {}
local died = false
for _, i in ipairs(redis.call('SMEMBERS', instances)) do
  if not live(i) then
    redis.call('SREM', instances, i)
    dead[i] = true
    died = true
  end
end
if died then
  local touched = {}
  local all = redis.call('HGETALL', members)
  for k = 1, #all, 2 do
    local field = all[k]
    local sep = find(field, ':', 1, true)
    if dead[sub(field, 1, sep - 1)] then
      redis.call('HDEL', members, field)
      local user = sub(field, sep + 1)
      if user ~= '' then touched[user] = true end
    end
  end
  for user in pairs(touched) do
    if list(members, instances, infos, listing, user) == 0
        and redis.call('HGET', announced, user) == 'j' then
      redis.call('HSET', announced, user, 'l' .. now)
    end
  end
end
local anonymous = 0
for _, i in ipairs(redis.call('SMEMBERS', instances)) do
  anonymous = anonymous + tonumber(redis.call('HGET', members, i .. ':') or '0')
end
local users = redis.call('ZRANGE', listing, 0, -1)
for k = 1, #users do
  local item = users[k]
  users[k] = sub(item, find(item, NUL, 1, true) + 1)
end
local leaves = {}
local states = redis.call('HGETALL', announced)
for k = 1, #states, 2 do
  local user = states[k]
  local info = take_leave(members, instances, infos, announced, user, states[k + 1], delay)
  if info then leaves[#leaves + 1] = '[' .. quoted(user) .. ',' .. quoted(info) .. ']' end
end
return {anonymous, '[' .. table.concat(users, ',') .. ']', '[' .. table.concat(leaves, ',') .. ']'}
"""
)

# KEYS: one five. ARGV[4..]: pairs of user ('' anonymous) and this instance's streams of them
# on the channel. Writes those counts again (after the link came back: Redis may have lost them)
# and the listing entries of those users.
RESTORE_SCRIPT = (
    _COMMON
    + """
local members, instances, infos, listing = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
redis.call('SADD', instances, me)
redis.call('PEXPIRE', instances, ttl)
for k = 4, #ARGV, 2 do
  redis.call('HSET', members, me .. ':' .. ARGV[k], ARGV[k + 1])
end
redis.call('PEXPIRE', members, ttl)
for k = 4, #ARGV, 2 do
  if ARGV[k] ~= '' then list(members, instances, infos, listing, ARGV[k]) end
end
return 1
"""
)

# Appends to found the live instances holding streams of the user whose hash is key (and drops
# the dead ones from it).
_HOLDERS_FUNCTION = """
local function holders(key, found)
  local all = redis.call('HGETALL', key)
  for k = 1, #all, 2 do
    if live(all[k]) then
      if tonumber(all[k + 1]) > 0 then table.insert(found, all[k]) end
    else
      redis.call('HDEL', key, all[k])
    end
  end
  return found
end
"""

# KEYS[1]: the user hash. Returns the live instances holding streams of the user.
HOLDERS_SCRIPT = _COMMON + _HOLDERS_FUNCTION + "return holders(KEYS[1], {})\n"


# KEYS[1]: the user hash, KEYS[2]: the user's send log, KEYS[3]: this send's done mark.
# ARGV[4]: how long to keep the send, in ms; ARGV[5]: the send, packed. Logs the send (letting
# go of those kept longer), once: a retry finds the done mark and logs nothing. Returns its id
# and the live instances holding streams of the user, as HOLDERS_SCRIPT: a stream counted
# before this reaches the user hash first (so its instance is asked to deliver the send), one
# counted after reads the send from the log.
SEND_SCRIPT = (
    _COMMON
    + _HOLDERS_FUNCTION
    + """
local keep = tonumber(ARGV[4])
local id = redis.call('GET', KEYS[3])
if not id then
  id = redis.call('XADD', KEYS[2], 'MINID', '~', now - keep, '*', 's', ARGV[5])
  redis.call('PEXPIRE', KEYS[2], keep)
  redis.call('SET', KEYS[3], id, 'PX', keep)
end
return holders(KEYS[1], {id})
"""
)


class PresenceStore:
    """The presence records of one instance in Redis (see the module docstring)."""

    def __init__(
        self,
        link: RedisLink,
        instance: str,
        keys: KeySpace,
        channels: ChannelBus,
        dead: Callable[[], Collection[str]],
    ) -> None:
        """``channels`` publishes the presence events; ``dead()`` names the instances found
        dead, whose counts no longer count."""
        self.link = link
        self.instance = instance
        self.keyspace = keys
        self.channels = channels
        self._dead = dead
        client = link.client
        self._enter = client.register_script(ENTER_SCRIPT)
        self._exit = client.register_script(EXIT_SCRIPT)
        self._settle = client.register_script(SETTLE_SCRIPT)
        self._settle_many = client.register_script(SETTLE_MANY_SCRIPT)
        self._presence = client.register_script(PRESENCE_SCRIPT)
        self._holders = client.register_script(HOLDERS_SCRIPT)
        self._send = client.register_script(SEND_SCRIPT)
        self._rewrite = client.register_script(RESTORE_SCRIPT)
        #: This instance's counts: streams per (channel, user or ''), streams per user.
        self._here: dict[tuple[str, str], int] = {}
        self._users: dict[str, int] = {}
        link.on_up(self._restore)
        link.every(KEY_TTL / 3, self._refresh)

    # -- keys ----------------------------------------------------------------------------------

    def _user_key(self, user: str) -> str:
        return self.keyspace.user(user)

    def _channel_keys(self, channel: str) -> list[str]:
        return self.keyspace.presence(channel)

    def _args(self) -> list[Any]:
        return [self.instance, " ".join(self._dead()), KEY_TTL * 1000]

    async def _split(
        self,
        script: Any,
        user: str | None,
        channels: Sequence[str],
        user_args: list[Any],
        channel_args: list[Any],
        flags: list[str],
    ) -> list[Any]:
        """In a cluster: run ``script`` once for the user's part (``user_args``, no channel),
        then once per channel (``channel_args``, the user's part off), each in its own slot;
        the answers joined as one call over every key would give them (for ENTER: its list,
        the first string holding the first item and the indexes of the channels where this
        is a join, the sends read by the user's part; for EXIT: the indexes of the channels
        reported). The parts that succeeded before a failure are undone by :meth:`_restore`
        when the link comes back."""
        enter = script is self._enter
        head: list[Any] = [b"1", b"0-0", b"0"]
        if user is not None:
            keys = [self._user_key(user)] + ([self.keyspace.user_sends(user)] if enter else [])
            head = await script(keys=keys, args=user_args)
            if enter and _numbers(head[0])[0] == 0:
                return head  # over the limit: no channel counted
        found: list[int] = []
        for index, channel in enumerate(channels, start=1):
            keys = self._channel_keys(channel)
            args = channel_args + [flags[index - 1]]
            if enter:  # no user's part: the log key is not read, the user key not written
                answer = await script(keys=[keys[0], *keys, keys[0]], args=args + [-1])
                found += [index for _ in _numbers(answer[0])[1:]]
            else:
                answer = await script(keys=[keys[0], *keys], args=args)
                found += [index for _ in _numbers(answer)]
        if not enter:
            return found
        first = b" ".join([bytes(head[0]).split()[0], *(b"%d" % i for i in found)])
        return [first, *head[1:]]

    def _keys(self, user: str | None, channels: Iterable[str]) -> list[str]:
        keys = [self._user_key(user or "")]
        for channel in channels:
            keys += self._channel_keys(channel)
        return keys

    # -- the broker's presence methods ---------------------------------------------------------

    async def enter(
        self,
        user: str | None,
        info: str | None,
        channels: Collection[str],
        announce: Collection[str],
        limit: int | None,
        join: bytes | None = None,
        began: float | None = None,
    ) -> Entered:
        """See :meth:`tornado_sse.broker.Broker.enter`. With one Redis, each join is published
        by the script that decides it; in a cluster (where the id counter is in another slot)
        right after it. The user's sends are read by the step that counts the stream in
        their hash."""
        self.link.require()
        channels = list(channels)
        info_text = info or ""
        flags = ["1" if c in announce else "0" for c in channels]
        inline = join is not None and not self.link.cluster and "1" in flags
        head = self._args() + [user or "", -1 if limit is None else limit, info_text]
        reads_sends = began is not None and user is not None and limit is not None
        started = time.monotonic() if began is None else began
        # Redis reads from its clock's now - since_ms; the margin covers the time until the
        # script runs, and the log's entries are then cut where the connect began (below).
        called = time.monotonic()
        since_ms = int((called - started) * 1000 + SENDS_MARGIN_MS) if reads_sends else -1
        try:
            if self.link.cluster:
                user_args = head + ["", since_ms]
                channel_args = head[:4] + [-1, info_text, ""]
                counted = user if limit is not None else None
                raw = await self._run(
                    lambda: self._split(
                        self._enter, counted, channels, user_args, channel_args, flags
                    )
                )
            else:
                keys = self._keys(user, channels)
                args = head + [join if inline else "", *flags]
                if inline:
                    keys += [self.keyspace.counter, self.keyspace.epoch]
                    for channel in channels:
                        more_keys, more_args = self.channels.publish_in_script(channel)
                        keys += more_keys
                        args += more_args
                keys.append(self.keyspace.user_sends(user or ""))
                args.append(since_ms)
                raw = await self._run(lambda: self._enter(keys=keys, args=args))
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        result = _numbers(raw[0])
        if result[0] == 0:
            raise TooManyStreams(limit or 0)
        if user is not None and limit is not None:
            self._users[user] = self._users.get(user, 0) + 1
        for channel in channels:
            key = (channel, user or "")
            self._here[key] = self._here.get(key, 0) + 1
        # The script ran at Redis time raw[2], at most this long after the connect began.
        answered = time.monotonic()
        ran_ms = int(raw[2])
        floor_ms = ran_ms - math.ceil((answered - started) * 1000) - 1
        # A send's Redis time on this clock: the script ran halfway through the call, say.
        ran_at = (called + answered) / 2
        logged = (
            (parse_mark(mark), packed) for mark, packed in zip(raw[3::2], raw[4::2], strict=True)
        )
        sends = tuple(
            unpack(mark, packed, min(answered, ran_at + (mark[0] - ran_ms) / 1000))
            for mark, packed in logged
            if mark[0] >= floor_ms
        )
        through = parse_mark(raw[1])
        if inline:  # {1, index, id, index, id, ...}
            pairs = zip(result[1::2], result[2::2], strict=True)
            return Entered({channels[i - 1]: n for i, n in pairs}, sends, through)
        joined = dict.fromkeys((channels[i - 1] for i in result[1:]), 0)
        if join is not None:
            for channel in joined:
                joined[channel] = await self._publish(channel, join, "presence_join")
        return Entered(joined, sends, through)

    async def send(
        self, user: str, frame: bytes | None, close: bool, keep: float
    ) -> tuple[SendMark, list[str]]:
        """Log a send to ``user`` for ``keep`` seconds; its mark and the live instances holding
        streams of the user (this one included). Raises ``RedisError``."""
        send = os.urandom(9).hex()
        keys = [
            self._user_key(user),
            self.keyspace.user_sends(user),
            self.keyspace.user_send_done(user, send),
        ]
        args = self._args() + [int(keep * 1000), pack(frame, close)]
        found = await self._send(keys=keys, args=args)
        return parse_mark(found[0]), [i.decode() for i in found[1:]]

    async def unsend(self, user: str, mark: SendMark) -> None:
        """Take the send ``mark`` out of ``user``'s log (it was refused after it was logged),
        so that a stream of the user counted from now on does not get it; a failure is
        logged, not raised."""
        try:
            await self.link.client.xdel(self.keyspace.user_sends(user), "%d-%d" % mark)
        except RedisError as exc:
            log.warning("refused user send left in the log", extra=fields(error=str(exc)))

    async def exit(
        self, user: str | None, channels: Collection[str], announce: Collection[str], stream: bool
    ) -> list[str]:
        """See :meth:`tornado_sse.broker.Broker.exit`."""
        channels = list(channels)
        if user is not None and stream:
            _count_down(self._users, user)
        for channel in channels:
            _count_down(self._here, (channel, user or ""))
        self.link.require()
        flags = ["1" if c in announce else "0" for c in channels]
        args = self._args() + [user or "", "1" if stream else "0", *flags]
        try:
            if self.link.cluster:
                user_args = args[:5]
                channel_args = args[:4] + ["0"]
                due = await self._run(
                    lambda: self._split(
                        self._exit,
                        user if stream else None,
                        channels,
                        user_args,
                        channel_args,
                        flags,
                    )
                )
            else:
                due = _numbers(
                    await self._run(lambda: self._exit(keys=self._keys(user, channels), args=args))
                )
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        return [channels[i - 1] for i in due]

    async def settle_leaves(self, due: Sequence[tuple[str, str]], delay: float) -> list[Leave]:
        """See :meth:`tornado_sse.broker.Broker.settle_leaves`. With one Redis, one script
        decides and publishes every leave of a batch of at most :data:`SETTLE_BATCH`; in a
        cluster, one script per leave (each in its channel's slot), then its publish."""
        self.link.require()
        leaves: list[Leave] = []
        try:
            if self.link.cluster:
                for channel, user in due:
                    leave = await self._settle_one(channel, user, delay)
                    if leave is not None:
                        event = presence_event("presence_leave", user, leave.info_text)
                        await self._publish(channel, event, "presence_leave")
                        leaves.append(leave)
                return leaves
            for start in range(0, len(due), SETTLE_BATCH):
                batch = due[start : start + SETTLE_BATCH]
                keys = [self.keyspace.counter, self.keyspace.epoch]
                args = self._args() + [int(delay * 1000)]
                for channel, user in batch:
                    more_keys, more_args = self.channels.publish_in_script(channel)
                    keys += self._channel_keys(channel)[:4] + more_keys
                    args += [user, *more_args]
                answer = await self._run(partial(self._settle_many, keys=keys, args=args))
                for index, info in json.loads(answer):
                    channel, user = batch[index - 1]
                    leaves.append(Leave(channel, user, info or None))
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        return leaves

    async def _settle_one(self, channel: str, user: str, delay: float) -> Leave | None:
        args = self._args() + [user, int(delay * 1000)]
        result = await self._run(lambda: self._settle(keys=self._channel_keys(channel), args=args))
        if int(result[0]) == 0:
            return None
        return Leave(channel, user, result[1].decode() or None)

    async def _publish(self, channel: str, event: bytes, name: str) -> int:
        """Publish the presence event ``name`` decided already (in a cluster); its id. A
        failure is logged and gives 0: the decision stands, and the other events of the same
        call are still published (as with one Redis, where the script publishes them)."""
        try:
            return await self.channels.publish(channel, event)
        except (BrokerUnavailable, RedisError) as exc:
            log.warning("presence event not published", extra=fields(event=name, error=str(exc)))
            return 0

    async def presence(self, channel: str, delay: float) -> Snapshot:
        """See :meth:`tornado_sse.broker.Broker.presence`."""
        self.link.require()
        args = self._args() + [int(delay * 1000)]
        try:
            raw = await self._run(
                lambda: self._presence(keys=self._channel_keys(channel), args=args)
            )
        except RedisError as exc:
            raise self.link.unavailable(exc) from None
        anonymous, users, left = raw
        leaves = tuple(Leave(channel, user, info or None) for user, info in json.loads(left))
        return Snapshot(users_json=users.decode(), anonymous=int(anonymous), leaves=leaves)

    async def _run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` as background work of the link, so that closing the link waits for
        it instead of cutting it (a count in flight at shutdown still reaches Redis)."""
        self.link.require()
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def job() -> None:
            try:
                result = await call()
            except BaseException as exc:  # handed to the caller
                if not done.done():
                    done.set_exception(exc)
                return
            if not done.done():
                done.set_result(result)

        self.link.spawn(job())
        return await done

    async def holders(self, user: str) -> list[str]:
        """The live instances holding streams of ``user`` (this one included); raises
        ``RedisError``."""
        found = await self._holders(keys=[self._user_key(user)], args=self._args())
        return [i.decode() for i in found]

    # -- upkeep ----------------------------------------------------------------------------------

    async def _restore(self) -> None:
        """After (re)connecting: write this instance's counts again (Redis may have lost them),
        and the listing entries of their users."""
        ttl = KEY_TTL * 1000
        counts: dict[str, list[Any]] = {}
        for (channel, user), count in self._here.items():
            counts.setdefault(channel, []).extend((user, count))
        async with self.link.client.pipeline(transaction=False) as pipe:
            for channel, pairs in counts.items():
                await self._rewrite(
                    keys=self._channel_keys(channel), args=self._args() + pairs, client=pipe
                )
            for user, count in self._users.items():
                pipe.hset(self._user_key(user), self.instance, count)
                pipe.pexpire(self._user_key(user), ttl)
            await pipe.execute()

    async def _refresh(self) -> None:
        """Keep the keys this instance counts streams in from expiring."""
        ttl = KEY_TTL * 1000
        async with self.link.client.pipeline(transaction=False) as pipe:
            for channel in {channel for channel, _ in self._here}:
                for key in self._channel_keys(channel):
                    pipe.pexpire(key, ttl)
            for user in self._users:
                pipe.pexpire(self._user_key(user), ttl)
            await pipe.execute()


def _count_down(counts: dict[Any, int], key: Any) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _numbers(answer: bytes) -> list[int]:
    """The numbers of a script's answer given as one string of them, separated by spaces."""
    return [int(n) for n in answer.split()]
