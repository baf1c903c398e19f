"""Raw HTTP/1.1 on asyncio: SSE streams as protocols, keep-alive request connections, and the
publish socket.

Kept minimal on purpose: the load generator must cost far less CPU per event than the server
under test, so there is no HTTP library in the way.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from tornado_sse_client import websocket

perf = time.perf_counter


class Sink:
    """Counts events across many streams and wakes a waiter when a count is reached."""

    __slots__ = ("count", "_target", "_future")

    def __init__(self) -> None:
        self.count = 0
        self._target = 0
        self._future: asyncio.Future[None] | None = None

    def hit(self) -> None:
        self.count += 1
        fut = self._future
        if fut is not None and self.count >= self._target and not fut.done():
            fut.set_result(None)

    async def wait_for(self, target: int, timeout: float) -> bool:
        """Wait until ``count >= target``; False on timeout."""
        if self.count >= target:
            return True
        self._target = target
        self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._future = None


class SSEStream(asyncio.Protocol):
    """One event stream: sends the GET, parses the head, de-chunks, splits SSE blocks.

    Every block that carries a ``data:`` line is an event, handed to :meth:`event`: by default
    its data is parsed as an integer (-1 if it is not one) and recorded with the time it
    arrived when ``record`` is set. Blocks without data (comments such as heartbeats) are
    counted in ``comments``.

    ``finished`` resolves when the connection is lost (``lost``; ``error`` is the exception,
    if one closed it) or the server ended a chunked body (``ended``), whichever comes first.
    """

    def __init__(self, request: bytes, sink: Sink | None = None, record: bool = True) -> None:
        self.request = request
        self.sink = sink
        self.record = record
        self.status = 0
        self.t_start = perf()
        self.t_open = 0.0
        self.opened: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.events: list[int] = []
        self.times: list[float] = []
        self.nevents = 0
        self.comments = 0
        self.lost = False
        self.ended = False
        self.error: Exception | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = bytearray()
        self._in_body = False
        self._chunked = False
        self._cbuf = bytearray()
        self._chunk_left = 0
        self._need_crlf = False
        self._sse = bytearray()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        if not self.opened.done():
            self.opened.set_result(self.status or -1)
        if not self.finished.done():
            self.finished.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            self._body(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._head[:end]).lower()
        rest = bytes(self._head[end + 4 :])
        self._head = bytearray()
        try:
            self.status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            self.status = -1
        if self.status != 200:
            if not self.opened.done():
                self.opened.set_result(self.status)
            if self.transport is not None:
                self.transport.close()
            return
        self._chunked = b"transfer-encoding: chunked" in head
        self._in_body = True
        self.t_open = perf()
        if not self.opened.done():
            self.opened.set_result(200)
        if rest:
            self._body(rest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- body ----------------------------------------------------------------------------------

    def _body(self, data: bytes) -> None:
        now = perf()
        if self._chunked:
            data = self._dechunk(data)
            if not data:
                return
        buf = self._sse
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            self._block(bytes(buf[start:end]), now)
            start = end + 2
        if start:
            del buf[:start]

    def _block(self, block: bytes, now: float) -> None:
        if b"data:" not in block:
            self.comments += 1  # a comment (": heartbeat") or a block without data
            return
        self.nevents += 1
        self.event(block, now)

    def event(self, block: bytes, now: float) -> None:
        """One block with a ``data:`` line (without the blank line that ended it), arrived at
        ``now``: records its integer data and counts it in ``sink``. Subclasses that need more
        than an integer payload override this (see :func:`parse_event`)."""
        start = block.find(b"data:") + 5
        if block[start : start + 1] == b" ":
            start += 1
        j = block.find(b"\n", start)
        raw = block[start:j] if j >= 0 else block[start:]
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if self.record:
            self.events.append(value)
            self.times.append(now)
        if self.sink is not None:
            self.sink.hit()

    def _dechunk(self, data: bytes) -> bytes:
        if self.ended:
            return b""  # the body is over: what follows its last chunk is not part of it
        cbuf = self._cbuf
        cbuf += data
        out = bytearray()
        while cbuf:
            if self._chunk_left:
                take = min(self._chunk_left, len(cbuf))
                out += cbuf[:take]
                del cbuf[:take]
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._need_crlf = True
                continue
            if self._need_crlf:
                if len(cbuf) < 2:
                    break
                del cbuf[:2]
                self._need_crlf = False
                continue
            eol = cbuf.find(b"\r\n")
            if eol < 0:
                break
            size = int(bytes(cbuf[:eol]).split(b";")[0], 16)
            del cbuf[: eol + 2]
            if size == 0:
                self.ended = True
                if not self.finished.done():
                    self.finished.set_result(None)
                break
            self._chunk_left = size
        return bytes(out)


def parse_event(block: bytes) -> tuple[str, str, str | None] | None:
    """``(name, data, id)`` of one SSE block (without its final blank line), or None when it
    has no ``data:`` line. ``name`` is ``message`` unless an ``event:`` line names it; several
    ``data:`` lines are joined with newlines; comment lines (``:`` first) are skipped."""
    name, event_id, lines = "message", None, []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:
            continue
        key, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if key == b"data":
            lines.append(value)
        elif key == b"event":
            name = value.decode()
        elif key == b"id":
            event_id = value.decode()
    if not lines:
        return None
    return name, b"\n".join(lines).decode(), event_id


def stream_request(host: str, port: int, path: str) -> bytes:
    """The GET request of an EventSource, as a browser would send it (minus cookies)."""
    return (
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nUser-Agent: tornado-sse-bench\r\n\r\n" % (path, host, port)
    ).encode()


async def open_stream(
    host: str, port: int, path: str, sink: Sink | None = None, record: bool = True
) -> SSEStream:
    """Open one stream and wait for its head; ``stream.status`` says how it went."""
    loop = asyncio.get_running_loop()
    request = stream_request(host, port, path)
    try:
        _, proto = await loop.create_connection(
            lambda: SSEStream(request, sink, record), host, port
        )
    except OSError:
        dead = SSEStream(request, sink, record)
        dead.status = -2
        dead.opened.set_result(-2)
        return dead
    await proto.opened
    return proto


async def open_streams(
    host: str,
    port: int,
    paths: list[str],
    concurrency: int,
    sink: Sink | None = None,
    record: bool = True,
    deadline: float | None = None,
) -> list[SSEStream]:
    """Open a stream per path, at most ``concurrency`` connects in flight at once."""
    streams: list[SSEStream | None] = [None] * len(paths)
    index = 0

    async def worker() -> None:
        nonlocal index
        while index < len(paths):
            if deadline is not None and perf() > deadline:
                return
            i = index
            index += 1
            streams[i] = await open_stream(host, port, paths[i], sink, record)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(paths)))))
    return [s for s in streams if s is not None]


class HTTPConnection:
    """One keep-alive HTTP/1.1 client connection, one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._host_header = ("Host: %s:%d\r\n" % (host, port)).encode()

    async def connect(self) -> HTTPConnection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: bytes = b"application/json",
        on_sent: Callable[[], None] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request and read its answer: (status, body)."""
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        head = b"%s %s HTTP/1.1\r\n" % (method.encode(), path.encode()) + self._host_header
        if body or method == "POST":
            head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
        self._writer.write(head + b"\r\n" + body)
        if on_sent is not None:
            on_sent()
        raw = await self._reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        lower = raw.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.find(b"\r\n", i + 2)
            length = int(lower[i + 17 : j])
            data = await self._reader.readexactly(length) if length else b""
        elif b"transfer-encoding: chunked" in lower:
            parts = []
            while True:
                line = await self._reader.readuntil(b"\r\n")
                size = int(line.split(b";")[0], 16)
                chunk = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            data = b"".join(parts)
        else:
            data = b""
        if b"\r\nconnection: close" in lower:
            self.close()
            self._writer = None
        return status, data


class WSConnection:
    """One publish socket (``/internal/ws``): text messages written without waiting, answers
    read in order. Framing by :mod:`tornado_sse_client.websocket` (client frames masked)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._frames = websocket.FrameReader()
        self._answers: collections.deque[bytes] = collections.deque()

    async def connect(self, path: str = "/internal/ws") -> WSConnection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        key = websocket.handshake_key()
        host = "%s:%d" % (self.host, self.port)
        writer.write(websocket.handshake_request(path, host, key, {}))
        head = await reader.readuntil(b"\r\n\r\n")
        if head[9:12] != b"101":
            writer.close()
            raise RuntimeError("the publish socket answered %r" % head[:40])
        self._reader, self._writer = reader, writer
        return self

    def send(self, text: bytes) -> None:
        """Write one text message (UTF-8 bytes); it leaves as the socket takes it."""
        assert self._writer is not None
        self._writer.write(websocket.encode_frame(websocket.OP_TEXT, text))

    async def drain(self) -> None:
        assert self._writer is not None
        await self._writer.drain()

    async def receive(self) -> bytes:
        """The payload of the next text message; ``ConnectionError`` once the socket ends."""
        assert self._reader is not None
        while not self._answers:
            piece = await self._reader.read(262144)
            if not piece:
                raise ConnectionError("the publish socket ended")
            for message in self._frames.feed(piece):
                if message.opcode == websocket.OP_TEXT:
                    self._answers.append(message.payload)
                elif message.opcode == websocket.OP_CLOSE:
                    raise ConnectionError("the publish socket was closed (%s)" % message.code)
        return self._answers.popleft()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def get_json(host: str, port: int, path: str) -> object:
    """One GET on a fresh connection, decoded as JSON."""
    import json

    conn = HTTPConnection(host, port)
    try:
        status, data = await conn.request("GET", path)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError("GET %s answered %d" % (path, status))
    return json.loads(data)
