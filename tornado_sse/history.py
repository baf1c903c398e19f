"""Channel event ids, the replay rules, and the in-process history.

Ids are decimal integers, strictly increasing in publish order. A gateway starts its counter at
:func:`first_id` (the current Unix time in microseconds), so ids keep increasing across restarts
and an id from an earlier run is recognised as older than the history (a gap) rather than
mistaken for a new one. Every broker uses that rule for its first id.

Whatever keeps the history (this process, or Redis), it answers a replay question with a
:class:`Window`; :meth:`Window.replay` is the one place that decides between a replay and a gap.
Histories keep each event *without* its ``id:`` line (the "tail"): the gateway adds the line when
it writes the event (:func:`tornado_sse.protocol.with_id`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass


def first_id() -> int:
    """The first event id of a history that starts now."""
    return int(time.time() * 1_000_000)


def parse_event_id(value: str | None) -> int | None:
    """The integer of a gateway-issued id, or ``None`` if ``value`` cannot be one."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 30:
        return None
    return int(value)


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
    order; ``dropped_through`` is the highest id no longer kept (evicted or expired), so a replay
    from below it would miss events; ``last_id`` is the highest id issued so far.
    """

    events: tuple[tuple[int, bytes], ...]
    dropped_through: int
    last_id: int

    def replay(self, since: int) -> Replay:
        """The replay for a client whose last event was ``since``: every kept event after it,
        or a gap if events after it were dropped or ``since`` was never issued."""
        if since < self.dropped_through or since > self.last_id:
            return GAP
        return Replay(events=tuple(e for e in self.events if e[0] > since))


@dataclass(frozen=True, slots=True)
class Entry:
    """One published channel event: its id, channel, tail and publish time."""

    id: int
    channel: str
    tail: bytes
    at: float


class IdCounter:
    """Strictly increasing event ids for one process, from :func:`first_id`."""

    def __init__(self, start: int | None = None) -> None:
        self.first = start if start is not None else first_id()
        self.last = self.first - 1

    def next(self) -> int:
        """The next id."""
        self.last += 1
        return self.last


class History:
    """The last ``size`` channel events, each kept at most ``ttl`` seconds.

    ``first_id`` is the first id this history could ever hold (the id counter's start): an id
    below ``first_id - 1`` or above the last issued id was never issued here.
    """

    def __init__(
        self, size: int, ttl: float, first_id: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._entries: deque[Entry] = deque()
        # The highest id dropped (or never kept): replay from below it has a gap.
        self._dropped_through = first_id - 1
        self._last_id = first_id - 1

    @property
    def enabled(self) -> bool:
        """Whether replay is on (``HISTORY_SIZE`` > 0)."""
        return self.size > 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, id: int, channel: str, tail: bytes) -> None:
        """Record a published event. Ids must be appended in increasing order."""
        self._last_id = id
        if not self.enabled:
            self._dropped_through = id
            return
        self._entries.append(Entry(id, channel, tail, self._clock()))
        while len(self._entries) > self.size:
            self._dropped_through = self._entries.popleft().id

    def _expire(self) -> None:
        limit = self._clock() - self.ttl
        entries = self._entries
        while entries and entries[0].at < limit:
            self._dropped_through = entries.popleft().id

    def window(self, channels: Collection[str], since: int) -> Window:
        """The events of ``channels`` after ``since`` that are still kept (see :class:`Window`)."""
        self._expire()
        return Window(
            events=tuple(
                (e.id, e.tail) for e in self._entries if e.id > since and e.channel in channels
            ),
            dropped_through=self._dropped_through,
            last_id=self._last_id,
        )
