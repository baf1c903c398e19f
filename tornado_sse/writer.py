"""Writing frames to one stream's socket: chunk framing and the direct-write fast path.

:class:`SocketWriter` is the :class:`~tornado_sse.connection.StreamWriter` of a stream served by
Tornado's HTTP/1 server. It relies on two private counters of Tornado's ``IOStream``
(``_total_write_index`` and ``_total_write_done_index``: bytes queued and bytes the socket
accepted); ``tests/unit/test_writer.py`` pins them, so a Tornado upgrade that changes them fails
there first.
"""

from __future__ import annotations

from collections.abc import Callable

from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError


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


class SocketWriter:
    """Writes the frames of one open stream to its HTTP/1 connection.

    ``chunks`` frames each write as an HTTP/1.1 chunk (``None`` for HTTP/1.0, whose body ends
    with the connection); ``on_end`` is called when the stream ends, cleanly or not (the
    handler then finishes its response).
    """

    __slots__ = ("_http", "_stream", "_chunks", "_direct", "_on_end")

    def __init__(
        self,
        http: HTTP1Connection,
        chunks: ChunkEncoder | None,
        on_end: Callable[[], None],
    ) -> None:
        self._http = http
        self._stream = http.stream
        self._chunks = chunks
        # Direct socket writes only on a plain TCP stream (not TLS, not a wrapper).
        self._direct = type(self._stream) is IOStream
        self._on_end = on_end

    def write_frame(self, frame: bytes) -> int:
        """Write ``frame``; return the bytes still waiting for the socket.

        When nothing is queued before it (the usual case) the frame goes straight to the
        socket: no future, no callback, no copy into Tornado's buffer, which is what makes a
        heartbeat round or a fan-out to 10,000 streams cheap. Whatever the socket does not take
        at once goes to the IOStream, which sends it in order as the socket drains.
        """
        stream = self._stream
        if self._chunks is not None:  # Tornado frames an HTTP/1.1 body in chunks
            frame = self._chunks(frame)
        if self._direct and stream._total_write_index == stream._total_write_done_index:
            sock = stream.socket
            if sock is None:  # closed
                raise StreamClosedError()
            try:
                sent = sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                stream.close(exc_info=exc)
                raise StreamClosedError(real_error=exc) from None
            if sent == len(frame):
                return 0
            frame = frame[sent:]
        stream.write(frame)  # raises StreamClosedError if the client is gone
        return backlog(stream)

    def end(self) -> None:
        """End the response cleanly (the handler writes the last chunk)."""
        self._on_end()

    def abort(self) -> None:
        """Drop the connection at once."""
        self._http.close()
        self._on_end()
