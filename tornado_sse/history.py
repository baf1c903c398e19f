"""Channel event ids and the bounded, time-limited history used for ``Last-Event-ID`` replay.

Ids are decimal integers, strictly increasing in publish order. A process starts its counter at
the current Unix time in microseconds, so ids keep increasing across restarts and an id from an
earlier run is recognised as older than the history (a gap) rather than mistaken for a new one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """One published channel event: its id, channel, encoded frame and publish time."""

    id: int
    channel: str
    frame: bytes
    at: float


@dataclass(frozen=True, slots=True)
class Replay:
    """What a reconnecting stream gets: ``(id, frame)`` pairs to replay in order, or a gap
    (replay impossible)."""

    events: tuple[tuple[int, bytes], ...] = ()
    gap: bool = False


def parse_event_id(value: str | None) -> int | None:
    """The integer of a gateway-issued id, or ``None`` if ``value`` cannot be one."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 30:
        return None
    return int(value)


class IdCounter:
    """Strictly increasing event ids for one process."""

    def __init__(self, start: int | None = None) -> None:
        self.first = start if start is not None else int(time.time() * 1_000_000)
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

    def append(self, id: int, channel: str, frame: bytes) -> None:
        """Record a published event. Ids must be appended in increasing order."""
        self._last_id = id
        if not self.enabled:
            self._dropped_through = id
            return
        self._entries.append(Entry(id, channel, frame, self._clock()))
        while len(self._entries) > self.size:
            self._dropped_through = self._entries.popleft().id

    def _expire(self) -> None:
        limit = self._clock() - self.ttl
        entries = self._entries
        while entries and entries[0].at < limit:
            self._dropped_through = entries.popleft().id

    def replay(self, last_event_id: str, channels: Collection[str]) -> Replay:
        """Frames of ``channels`` published after ``last_event_id``, in order, or a gap.

        A gap when the id was never issued here or events after it are no longer kept. Nothing
        at all (no replay, no gap) when the history is off.
        """
        if not self.enabled:
            return Replay()
        self._expire()
        last = parse_event_id(last_event_id)
        if last is None or last < self._dropped_through or last > self._last_id:
            return Replay(gap=True)
        return Replay(
            events=tuple(
                (e.id, e.frame) for e in self._entries if e.id > last and e.channel in channels
            )
        )
