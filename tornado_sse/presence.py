"""Users and presence: who is subscribed to each channel, and when a user joins or leaves it.

Two halves, on either side of the broker seam:

- :class:`Ledger` is the bookkeeping of a single process (the in-process broker's): streams per
  user, streams per user per channel, the info shown beside each user, and whether a user's
  join on a channel has been announced (and since when they have had no stream there). The
  Redis broker keeps the same records in Redis (``tornado_sse.cluster.presence``), where each
  decision is one atomic script, so two instances never both announce the same join or leave.
- :class:`Presence` is the gateway's side: it counts each stream in and out of the broker's
  records (handing it the ``presence_join`` event, which the broker publishes where it decides
  a join), and asks again ``PRESENCE_LEAVE_DELAY_SECONDS`` after a user's last stream on a
  channel ended (the leaves due at about the same time in one question), so that a reload or a
  second tab produces neither a leave nor a join; the broker publishes each leave it decides.

Presence events are ordinary channel events (ids, history, replay), data
``{"user": "42", "info": {...}}`` as compact JSON. Anonymous streams are counted but never
announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as quote
from typing import TYPE_CHECKING, Any

from . import protocol
from .errors import GatewayError, TooManyStreams
from .log import fields
from .user_sends import Entered

if TYPE_CHECKING:  # the broker module imports this one
    from .broker import Broker
    from .connection import Connection

log = logging.getLogger("tornado_sse.presence")

#: Seconds of clock difference tolerated when a delayed leave is checked.
LEAVE_TOLERANCE = 0.01
#: Seconds a leave check waits past its delay, so that the leaves due meanwhile are checked
#: (and announced) together, in one question to the broker.
LEAVE_BATCH = 0.05
#: Seconds between two sweeps of the channels this process announces on: leaves that no living
#: instance is waiting to announce (their instance crashed) are announced then.
SWEEP_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class Member:
    """One user on a channel: how many streams they hold there, and their info."""

    user: str
    streams: int
    info: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    """A leave to announce now: the user and the info they were shown with, as compact JSON
    (``None``: none)."""

    channel: str
    user: str
    info_text: str | None = None

    @property
    def info(self) -> dict[str, Any] | None:
        """The info, decoded."""
        return decode_info(self.info_text)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A channel's presence, as the broker read it.

    ``users_json`` is the ``users`` array of ``GET /internal/presence`` already encoded (compact
    JSON, one ``{"user": ..., "info": ..., "streams": n}`` per user, sorted by user id): a
    channel of thousands of users is answered without building an object per user.
    ``anonymous`` counts the streams without a user; ``leaves`` are the leaves the broker
    decided while it looked (crashed instances' users), to be announced.
    """

    users_json: str = "[]"
    anonymous: int = 0
    leaves: tuple[Leave, ...] = field(default=())

    @property
    def users(self) -> tuple[Member, ...]:
        """The users as records (decodes ``users_json``; for callers that need the values)."""
        return tuple(
            Member(entry["user"], entry["streams"], entry["info"])
            for entry in json.loads(self.users_json)
        )

    def body(self, channel: str) -> bytes:
        """The body of ``GET /internal/presence`` (PROTOCOL 8) as compact JSON, UTF-8."""
        return (
            '{"channel":%s,"users":%s,"anonymous":%d}'
            % (protocol.compact_json(channel), self.users_json, self.anonymous)
        ).encode()

    def to_json(self, channel: str) -> dict[str, Any]:
        """The body of ``GET /internal/presence``, decoded."""
        value: dict[str, Any] = json.loads(self.body(channel))
        return value


def users_json(entries: Iterable[tuple[str, int, str | None]]) -> str:
    """The ``users`` array of a :class:`Snapshot` from ``(user, streams, info)`` triples sorted
    by user, where ``info`` is the user's info already as compact JSON (``None``: none)."""
    return "[%s]" % ",".join(
        '{"user":%s,"info":%s,"streams":%d}' % (quote(user), info or "null", streams)
        for user, streams, info in entries
    )


def decode_info(text: str | bytes | None) -> dict[str, Any] | None:
    """An info kept as compact JSON (empty or ``None``: none) as a value."""
    if not text:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


def matches(globs: Collection[str], channel: str) -> bool:
    """Whether ``channel`` matches one of ``globs`` (``fnmatch`` rules, case-sensitive)."""
    return any(fnmatch.fnmatchcase(channel, glob) for glob in globs)


def event_data(user: str, info: str | None) -> str:
    """The data of a presence event, ``{"user": ..., "info": ...}`` as compact JSON, from the
    user id and their info as compact JSON (``None``: none)."""
    return '{"user":%s,"info":%s}' % (quote(user), info or "null")


def presence_event(name: str, user: str, info: str | None) -> bytes:
    """A presence event (``presence_join`` or ``presence_leave``) encoded without its id, as
    a channel event is published, from the user id and their info as compact JSON (the Redis
    scripts that publish presence events build these same bytes)."""
    return protocol.encode_event(event_data(user, info), name)


class Ledger:
    """The presence records of a single process (see the module docstring).

    The methods mirror the broker's (``enter``, ``exit``, ``snapshot``, and ``settle_leave``
    for one leave of the broker's ``settle_leaves``) and keep the same contract; the clock is
    injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._streams: dict[str, int] = {}
        self._members: dict[str, dict[str | None, int]] = {}
        #: Per channel, per user: their info as compact JSON (``None``: none).
        self._info: dict[str, dict[str, str | None]] = {}
        #: Per channel, per announced user: ``None`` while they hold a stream there, else the
        #: time their last stream there ended.
        self._announced: dict[str, dict[str, float | None]] = {}

    def enter(
        self,
        user: str | None,
        info: str | None,
        channels: Iterable[str],
        announce: Collection[str],
        limit: int | None,
    ) -> list[str]:
        """Count one stream of ``user`` (``None``: anonymous) with ``info`` (compact JSON,
        ``None``: none) on ``channels``.

        ``limit`` ``None`` counts no new stream (a live subscription of a counted one); else the
        user's streams are counted one up, unless they already hold ``limit`` (> 0), which
        raises :class:`TooManyStreams` and counts nothing. Returns the channels of ``announce``
        where this is the user's join (nobody announced them there, or their leave was).
        """
        if user is not None and limit is not None:
            held = self._streams.get(user, 0)
            if limit > 0 and held >= limit:
                raise TooManyStreams(limit)
            self._streams[user] = held + 1
        joins = []
        for channel in channels:
            members = self._members.setdefault(channel, {})
            members[user] = members.get(user, 0) + 1
            if user is None:
                continue
            known = self._info.setdefault(channel, {})
            if info is not None or user not in known:
                known[user] = info
            if channel in announce:
                announced = self._announced.setdefault(channel, {})
                if user not in announced:
                    joins.append(channel)
                announced[user] = None
        return joins

    def exit(
        self, user: str | None, channels: Iterable[str], announce: Collection[str], stream: bool
    ) -> list[str]:
        """Undo one :meth:`enter` (``stream``: with its stream count). Returns the channels of
        ``announce`` where the user now holds no stream and a leave is due after the delay
        (ask :meth:`settle_leave` then)."""
        if user is not None and stream:
            held = self._streams.get(user, 0) - 1
            if held > 0:
                self._streams[user] = held
            else:
                self._streams.pop(user, None)
        due = []
        for channel in channels:
            members = self._members.get(channel, {})
            count = members.get(user, 0) - 1
            if count > 0:
                members[user] = count
                continue
            members.pop(user, None)
            if not members:
                self._members.pop(channel, None)
            if user is None:
                continue
            announced = self._announced.get(channel, {})
            if channel in announce and user in announced:
                announced[user] = self.clock()
                due.append(channel)
            else:
                self._forget_info(channel, user)
        return due

    def settle_leave(self, channel: str, user: str, delay: float) -> Leave | None:
        """The leave of ``user`` from ``channel`` if it is to be announced now: they have held
        no stream there for ``delay`` seconds. At most one call gets it; ``None`` otherwise."""
        announced = self._announced.get(channel, {})
        left_at = announced.get(user)
        if left_at is None or self._members.get(channel, {}).get(user, 0) > 0:
            return None
        if self.clock() < left_at + delay - LEAVE_TOLERANCE:
            return None  # they came back and left again: a later check decides
        del announced[user]
        if not announced:
            self._announced.pop(channel, None)
        info = self._info.get(channel, {}).get(user)
        self._forget_info(channel, user)
        return Leave(channel, user, info)

    def snapshot(self, channel: str) -> Snapshot:
        """Who holds streams on ``channel`` now."""
        members = self._members.get(channel, {})
        info = self._info.get(channel, {})
        users = sorted(user for user in members if user is not None)
        return Snapshot(
            users_json=users_json((user, members[user], info.get(user)) for user in users),
            anonymous=members.get(None, 0),
        )

    def streams_of(self, user: str) -> int:
        """How many streams ``user`` holds."""
        return self._streams.get(user, 0)

    def _forget_info(self, channel: str, user: str) -> None:
        known = self._info.get(channel)
        if known is not None:
            known.pop(user, None)
            if not known:
                del self._info[channel]


#: Publishes an event (encoded without its id) on a channel; the broker's ``publish``.
Publish = Callable[[str, bytes], Awaitable[int]]


class _Turns:
    """The changes of one stream's presence count waiting for their turn (see
    :meth:`Presence._turn`)."""

    __slots__ = ("lock", "holders")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holders = 0


class Presence:
    """The gateway's presence: counts streams in and out of the broker's records and
    announces joins and (delayed) leaves on the channels matching ``globs``.

    ``limit`` is ``MAX_STREAMS_PER_USER`` (0: none), ``delay`` is
    ``PRESENCE_LEAVE_DELAY_SECONDS``.
    """

    def __init__(self, broker: Broker, *, globs: Collection[str], delay: float, limit: int) -> None:
        self.broker = broker
        self.globs = tuple(globs)
        self.delay = delay
        self.limit = limit
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Leaves waiting for their delay, in the order they are due: (loop time, channel,
        #: user); the delay is the same for every one, so appending keeps them in order.
        self._due: deque[tuple[float, str, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: The streams whose live subscription change is being followed (by token): whose
        #: turn it is to change what they are counted on, their end after those changes.
        self._following: dict[str, _Turns] = {}
        self._closed = False

    def announced(self, channels: Iterable[str]) -> list[str]:
        """The channels among ``channels`` that get presence events."""
        if not self.globs:
            return []
        return [c for c in channels if matches(self.globs, c)]

    # -- streams --------------------------------------------------------------------------------

    async def enter(self, conn: Connection) -> Entered | None:
        """Count ``conn`` (its user and channels, as they are now); raises
        :class:`TooManyStreams` if its user holds ``limit`` streams already, or
        ``BrokerUnavailable``. An anonymous stream without channels is marked counted with
        nothing in the broker, so that the channels a live subscription gives it later are.
        The joins this published are kept in ``conn.joins``, for the stream to get first.
        For a stream of a user, returns what the broker answered, with the user's sends
        logged since its connect began. The gateway holds live changes of its channels until
        this returned."""
        channels = conn.channels
        if conn.user is None and not channels:
            conn.counted = ()
            return None
        announce = self.announced(channels)
        join = self._join(conn) if announce else None
        began = None if conn.user is None else conn.began
        entered = await self.broker.enter(
            conn.user,
            _info_text(conn),
            channels,
            announce=announce,
            limit=self.limit,
            join=join,
            began=began,
        )
        conn.counted = channels
        if join is not None:
            ids = entered.joins.values()
            conn.joins = tuple(sorted((i, protocol.with_id(i, join)) for i in ids if i))
        return entered if began is not None else None

    def exit(self, conn: Connection) -> None:
        """Count ``conn`` out (its stream ended); never waits. Once for each count: a second
        call finds nothing counted. After a :meth:`follow` in flight for it, when there is one."""
        if conn.counted is None:
            return
        if conn.token in self._following:
            self._spawn(self._exit_after(conn))
            return
        channels, conn.counted = conn.counted, None
        if channels or conn.user is not None:
            self._spawn(self._exit(conn.user, channels, stream=True))

    async def _exit_after(self, conn: Connection) -> None:
        async with self._turn(conn.token):
            channels, conn.counted = conn.counted, None
        if channels is not None and (channels or conn.user is not None):
            await self._exit(conn.user, channels, stream=True)

    async def follow(self, conn: Connection) -> None:
        """Make presence count ``conn`` on its channels as they are now, after a live
        subscription changed them: the channels it gained are counted (their joins announced),
        the ones it lost counted out (their leaves due after the delay). Changes of one stream
        are followed one at a time, each against what the one before left counted. Nothing to
        do for a stream not counted yet (its count takes its channels as they are then) or no
        longer. Raises ``BrokerUnavailable``."""
        if conn.counted is None:
            return
        async with self._turn(conn.token):
            counted = conn.counted
            if counted is None:
                return  # it ended while an earlier change was followed
            added = tuple(c for c in conn.channels if c not in counted)
            removed = tuple(c for c in counted if c not in conn.channels)
            if removed:  # first: counting out never raises (a failure is logged)
                conn.counted = tuple(c for c in counted if c not in removed)
                await self._exit(conn.user, removed, stream=False)
            if added:
                announce = self.announced(added)
                await self.broker.enter(
                    conn.user,
                    _info_text(conn),
                    added,
                    announce=announce,
                    limit=None,
                    join=self._join(conn) if announce else None,
                )
                conn.counted = conn.counted + added

    @contextlib.asynccontextmanager
    async def _turn(self, token: str) -> AsyncIterator[None]:
        """Hold the turn of stream ``token`` to change what presence counts it on: the holders
        of one token take turns in the order they asked; the record goes with the last one."""
        turns = self._following.get(token)
        if turns is None:
            turns = self._following[token] = _Turns()
        turns.holders += 1
        try:
            async with turns.lock:
                yield
        finally:
            turns.holders -= 1
            if not turns.holders:
                del self._following[token]

    async def _exit(self, user: str | None, channels: Collection[str], *, stream: bool) -> None:
        try:
            due = await self.broker.exit(
                user, channels, announce=self.announced(channels), stream=stream
            )
        except GatewayError as error:
            log.warning("presence not updated", extra=fields(error=error.message))
            return
        if user is not None and due:
            when = asyncio.get_running_loop().time() + self.delay
            self._due.extend((when, channel, user) for channel in due)
            self._arm()

    @staticmethod
    def _join(conn: Connection) -> bytes | None:
        """The ``presence_join`` event of ``conn``'s user (``None`` when anonymous)."""
        if conn.user is None:
            return None
        return presence_event("presence_join", conn.user, _info_text(conn))

    def _arm(self) -> None:
        """Have the leaves waiting in ``_due`` checked :data:`LEAVE_BATCH` after the first of
        them is due, together with every other one due by then."""
        if self._timer is not None or not self._due or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._due[0][0] + LEAVE_BATCH, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        batch = []
        while self._due and self._due[0][0] <= now:
            _, channel, user = self._due.popleft()
            batch.append((channel, user))
        if batch:
            self._spawn(self._settle(batch))
        self._arm()

    async def _settle(self, due: list[tuple[str, str]]) -> None:
        try:
            await self.broker.settle_leaves(due, self.delay)
        except GatewayError as error:
            log.warning("presence leaves not checked", extra=fields(error=error.message))

    async def _publish(self, name: str, channel: str, user: str, info: str | None) -> None:
        tail = presence_event(name, user, info)
        try:
            await self.broker.publish(channel, tail)
        except GatewayError as error:
            log.warning(
                "presence event not published", extra=fields(event=name, error=error.message)
            )

    # -- questions ------------------------------------------------------------------------------

    async def snapshot(self, channel: str) -> Snapshot:
        """Who holds streams on ``channel``, cluster-wide (raises ``BrokerUnavailable``); the
        leaves decided meanwhile are announced."""
        snapshot = await self.broker.presence(channel, self.delay)
        for leave in snapshot.leaves:
            self._spawn(self._publish("presence_leave", leave.channel, leave.user, leave.info_text))
        return snapshot

    # -- life -----------------------------------------------------------------------------------

    def start(self, channels: Callable[[], Iterable[str]]) -> None:
        """Sweep the announced ones of ``channels()`` (the channels this process has streams
        on) every :data:`SWEEP_INTERVAL`, so the leaves of crashed instances are announced."""
        if self.globs and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(channels))

    async def _sweep(self, channels: Callable[[], Iterable[str]]) -> None:
        while not self._closed:
            await asyncio.sleep(SWEEP_INTERVAL)
            for channel in self.announced(channels()):
                try:
                    await self.snapshot(channel)
                except GatewayError:
                    break  # the broker is unreachable: the next sweep tries again

    def close(self) -> None:
        """Stop the timers and the sweep; leaves not yet due are left to the broker's
        records (another instance's sweep announces them)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due.clear()

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for the presence updates in flight."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _info_text(conn: Connection) -> str | None:
    """``conn``'s info as compact JSON, as the brokers and presence events take it."""
    return conn.info.text if conn.info is not None else None
