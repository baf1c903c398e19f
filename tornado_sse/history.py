"""Channel event ids, how long each channel keeps its events, the replay rule, and the
in-process history.

**Ids** are decimal integers, strictly increasing in publish order, that follow the clock: an
event's id is the publish time in microseconds since the Unix epoch, or one more than the
previous id if that is larger (:func:`next_id`). So ids keep increasing across restarts and a
history that lost its contents, an id from an earlier run is older than anything kept now (a
gap, never a wrong position), and an id says roughly when its event was published, which lets a
history that has forgotten a quiet channel still answer truthfully (see :meth:`History.window`).

**Retention** is per channel (:class:`Retention`): the last ``size`` events of each channel, each
for at most ``ttl`` seconds, with ``HISTORY_RULES`` overriding both for channels matching a glob.
A channel whose rule keeps nothing (size 0) has no history: it is left out of replays.

Whatever keeps the history (this process, or Redis), it answers a replay question with a
:class:`Window`; :meth:`Window.replay` is the one place that decides between a replay and a gap.
Histories keep each event *without* its ``id:`` line (the "tail"): the gateway adds the line when
it writes the event (:func:`tornado_sse.protocol.with_id`).
"""

from __future__ import annotations

import fnmatch
import functools
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field


def id_at(timestamp: float) -> int:
    """The id an event published at Unix time ``timestamp`` gets (unless ids ran ahead)."""
    return int(timestamp * 1_000_000)


def first_id() -> int:
    """The first event id of a history that starts now."""
    return id_at(time.time())


def next_id(last: int, now: float) -> int:
    """The id after ``last`` for an event published at Unix time ``now``."""
    return max(last + 1, id_at(now))


def parse_event_id(value: str | None) -> int | None:
    """The integer of a gateway-issued id, or ``None`` if ``value`` cannot be one."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 30:
        return None
    return int(value)


# -- retention ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """How many events a channel keeps (``size``), and for how many seconds (``ttl``)."""

    size: int
    ttl: float

    @property
    def keeps(self) -> bool:
        """Whether channels under this policy have a history at all."""
        return self.size > 0


@dataclass(frozen=True)
class Retention:
    """The policy of every channel: the first matching ``rules`` glob, else the default.

    ``max_bytes`` bounds the whole in-process history (the oldest events go first past it).
    """

    size: int = 1000
    ttl: float = 300.0
    rules: tuple[tuple[str, Policy], ...] = ()
    max_bytes: int = 64 * 1024 * 1024
    _cache: Callable[[str], Policy] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cache", functools.lru_cache(maxsize=4096)(self._lookup))

    @property
    def enabled(self) -> bool:
        """Whether replay is on at all (``HISTORY_SIZE`` > 0 or a rule keeps something)."""
        return self.size > 0 or any(policy.keeps for _, policy in self.rules)

    def policy(self, channel: str) -> Policy:
        """The policy of ``channel``."""
        return self._cache(channel)

    def _lookup(self, channel: str) -> Policy:
        for pattern, policy in self.rules:
            if fnmatch.fnmatchcase(channel, pattern):
                return policy
        return Policy(self.size, self.ttl)

    def policies(self) -> list[Policy]:
        """Every distinct policy, the default first."""
        found = [Policy(self.size, self.ttl)]
        found += [p for _, p in self.rules if p not in found]
        return found


def parse_rules(text: str) -> tuple[tuple[str, Policy], ...]:
    """``HISTORY_RULES``: ``glob=size/ttl`` items separated by commas, e.g.
    ``ticker.*=1/60,chat.*=500/3600``. Raises ``ValueError`` naming the bad item."""
    rules = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        pattern, sep, value = item.partition("=")
        size, slash, ttl = value.partition("/")
        try:
            policy = Policy(int(size), float(ttl))
            valid = bool(pattern.strip()) and bool(sep) and bool(slash)
        except ValueError:
            valid = False
        if not valid or policy.size < 0 or not 0 <= policy.ttl < float("inf"):
            raise ValueError("%r is not glob=size/seconds" % item)
        rules.append((pattern.strip(), policy))
    return tuple(rules)


# -- the replay rule ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """What a reconnecting stream gets: ``(id, tail)`` pairs to replay in order, or a gap
    (replay impossible)."""

    events: tuple[tuple[int, bytes], ...] = ()
    gap: bool = False


#: A reconnect whose id is unusable, or whose history cannot be read: only live events follow.
GAP = Replay(gap=True)


@dataclass(frozen=True, slots=True)
class Window:
    """What a history holds of some channels after an id.

    ``events`` are the ``(id, tail)`` pairs of those channels after the id asked for, in id
    order; ``dropped_through`` is the highest id of any of those channels that may no longer
    be kept (evicted, expired, or issued before the history started), so a replay from below it
    could miss events; ``last_id`` is the highest id issued so far.
    """

    events: tuple[tuple[int, bytes], ...]
    dropped_through: int
    last_id: int

    def replay(self, since: int) -> Replay:
        """The replay for a client whose last event was ``since``: every kept event after it,
        or a gap if any event after it may have been dropped (a replay is never partial) or
        ``since`` was never issued."""
        if since < self.dropped_through or since > self.last_id:
            return GAP
        return Replay(events=tuple(e for e in self.events if e[0] > since))


# -- the in-process history --------------------------------------------------------------------

#: Bytes an event costs beyond its tail: the entry object (72), its id (32) and time (24), the
#: bytes header (33), two deque slots (16), and the allocator's rounding; measured at 199 to 222
#: bytes by ``python -m benchmarks.channels --parts memory`` (docs/benchmarks.md).
ENTRY_OVERHEAD = 224


class _Entry:
    __slots__ = ("id", "log", "tail", "at", "removed")

    def __init__(self, id: int, log: _ChannelLog, tail: bytes, at: float) -> None:
        self.id = id
        self.log = log
        self.tail = tail
        self.at = at
        self.removed = False


class _ChannelLog:
    """One channel's kept events (oldest first) and the highest id it dropped."""

    __slots__ = ("channel", "policy", "entries", "dropped_through")

    def __init__(self, channel: str, policy: Policy, dropped_through: int) -> None:
        self.channel = channel
        self.policy = policy
        self.entries: deque[_Entry] = deque()
        self.dropped_through = dropped_through


class _Class:
    """Every kept event of one policy, in publish order (so expiry is oldest-first)."""

    __slots__ = ("policy", "entries", "live")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.entries: deque[_Entry] = deque()
        self.live = 0

    def head(self) -> _Entry | None:
        """The oldest entry still kept (removed ones are dropped on the way)."""
        entries = self.entries
        while entries and entries[0].removed:
            entries.popleft()
        return entries[0] if entries else None

    def compact(self) -> None:
        """Forget removed entries once they outnumber the kept ones (bounds the memory of
        entries trimmed from the middle of the publish order)."""
        if len(self.entries) > 2 * self.live + 64:
            self.entries = deque(e for e in self.entries if not e.removed)


class History:
    """The channel histories of one process, bounded per channel and in total.

    ``first_id`` is the first id this history could ever hold (the id counter's start); ids
    from before it were never kept here. ``clock`` is Unix time (ids follow it).
    """

    def __init__(
        self, retention: Retention, first_id: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.retention = retention
        self._clock = clock
        self._first_id = first_id
        self._last_id = first_id - 1
        self._channels: dict[str, _ChannelLog] = {}
        self._classes = {p: _Class(p) for p in retention.policies()}
        self._empty: set[_ChannelLog] = set()
        #: Bytes the kept events cost (tails plus :data:`ENTRY_OVERHEAD` each).
        self.bytes = 0

    def __len__(self) -> int:
        return sum(c.live for c in self._classes.values())

    @property
    def channels(self) -> int:
        """Channels with a record (kept events, or a recent drop to remember)."""
        return len(self._channels)

    def append(self, id: int, channel: str, tail: bytes) -> None:
        """Record a published event. Ids must be appended in increasing order."""
        self._last_id = id
        policy = self.retention.policy(channel)
        if not policy.keeps:
            return
        log = self._channels.get(channel)
        if log is None:
            log = self._channels[channel] = _ChannelLog(channel, policy, self._first_id - 1)
        self._empty.discard(log)
        entry = _Entry(id, log, tail, self._clock())
        log.entries.append(entry)
        klass = self._classes[policy]
        klass.entries.append(entry)
        klass.live += 1
        self.bytes += len(tail) + ENTRY_OVERHEAD
        while len(log.entries) > policy.size:
            self._drop(log.entries[0])
        klass.compact()
        while self.bytes > self.retention.max_bytes:
            self._drop_oldest()

    def _drop(self, entry: _Entry) -> None:
        """Forget ``entry``, the oldest kept event of its channel."""
        log = entry.log
        removed = log.entries.popleft()
        assert removed is entry
        entry.removed = True
        log.dropped_through = entry.id
        self._classes[log.policy].live -= 1
        self.bytes -= len(entry.tail) + ENTRY_OVERHEAD
        entry.tail = b""
        if not log.entries:
            self._empty.add(log)

    def _drop_oldest(self) -> None:
        heads = [h for h in (c.head() for c in self._classes.values()) if h is not None]
        self._drop(min(heads, key=lambda e: e.id))

    def expire(self) -> int:
        """Free the events older than their channel's ttl, and the records of channels that
        have nothing left to tell; returns how many events were freed. Called by a timer."""
        now = self._clock()
        freed = 0
        for klass in self._classes.values():
            limit = now - klass.policy.ttl
            while (head := klass.head()) is not None and head.at < limit:
                self._drop(head)
                freed += 1
            klass.compact()
        for log in list(self._empty):
            if log.dropped_through <= id_at(now - log.policy.ttl):
                # Anything it dropped is older than the ttl: the clock rule tells the same.
                self._empty.discard(log)
                del self._channels[log.channel]
        return freed

    def window(self, channels: Collection[str], since: int) -> Window:
        """The events of ``channels`` after ``since`` that are still kept (see :class:`Window`).

        Channels whose policy keeps nothing are left out. A channel with no record has kept
        nothing for at least its ttl, so all that can be said is that events older than the
        ttl may have been dropped.
        """
        now = self._clock()
        dropped = self._first_id - 1
        events: list[tuple[int, bytes]] = []
        for channel in channels:
            policy = self.retention.policy(channel)
            if not policy.keeps:
                continue
            log = self._channels.get(channel)
            if log is None:
                dropped = max(dropped, id_at(now - policy.ttl))
                continue
            limit = now - policy.ttl
            for entry in log.entries:
                if entry.at < limit:  # expired, not yet freed by the timer
                    dropped = max(dropped, entry.id)
                elif entry.id > since:
                    events.append((entry.id, entry.tail))
            dropped = max(dropped, log.dropped_through)
        events.sort()
        return Window(events=tuple(events), dropped_through=dropped, last_id=self._last_id)


class IdCounter:
    """Strictly increasing event ids for one process, following the clock (see
    :func:`next_id`)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.first = id_at(clock())
        self.last = self.first - 1

    def next(self) -> int:
        """The next id."""
        self.last = next_id(self.last, self._clock())
        return self.last
