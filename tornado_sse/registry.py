"""Tokens and channels to connections, local delivery, and the exactly-once disconnect rule.

The :class:`Registry` is the one place that decides what happens to a stream: it queues sends
during the connect callback, opens streams, writes frames, fans channel frames out, and closes
streams. :meth:`Registry.close` is idempotent: the first cause that ends a stream sets its reason,
and the backend is told ``disconnect`` once, after the stream has ended, if it may have believed
the token connected.

It also bounds the memory of unsent output: each stream's (``max_queued_bytes``) and all
streams' together (``max_total_queued_bytes``). The total is the sum of what each stream's output
cost at its last write; when it passes the bound, every stream that is behind is measured again
and the streams furthest behind are closed as slow consumers until the total is back under
:data:`SHED_TO` of the bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from tornado.iostream import StreamClosedError

from . import protocol
from .connection import Connection, State, StreamWriter
from .errors import BufferFull, CloseDetail, CloseReason, TokenNotFound
from .log import fields
from .user_sends import SendMark, UserSend, merged

log = logging.getLogger("tornado_sse.registry")

#: Past ``max_total_queued_bytes``, streams are closed until the total is under this share of
#: it, so that the next measurement (which visits every stream that is behind) is some way off.
SHED_TO = 7 / 8

#: Told once about every connection that ended and that the backend or the logs must hear of:
#: every stream that opened, and every connection the backend may believe connected. Reason and
#: detail are on the connection; ``backend_may_know`` says whether to send ``disconnect``. Must
#: not block.
EndListener = Callable[[Connection], None]


class Registry:
    """All connections of this process, by token and by channel."""

    def __init__(
        self,
        *,
        max_pending_events: int = 100,
        max_queued_bytes: int = 2 * 1024 * 1024,
        max_total_queued_bytes: int = 256 * 1024 * 1024,
        on_ended: EndListener | None = None,
    ) -> None:
        #: Called once per ended connection (see :data:`EndListener`); the gateway sets it.
        self.on_ended = on_ended
        self.max_pending_events = max_pending_events
        self.max_queued_bytes = max_queued_bytes
        self.max_total_queued_bytes = max_total_queued_bytes
        self._by_token: dict[str, Connection] = {}
        self._by_channel: dict[str, set[Connection]] = {}
        self._by_user: dict[str, set[Connection]] = {}
        self._open = 0
        #: Requests still being received (counted by the HTTP server): they take places under
        #: ``MAX_CONNECTIONS`` beside the connections known here.
        self.receiving = 0
        #: What the unsent output of all streams costs, as of each stream's last write.
        self.queued_bytes = 0
        #: The streams whose output cost was not 0 at their last write.
        self._behind: set[Connection] = set()
        #: Unsent output dropped with the streams that closed, in all (it went back to the heap).
        self.released_bytes = 0
        #: Frames (events, heartbeats, retry hints) and bytes written, and heartbeats among them.
        self.frames_written = 0
        self.bytes_written = 0
        self.heartbeats_written = 0

    # -- lookup -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Connections known: connecting and open."""
        return len(self._by_token)

    @property
    def open_count(self) -> int:
        """Streams that are open (headers flushed)."""
        return self._open

    def get(self, token: str) -> Connection | None:
        """The live connection holding ``token``, if any."""
        return self._by_token.get(token)

    def connections(self) -> Iterator[Connection]:
        """Every open connection (a snapshot, safe to close while iterating)."""
        return iter([c for c in self._by_token.values() if c.state is State.OPEN])

    def subscribers(self, channel: str) -> int:
        """How many open streams are subscribed to ``channel``."""
        return len(self._by_channel.get(channel, ()))

    def channels(self) -> list[str]:
        """The channels open streams here are subscribed to."""
        return list(self._by_channel)

    def of_user(self, user: str) -> list[Connection]:
        """The live streams of ``user`` (open, or connecting once their connect answer named
        the user), except those closing."""
        return [c for c in self._by_user.get(user, ()) if not c.closing]

    # -- lifecycle ----------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        """Register a connection whose connect callback is starting; sends to it are queued."""
        self._by_token[conn.token] = conn

    def open(self, conn: Connection, writer: StreamWriter, *, hold: bool = False) -> bool:
        """Open ``conn`` on ``writer`` after a 2xx connect answer.

        Writes the sends queued during the callback, then subscribes ``conn.channels`` so live
        channel events follow; with ``hold`` those are kept aside until :meth:`release` (so a
        replay can be written first). Returns False (and reports the end) if the stream was
        closed meanwhile, e.g. the client left during the callback or a queued close ended it.
        """
        if conn.state is State.CLOSED:
            self.settle(conn)
            return False
        conn.backend_may_know = True
        conn.attach(writer)
        self._open += 1
        frames, close = conn.take_pending()
        for frame in frames:
            self.write(conn, frame)
        if close:
            self.close(conn, CloseReason.SERVER_CLOSED)
            return False
        if conn.state is not State.OPEN:
            return False
        if hold:
            conn.held = []
        for channel in conn.channels:
            self._by_channel.setdefault(channel, set()).add(conn)
        return True

    def bind_user(self, conn: Connection) -> None:
        """Index ``conn`` under ``conn.user`` (once its connect answer named it), so that sends
        to its user reach it, connecting or open; they are held until :meth:`catch_up`."""
        if conn.user is not None and conn.state is not State.CLOSED:
            self._by_user.setdefault(conn.user, set()).add(conn)
            conn.user_held = []

    def catch_up(self, conn: Connection, sends: tuple[UserSend, ...], through: SendMark) -> None:
        """``conn`` was counted: queue for it its user's ``sends`` that the broker logged since
        its connect began (all marked at most ``through``) and those held since
        :meth:`bind_user`, once each in mark order, as sends during the connect callback, each
        among the token sends queued by when it was made (an event the queue has no room for
        is dropped, as :meth:`send_user` drops it, but its close applies); from now on a user
        send marked at most ``through`` is skipped."""
        held, conn.user_held = conn.user_held or [], None
        at = 0.0
        for send in merged(sends, held, through):
            through = max(through, send.mark)
            at = max(at, send.at)  # a user's sends keep their marks' order among themselves
            if conn.state is not State.CONNECTING:
                break
            try:
                conn.queue(send.frame, send.close, self.max_pending_events, at)
            except BufferFull:
                if send.close:  # the event has no room, the close still applies
                    conn.queue(None, True, self.max_pending_events, at)
        conn.user_through = through

    def add_channels(self, conn: Connection, channels: Iterable[str]) -> tuple[str, ...]:
        """Subscribe a live stream to those of ``channels`` it lacks (an open one receives
        their events from now on); returns them."""
        added = tuple(c for c in dict.fromkeys(channels) if c not in conn.channels)
        conn.channels = conn.channels + added
        if conn.state is State.OPEN:
            for channel in added:
                self._by_channel.setdefault(channel, set()).add(conn)
        return added

    def remove_channels(self, conn: Connection, channels: Iterable[str]) -> tuple[str, ...]:
        """Unsubscribe a live stream from those of ``channels`` it has; returns them."""
        drop = set(channels)
        removed = tuple(c for c in conn.channels if c in drop)
        conn.channels = tuple(c for c in conn.channels if c not in drop)
        self._unindex(conn, removed)
        return removed

    def _unindex(self, conn: Connection, channels: Iterable[str]) -> None:
        for channel in channels:
            members = self._by_channel.get(channel)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self._by_channel[channel]

    def release(self, conn: Connection, replay: Iterable[tuple[int, bytes]], after: int) -> None:
        """Write ``replay`` to a held stream, then the live events held meanwhile, skipping
        those already replayed (ids at most ``after`` or at most the last id replayed), as
        later live events will be."""
        held, conn.held = conn.held or [], None
        for event_id, frame in replay:
            after = max(after, event_id)
            self.write(conn, frame)
        for event_id, frame in held:
            if event_id > after:
                self.write(conn, frame)
        conn.skip_through = after

    def settle(self, conn: Connection) -> None:
        """The backend accepted ``conn``, which ended while its connect callback was in flight:
        report the end now (the backend hears ``disconnect`` with the first cause)."""
        conn.backend_may_know = True
        self._report(conn)

    def fail(
        self, conn: Connection, *, backend_may_know: bool, detail: CloseDetail | None = None
    ) -> None:
        """End a connection whose connect did not open a stream.

        With ``backend_may_know`` (the answer timed out or was unusable) the backend hears
        ``disconnect``: reason ``client_closed`` if the client had already left, else ``error``
        with ``detail``.
        """
        conn.backend_may_know = backend_may_know
        if conn.state is State.CLOSED:
            self._report(conn)
            return
        self.close(conn, CloseReason.ERROR, detail)

    def close(
        self,
        conn: Connection,
        reason: CloseReason,
        detail: CloseDetail | None = None,
        *,
        clean: bool = False,
    ) -> None:
        """End ``conn`` for ``reason``; idempotent, the first reason wins.

        An open stream is ended (``abort`` for errors unless ``clean``, a clean end otherwise:
        what was written before reaches the client) before the
        disconnect callback is scheduled; a connecting one is only marked, and reported when its
        connect answer arrives (see :meth:`open` and :meth:`fail`).
        """
        if conn.state is State.CLOSED:
            return
        was_open = conn.state is State.OPEN
        conn.close_reason, conn.close_detail = reason, detail
        if self._by_token.get(conn.token) is conn:
            del self._by_token[conn.token]
        self._unindex(conn, conn.channels)
        if conn.user is not None:
            streams = self._by_user.get(conn.user)
            if streams is not None:
                streams.discard(conn)
                if not streams:
                    del self._by_user[conn.user]
        conn.held = None
        if conn.queued:
            self.queued_bytes -= conn.queued
            self.released_bytes += conn.queued
            conn.queued = 0
            self._behind.discard(conn)
        writer = conn.detach()
        if was_open:
            self._open -= 1
            if writer is not None and reason != CloseReason.CLIENT_CLOSED:
                if reason == CloseReason.ERROR and not clean:
                    writer.abort()
                else:
                    writer.end()
        if was_open or conn.backend_may_know:
            self._report(conn)

    def _report(self, conn: Connection) -> None:
        if self.on_ended is not None:
            self.on_ended(conn)

    # -- delivery -----------------------------------------------------------------------------

    def send(self, token: str, frame: bytes | None, close: bool) -> str:
        """Deliver a send to a local token: ``"ok"``, or ``"buffered"`` while it connects.

        Raises :class:`TokenNotFound` if no live local stream holds ``token`` (or it is closing),
        :class:`~tornado_sse.errors.BufferFull` past the pending bound.
        """
        conn = self._by_token.get(token)
        if conn is None or conn.closing:
            raise TokenNotFound()
        if conn.state is State.CONNECTING:
            conn.queue(frame, close, self.max_pending_events)
            return "buffered"
        if frame is not None:
            self.write(conn, frame)
        if close:
            self.close(conn, CloseReason.SERVER_CLOSED)
        return "ok"

    def send_user(self, user: str, frame: bytes | None, close: bool, mark: SendMark) -> int:
        """Deliver a send to every local stream of ``user`` (queued for connecting ones, as
        :meth:`send` does; held for one being counted, see :meth:`catch_up`; skipped by one
        whose count gave it already, or whose connect began after it, by ``mark``); returns
        how many it reached (a stream whose queue is full is not reached, but a close still
        ends it)."""
        reached = 0
        for conn in self.of_user(user):
            if conn.user_held is not None:
                conn.user_held.append(UserSend(mark, frame, close, time.monotonic()))
                reached += 1
                continue
            if mark <= conn.user_through:
                continue  # its count gave it, or it was sent before its connect began
            try:
                self.send(conn.token, frame, close)
            except TokenNotFound:
                continue
            except BufferFull:
                if close:
                    self.send(conn.token, None, True)
                continue
            reached += 1
        return reached

    def write(self, conn: Connection, frame: bytes) -> None:
        """Write ``frame`` to an open stream; close it if it falls too far behind.

        A stream whose socket does not take its bytes is a slow consumer: past
        ``max_queued_bytes`` of unsent output it is aborted with reason ``error``, detail
        ``slow_consumer``, so its memory stays bounded by the limit plus one frame. Past
        ``max_total_queued_bytes`` for all streams together, the streams furthest behind go the
        same way (:meth:`_shed`).
        """
        self.frames_written += 1
        self.bytes_written += len(frame)
        try:
            queued = conn.write(frame)
        except StreamClosedError:
            self.close(conn, CloseReason.CLIENT_CLOSED)
            return
        except Exception as exc:  # a transport bug must not break the other streams
            log.warning("write failed", extra=fields(token=conn.token, error=repr(exc)))
            self.close(conn, CloseReason.ERROR, CloseDetail.WRITE_FAILED)
            return
        if queued or conn.queued:  # the fast path (all written, nothing was queued) skips this
            self._account(conn, queued)

    def _account(self, conn: Connection, queued: int) -> None:
        """Record what ``conn``'s unsent output costs now, and enforce both bounds."""
        self.queued_bytes += queued - conn.queued
        conn.queued = queued
        if queued:
            self._behind.add(conn)
        else:
            self._behind.discard(conn)
        if queued > self.max_queued_bytes:
            self.close(conn, CloseReason.ERROR, CloseDetail.SLOW_CONSUMER)
        elif self.queued_bytes > self.max_total_queued_bytes:
            self._shed()

    def _shed(self) -> None:
        """The total is past ``max_total_queued_bytes``: measure every stream that is behind
        (sockets drain between writes), then close the streams furthest behind as slow
        consumers until the total is under :data:`SHED_TO` of the bound."""
        total = 0
        for conn in list(self._behind):
            conn.queued = conn.measure_queued()
            if conn.queued:
                total += conn.queued
            else:
                self._behind.discard(conn)
        self.queued_bytes = total
        limit = self.max_total_queued_bytes
        if total <= limit:
            return
        target = int(limit * SHED_TO)
        closed = 0
        for conn in sorted(self._behind, key=lambda c: c.queued, reverse=True):
            if self.queued_bytes <= target:
                break
            self.close(conn, CloseReason.ERROR, CloseDetail.SLOW_CONSUMER)
            closed += 1
        log.warning(
            "unsent output over MAX_TOTAL_QUEUED_BYTES: closed the streams furthest behind",
            extra=fields(closed=closed, queued_bytes=total, limit=limit),
        )

    def publish(self, channel: str, event_id: int, frame: bytes) -> int:
        """Write channel event ``frame`` (id ``event_id``) to every open stream subscribed to
        ``channel`` (held streams keep it for :meth:`release`; a stream whose
        ``skip_through`` is at least ``event_id`` has it already); returns how many."""
        members = self._by_channel.get(channel)
        if not members:
            return 0
        targets = list(members)
        for conn in targets:
            if conn.held is not None:
                conn.held.append((event_id, frame))
            elif event_id > conn.skip_through:
                self.write(conn, frame)
        return len(targets)

    def heartbeat(self, min_age: float, now: float | None = None) -> int:
        """Write a heartbeat to every stream open for at least ``min_age`` seconds."""
        cutoff = (time.monotonic() if now is None else now) - min_age
        frame, open_ = protocol.HEARTBEAT, State.OPEN
        count = 0
        for conn in list(self._by_token.values()):
            if conn.state is open_ and conn.opened_at <= cutoff:
                self.write(conn, frame)
                count += 1
        self.heartbeats_written += count
        return count

    def close_all(
        self,
        reason: CloseReason,
        detail: CloseDetail | None = None,
        last_frame: Callable[[], bytes] | None = None,
        *,
        clean: bool = False,
    ) -> int:
        """End every stream, open streams after a frame from ``last_frame()`` (``clean`` as in
        :meth:`close`); returns how many."""
        targets = list(self._by_token.values())
        for conn in targets:
            if last_frame is not None and conn.state is State.OPEN:
                self.write(conn, last_frame())
            self.close(conn, reason, detail, clean=clean)
        return len(targets)
