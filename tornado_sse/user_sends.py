"""User sends that reach the streams whose connect callback was in flight (PROTOCOL 4.1).

A stream is its user's only once the connect answer names the user, so a send to the user
while the callback is in flight cannot find it. The broker therefore logs every user send
for a while (:data:`KEEP_SLACK` past the callback timeout), each with a :data:`SendMark` that
orders the sends of one user; when a new stream of the user is counted, the broker hands it
the user's sends logged since its connect began (:class:`Entered`), and they are queued for
it as a send during the callback would be (PROTOCOL 4.4).

From its connect answer until that count is done, the stream is its user's but does not yet
know which sends the log holds for it: sends delivered to it meanwhile are held
(``Connection.user_held``) and merged with the log's by mark, each once, in mark order. After
that, a send whose mark is at most the last one the log held (``Connection.user_through``) was
in the log already and is skipped.

Each send also carries when it was made on this process's ``time.monotonic`` clock
(:attr:`UserSend.at`), so that it is queued among the token sends of the callback in the order
the sends were made (PROTOCOL 4.4): exact in one process; with Redis the log's times are Redis
times brought to this clock through the call that read them, to within that call's round trip.

:class:`SendLog` is the in-process log; the Redis broker keeps one per user in Redis.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass

#: Where a user send stands among the sends to its user: marks of one user's sends are
#: distinct and grow in the order the broker logged them.
SendMark = tuple[int, int]

#: The mark before every send.
NO_MARK: SendMark = (0, 0)

#: Seconds a user send is kept beyond ``CALLBACK_TIMEOUT_SECONDS``: the time from a connect's
#: start to its count besides the callback (registering its token, counting it).
KEEP_SLACK = 10.0


@dataclass(frozen=True, slots=True)
class UserSend:
    """One send to a user: its frame (``None``: none), whether it closes the streams, and
    when it was made (``time.monotonic``; for one read from Redis, as near as known)."""

    mark: SendMark
    frame: bytes | None
    close: bool
    at: float


@dataclass(frozen=True, slots=True)
class Entered:
    """What counting a stream gave (see ``Broker.enter``): the channels where it was its
    user's join, each with the id of the join event; for a new stream of a user, the user's
    sends logged since its connect began, in mark order, and ``through``, a mark at least
    that of every send to the user logged by then."""

    joins: dict[str, int]
    sends: tuple[UserSend, ...] = ()
    through: SendMark = NO_MARK


def merged(logged: tuple[UserSend, ...], held: list[UserSend], through: SendMark) -> list[UserSend]:
    """The sends a newly counted stream gets, once each in mark order: those the log gave
    (``logged``, all at most ``through``) and those delivered to it while it was counted
    (``held``) that came after the log (marks above ``through``; the others were sent before
    its connect began, or are in ``logged``)."""
    later = {s.mark: s for s in held if s.mark > through}
    return [*logged, *sorted(later.values(), key=lambda s: s.mark)]


def pack(frame: bytes | None, close: bool) -> bytes:
    """A user send as the log keeps it: ``c`` (closes) or ``k``, then ``f`` and the frame, or
    nothing for none."""
    return (b"c" if close else b"k") + (b"" if frame is None else b"f" + frame)


def unpack(mark: SendMark, packed: bytes, at: float) -> UserSend:
    """The :class:`UserSend` that :func:`pack` gave ``packed``, made at ``at``."""
    frame = packed[2:] if packed[1:2] == b"f" else None
    return UserSend(mark, frame, packed[:1] == b"c", at)


def parse_mark(text: bytes | str) -> SendMark:
    """A Redis stream entry id (``<ms>-<n>``) as a :data:`SendMark`."""
    ms, _, n = (text.decode() if isinstance(text, bytes) else text).partition("-")
    return int(ms), int(n or 0)


class SendLog:
    """The user sends of one process, each kept for the ``keep`` seconds it was logged with."""

    def __init__(self) -> None:
        self._count = 0
        #: Per user, their kept sends in the order logged: (expires at, send).
        self._by_user: dict[str, deque[tuple[float, UserSend]]] = {}
        #: Every kept send's (expires at, mark, user), soonest first, to let the old ones go.
        self._expiries: list[tuple[float, SendMark, str]] = []

    def log(self, user: str, frame: bytes | None, close: bool, keep: float) -> SendMark:
        """Keep a send to ``user`` for ``keep`` seconds; its mark."""
        now = time.monotonic()
        self._forget(now)
        self._count += 1
        send = UserSend((0, self._count), frame, close, now)
        self._by_user.setdefault(user, deque()).append((now + keep, send))
        heapq.heappush(self._expiries, (now + keep, send.mark, user))
        return send.mark

    def since(self, user: str, began: float) -> tuple[tuple[UserSend, ...], SendMark]:
        """The kept sends to ``user`` logged at ``began`` (``time.monotonic``) or later, and
        the last mark given."""
        self._forget(time.monotonic())
        kept = self._by_user.get(user, ())
        return tuple(s for _, s in kept if s.at >= began), (0, self._count)

    def __len__(self) -> int:
        """How many sends are kept."""
        return sum(len(kept) for kept in self._by_user.values())

    def _forget(self, now: float) -> None:
        """Let go of the sends that expired (a user's go in the order logged: one kept longer
        keeps those after it until it expires)."""
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, _, user = heapq.heappop(expiries)
            kept = self._by_user.get(user)
            while kept and kept[0][0] <= now:
                kept.popleft()
            if kept is not None and not kept:
                del self._by_user[user]
