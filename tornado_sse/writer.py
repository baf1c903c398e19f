"""Writing frames to one stream's socket: chunk framing, the direct-write fast path, and a
coalescing queue whose memory is counted as it really is.

:class:`SocketWriter` is the :class:`~tornado_sse.connection.StreamWriter` of a stream served by
Tornado's HTTP/1 server. It relies on two private counters of Tornado's ``IOStream``
(``_total_write_index`` and ``_total_write_done_index``: bytes queued and bytes the socket
accepted); ``tests/unit/test_writer.py`` pins them, so a Tornado upgrade that changes them fails
there first.

Why a queue of its own: each ``IOStream.write`` keeps a future and an index entry beside the
bytes (about 500 bytes of Python objects per write, measured in ``tests/unit/test_writer.py``),
so a stream that stopped reading and was fed 1 KB events held about twice its bytes. A stream
that is behind therefore hands Tornado one write at a time: frames that arrive meanwhile are
appended to one ``bytearray`` (small frames) or kept by reference (large ones, which a fan-out
shares between streams), and go to Tornado together when its previous write has drained.
"""

from __future__ import annotations

from asyncio import Future
from collections.abc import Callable

from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

#: Frames up to this size are copied into the stream's coalescing buffer while it is behind;
#: larger ones are queued by reference, so a frame a fan-out shares is stored once.
COALESCE_MAX = 16 * 1024
#: What one write handed to Tornado costs beyond its bytes: its future, index entry and view.
#: Measured at 470-830 bytes (``tests/unit/test_writer.py`` keeps it an upper bound).
WRITE_OVERHEAD = 1024


class ChunkEncoder:
    """HTTP/1.1 chunk framing of SSE frames that remembers the last frame it framed, so that a
    fan-out or a heartbeat round, which writes one shared frame to every stream, frames it once.
    """

    __slots__ = ("_frame", "_chunk")

    def __init__(self) -> None:
        self._frame = b""
        self._chunk = b""

    def __call__(self, frame: bytes) -> bytes:
        if frame is not self._frame:
            self._frame, self._chunk = frame, b"%x\r\n%b\r\n" % (len(frame), frame)
        return self._chunk


def backlog(stream: IOStream) -> int:
    """Bytes queued on ``stream`` that its socket has not accepted yet.

    Tornado has no public accessor for this; these two counters (Tornado >= 5) give it exactly.
    """
    return stream._total_write_index - stream._total_write_done_index


def is_plain(stream: IOStream) -> bool:
    """Whether ``stream`` is plain TCP (an ``IOStream`` or the gateway's subclass of it,
    ``listener.NoDelayStream``), whose socket may be written directly; never TLS."""
    return isinstance(stream, IOStream) and not isinstance(stream, SSLIOStream)


def send_direct(stream: IOStream, data: bytes) -> int:
    """Send what the socket of the plain ``stream`` (:func:`is_plain`), with nothing queued
    on it (:func:`backlog` 0), takes of ``data`` at once; the number of bytes it took. Raises
    ``StreamClosedError`` (having closed the stream) if the client is gone."""
    sock = stream.socket
    if sock is None:  # closed
        raise StreamClosedError()
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        # Without its traceback the error kept on the stream references no frame: this one
        # (which holds the error and the stream) and its callers' (a publish's list of
        # streams, ...) are freed at once instead of waiting, in a cycle, for the collector.
        exc.__traceback__ = None
        stream.close(exc_info=exc)
        raise StreamClosedError(real_error=exc) from None


def write_all(stream: IOStream, data: bytes) -> Future[None] | None:
    """Write the whole of ``data`` (an answer) to ``stream``: straight to the socket when
    nothing is queued before it on a plain TCP stream, and only what the socket did not take
    through Tornado's buffer. ``None`` when the socket took everything, else the future of
    Tornado's write of the rest. Raises ``StreamClosedError`` if the client is gone."""
    if is_plain(stream) and stream._total_write_index == stream._total_write_done_index:
        sent = send_direct(stream, data)
        if sent == len(data):
            return None
        data = data[sent:]
    return stream.write(data)


class SocketWriter:
    """Writes the frames of one open stream to its HTTP/1 connection.

    ``chunks`` frames each write as an HTTP/1.1 chunk (``None`` for HTTP/1.0, whose body ends
    with the connection); ``on_end`` is called when the stream ends, cleanly or not (the
    handler then finishes its response).

    With ``early`` (the handler's ``write``, before the response head is flushed) the frames
    written until :meth:`uncork` go to it instead, unframed: the handler sends them in one
    write with the head (Tornado frames them as the first chunk), so a stream whose first
    events are ready when it opens (sends queued during the connect, its own joins) costs the
    socket one write, not one per frame.

    While the stream is *behind* (a write handed to Tornado has not drained yet), new frames
    wait here: small ones appended to :attr:`_buffer`, large ones in :attr:`_pieces` by
    reference. :attr:`queued` is what all of it costs in memory.
    """

    __slots__ = (
        "_http",
        "_stream",
        "_chunks",
        "_direct",
        "_on_end",
        "_behind",
        "_in_flight",
        "_pieces",
        "_pieces_cost",
        "_buffer",
        "_early",
    )

    def __init__(
        self,
        http: HTTP1Connection,
        chunks: ChunkEncoder | None,
        on_end: Callable[[], None],
        early: Callable[[bytes], object] | None = None,
    ) -> None:
        self._http = http
        self._stream = http.stream
        self._chunks = chunks
        self._direct = is_plain(self._stream)  # direct socket writes, never through TLS
        self._on_end = on_end
        self._behind = False  # a write handed to Tornado has not drained yet
        self._in_flight = 0  # what that write costs until it drains
        self._pieces: list[bytes | memoryview] = []  # waiting, in order
        self._pieces_cost = 0
        self._buffer = bytearray()  # small frames waiting after the pieces
        self._early = early

    @property
    def queued(self) -> int:
        """Bytes of memory this stream's unsent output holds: the write Tornado has not sent
        yet and the frames waiting behind it, with their overheads."""
        return self._in_flight + self._pieces_cost + self._buffer.__alloc__()

    def write_frame(self, frame: bytes) -> int:
        """Write ``frame``; return :attr:`queued` (0 when the socket took it all).

        When nothing is queued before it (the usual case) the frame goes straight to the
        socket: no future, no callback, no copy into Tornado's buffer, which is what makes a
        heartbeat round or a fan-out to 10,000 streams cheap. What the socket does not take at
        once goes to the IOStream, which sends it as the socket drains; frames that come
        before it has are queued here and handed over together. Raises
        ``StreamClosedError`` if the client is gone.
        """
        if self._early is not None:
            self._early(frame)  # goes out with the head
            return 0
        stream = self._stream
        if self._chunks is not None:  # Tornado frames an HTTP/1.1 body in chunks
            frame = self._chunks(frame)
        if self._behind:
            return self._queue(frame)
        if self._direct and stream._total_write_index == stream._total_write_done_index:
            sent = send_direct(stream, frame)
            if sent == len(frame):
                return 0
            if sent:
                # A view of a large (often shared) frame instead of a copy of its rest.
                rest = memoryview(frame)[sent:] if len(frame) > COALESCE_MAX else frame[sent:]
                self._hand_over([rest], len(rest) + WRITE_OVERHEAD)
                return self._in_flight
        self._hand_over([frame], len(frame) + WRITE_OVERHEAD)
        return self._in_flight

    def uncork(self) -> None:
        """From now on write to the socket (call once the head is flushed, with the frames
        given to ``early`` in it)."""
        self._early = None

    def _queue(self, frame: bytes) -> int:
        """Keep ``frame`` until the write in flight has drained; returns :attr:`queued`."""
        if self._stream.closed():
            raise StreamClosedError()
        if len(frame) <= COALESCE_MAX:
            self._buffer += frame
        else:
            if self._buffer:
                self._close_buffer()
            self._pieces.append(frame)
            self._pieces_cost += len(frame) + WRITE_OVERHEAD
        return self.queued

    def _close_buffer(self) -> None:
        """Move the coalescing buffer to the pieces (a larger frame comes after it)."""
        self._pieces.append(memoryview(self._buffer))
        self._pieces_cost += self._buffer.__alloc__() + WRITE_OVERHEAD
        self._buffer = bytearray()

    def _hand_over(self, pieces: list[bytes | memoryview], cost: int) -> None:
        """Give ``pieces`` to the IOStream and wait for them to drain (``cost`` until then)."""
        stream = self._stream
        future: Future[None] | None = None
        for piece in pieces:
            future = stream.write(piece)  # raises StreamClosedError if the client is gone
        assert future is not None
        self._behind = True
        self._in_flight = cost
        future.add_done_callback(self._drained)

    def _drained(self, future: Future[None]) -> None:
        """The last write handed over has been sent (or the stream closed): hand over what
        waits, if anything, else go back to writing straight to the socket."""
        self._in_flight = 0
        if future.cancelled() or future.exception() is not None:
            self._drop()  # closed: the handler's close callback ends the stream
            return
        if not self._pieces and not self._buffer:
            self._behind = False
            return
        self._take_pieces()

    def _take_pieces(self) -> None:
        """Hand everything that waits to the IOStream, in order, as one batch of writes."""
        if self._buffer:
            self._close_buffer()
        pieces, cost = self._pieces, self._pieces_cost
        self._pieces, self._pieces_cost = [], 0
        try:
            self._hand_over(pieces, cost)
        except StreamClosedError:
            self._drop()

    def _drop(self) -> None:
        """Forget the unsent output (the stream is closed: Tornado drops its part too)."""
        self._pieces, self._pieces_cost, self._buffer = [], 0, bytearray()
        self._in_flight = 0

    def end(self) -> None:
        """End the response cleanly (the handler writes the last chunk), after every frame
        still queued here."""
        if self._pieces or self._buffer:
            self._take_pieces()
        self._on_end()

    def abort(self) -> None:
        """Drop the connection at once, and the unsent frames with it."""
        self._drop()
        self._http.close()
        self._on_end()
