"""One stream: its token, the request captured at connect, its state and its bounded output.

A :class:`Connection` knows nothing of HTTP. It writes frames (already-encoded bytes) through a
:class:`StreamWriter`, which knows what its unsent output costs in memory; past
``max_queued_bytes`` (or when all streams together pass ``max_total_queued_bytes``) the registry
closes it as a slow consumer instead of buffering without bound.
"""

from __future__ import annotations

import enum
import time
from typing import Protocol

from .errors import BufferFull, CloseDetail, CloseReason
from .protocol import Info, RequestSnapshot
from .user_sends import NO_MARK, SendMark, UserSend


class StreamWriter(Protocol):
    """The transport of one open stream (in production, the stream's request handler)."""

    def write_frame(self, frame: bytes) -> int:
        """Queue ``frame`` on the socket without waiting; return :attr:`queued` after it.
        Raises ``StreamClosedError`` if the client is gone."""

    @property
    def queued(self) -> int:
        """Bytes of memory held by output written but not yet accepted by the socket, with
        whatever it costs beyond the bytes themselves; 0 when nothing waits."""

    def end(self) -> None:
        """End the response cleanly (the client sees the stream end and may reconnect)."""

    def abort(self) -> None:
        """Drop the TCP connection at once, discarding unsent bytes."""


class State(enum.Enum):
    CONNECTING = "connecting"  # the connect callback is in flight; sends are queued
    OPEN = "open"  # headers are flushed; frames go straight to the writer
    CLOSED = "closed"  # ended for good; the close reason is set


class Connection:
    """One SSE stream from the moment its connect callback starts until it ends.

    ``request`` is the snapshot captured at connect, sent whole in every callback for this token.
    ``close_reason`` is set exactly once, by the first cause that ends the stream.
    """

    __slots__ = (
        "token",
        "request",
        "channels",
        "expires_at",
        "connected_at",
        "began",
        "opened_at",
        "state",
        "close_reason",
        "close_detail",
        "backend_may_know",
        "subscribed",
        "user",
        "info",
        "counted",
        "channel_changes",
        "held",
        "joins",
        "skip_through",
        "user_held",
        "user_through",
        "queued",
        "_pending",
        "_pending_close",
        "_writer",
    )

    def __init__(self, token: str, request: RequestSnapshot) -> None:
        self.token = token
        self.request = request
        self.channels: tuple[str, ...] = ()
        #: Set (Unix seconds) for a stream authorised by a JWT instead of a connect callback:
        #: it ends then.
        self.expires_at: float | None = None
        self.connected_at = time.time()
        self.began = time.monotonic()  # the connect began (its user's sends since reach it)
        self.opened_at = 0.0  # monotonic time the stream opened
        self.state = State.CONNECTING
        self.close_reason: CloseReason | None = None
        self.close_detail: CloseDetail | None = None
        self.backend_may_know = False
        #: Whether the broker counts this stream on its channels (undone when it ends).
        self.subscribed = False
        #: The user this stream belongs to (``None``: anonymous) and the info shown beside
        #: them in presence, from the connect answer or the JWT.
        self.user: str | None = None
        self.info: Info | None = None
        #: The channels presence counts this stream on (and its user's stream count), or
        #: ``None`` while it is not counted; undone when it ends.
        self.counted: tuple[str, ...] | None = None
        #: Live subscription changes that arrived before the connect answer (applied to the
        #: channels it names) or while the stream was then counted and subscribed (applied
        #: after that), in order: ``(add, channels)``; ``None`` once the connect is settled.
        self.channel_changes: list[tuple[bool, tuple[str, ...]]] | None = []
        #: While a replay is fetched: the live channel events that arrived meanwhile, as
        #: ``(id, frame)``; ``None`` when live events are written straight away.
        self.held: list[tuple[int, bytes]] | None = None
        #: The ``presence_join`` events of this stream's user that its count published, as
        #: ``(id, frame)``: the stream gets them first (it opens after they were published).
        self.joins: tuple[tuple[int, bytes], ...] = ()
        #: Channel events with ids up to this one are not written to the stream: it got them
        #: first (its own joins), or they were published before it opened.
        self.skip_through = 0
        #: From the connect answer naming the stream's user until its count gave the user's
        #: sends logged since the connect began: the user sends delivered to it meanwhile
        #: (see :mod:`~tornado_sse.user_sends`); ``None`` otherwise.
        self.user_held: list[UserSend] | None = None
        #: The last mark of its user's sends that the count gave: a user send marked at most
        #: this one was given then (or was sent before the connect), and is skipped.
        self.user_through: SendMark = NO_MARK
        #: What the stream's unsent output cost when it was last measured (kept by the
        #: registry, which sums it over all streams).
        self.queued = 0
        #: The sends queued while connecting, as ``(made at, frame)``, in the order made.
        self._pending: list[tuple[float, bytes]] = []
        #: When the close queued while connecting was made (``None``: none is).
        self._pending_close: float | None = None
        self._writer: StreamWriter | None = None

    def __repr__(self) -> str:
        return "<Connection %s %s>" % (self.token, self.state.value)

    # -- while connecting -------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once a close is queued or done: the token no longer takes sends."""
        return self._pending_close is not None or self.state is State.CLOSED

    def queue(self, frame: bytes | None, close: bool, limit: int, at: float | None = None) -> None:
        """Queue a send made during the connect callback, at most ``limit`` frames, in the
        order the sends were made: ``at`` is when (``time.monotonic``; ``None``: now), and one
        made before sends queued already goes before them, after those made at the same time.

        ``frame`` ``None`` queues nothing but may still queue the close. The close ends the
        stream after every frame queued (each was accepted), so a send made after a queued
        close is left out. Raises :class:`BufferFull` when ``limit`` frames are already queued.
        """
        if at is None:
            at = time.monotonic()
        if self._pending_close is not None and at >= self._pending_close:
            return
        pending = self._pending
        if frame is not None:
            if len(pending) >= limit:
                raise BufferFull("%d events are already queued for this connecting stream" % limit)
            place = len(pending)
            while place and pending[place - 1][0] > at:
                place -= 1
            pending.insert(place, (at, frame))
        if close:
            self._pending_close = at

    def take_pending(self) -> tuple[list[bytes], bool]:
        """The frames queued while connecting, in order, and whether a close was queued;
        clears both."""
        frames, close = [f for _, f in self._pending], self._pending_close is not None
        self._pending, self._pending_close = [], None
        return frames, close

    # -- while open ---------------------------------------------------------------------------

    def attach(self, writer: StreamWriter) -> None:
        """Mark the stream open on ``writer``."""
        self._writer = writer
        self.state = State.OPEN
        self.opened_at = time.monotonic()

    def write(self, frame: bytes) -> int:
        """Write ``frame`` to an open stream; returns what its unsent output now costs."""
        writer = self._writer
        if writer is None:
            return 0
        return writer.write_frame(frame)

    def measure_queued(self) -> int:
        """What the stream's unsent output costs now (the socket may have drained some since
        the last write)."""
        writer = self._writer
        return 0 if writer is None else writer.queued

    def detach(self) -> StreamWriter | None:
        """Mark the stream closed and return its writer (``None`` if it never opened)."""
        writer = self._writer
        self._writer = None
        self.state = State.CLOSED
        self._pending = []
        return writer
