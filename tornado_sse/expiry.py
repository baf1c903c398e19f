"""When streams must end: the deadlines of every stream in one heap, for one shared timer.

The gateway arms a single timer for the earliest deadline (:meth:`ExpiryQueue.next_deadline`)
and, when it fires, ends the streams :meth:`ExpiryQueue.pop_due` returns. A stream that ended
earlier is skipped when its deadline comes; the heap is rebuilt without such streams whenever
they make up most of it, so its size stays bounded by the open streams, whatever the churn.
"""

from __future__ import annotations

import heapq
import itertools

from .connection import Connection, State

#: The heap is not compacted below this many entries.
MIN_COMPACT = 1024


class ExpiryQueue:
    """Connections by deadline (Unix seconds), earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Connection]] = []
        self._order = itertools.count()  # ties leave in the order they came
        self._compact_at = MIN_COMPACT

    def __len__(self) -> int:
        """Entries held, including those of streams that already ended."""
        return len(self._heap)

    def add(self, deadline: float, conn: Connection) -> None:
        """End ``conn`` at ``deadline`` (unless it ends before)."""
        heapq.heappush(self._heap, (deadline, next(self._order), conn))
        if len(self._heap) >= self._compact_at:
            self._heap = [e for e in self._heap if e[2].state is not State.CLOSED]
            heapq.heapify(self._heap)
            self._compact_at = max(MIN_COMPACT, 2 * len(self._heap))

    def next_deadline(self) -> float | None:
        """The earliest deadline of a stream that has not ended, ``None`` if there is none."""
        heap = self._heap
        while heap and heap[0][2].state is State.CLOSED:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[Connection]:
        """Remove and return the streams, not yet ended, whose deadline is at or before ``now``,
        earliest first."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            conn = heapq.heappop(heap)[2]
            if conn.state is not State.CLOSED:
                due.append(conn)
        return due
