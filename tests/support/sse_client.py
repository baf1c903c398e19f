"""A raw HTTP/1.1 SSE client on asyncio streams, for tests that look at bytes on the wire.

:func:`open_stream` sends a GET, reads the status and headers, and returns an
:class:`SSEStream` that de-chunks the body and parses it with the WHATWG parser. Every read is
bounded by a timeout, so a missing event fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .raw_http import Headers, read_chunk, read_head, send_request
from .sse_parser import ParsedEvent, SSEParser


class SSEStream:
    """One GET request and its response, read incrementally."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers
        self.raw = bytearray()  # de-chunked body bytes received so far
        self.parser = SSEParser()
        self.events: list[ParsedEvent] = []
        self.ended = False  # the server ended the body (or closed the connection)
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self._length = int(headers["content-length"]) if "content-length" in headers else None

    @property
    def heartbeats(self) -> int:
        return self.parser.comments.count("heartbeat")

    def json(self) -> Any:
        return json.loads(bytes(self.raw))

    async def _read_piece(self) -> bytes:
        """The next piece of body, or b"" at its end."""
        if self._chunked:
            return await read_chunk(self.reader) or b""  # a cut body ends it too
        if self._length is not None:
            remaining = self._length - len(self.raw)
            if remaining <= 0:
                return b""
            return await self.reader.read(min(remaining, 65536))
        return await self.reader.read(65536)

    async def _pump(self) -> bool:
        """Read one piece into :attr:`raw` and the parser; False at the end of the body."""
        if self.ended:
            return False
        try:
            piece = await self._read_piece()
        except (asyncio.IncompleteReadError, ConnectionError):
            piece = b""
        if not piece:
            self.ended = True
            return False
        self.raw += piece
        self.events.extend(self.parser.feed(piece))
        return True

    async def wait_until(self, predicate: Any, timeout: float = 5.0) -> None:
        """Read until ``predicate(self)`` holds; AssertionError if the body ends first."""

        async def loop() -> None:
            while not predicate(self):
                if not await self._pump():
                    assert predicate(self), "the stream ended first; got %r" % bytes(
                        self.raw[-500:]
                    )

        await asyncio.wait_for(loop(), timeout)

    async def wait_events(self, count: int, timeout: float = 5.0) -> list[ParsedEvent]:
        """Wait until ``count`` events were received in all; returns all events so far."""
        await self.wait_until(lambda s: len(s.events) >= count, timeout)
        return self.events

    async def read_to_end(self, timeout: float = 5.0) -> bytes:
        """Read until the server ends the body; returns every body byte."""

        async def loop() -> None:
            while await self._pump():
                pass

        await asyncio.wait_for(loop(), timeout)
        return bytes(self.raw)

    def close(self) -> None:
        """Leave: close the TCP connection."""
        self.writer.close()

    async def aclose(self) -> None:
        """Close the TCP connection and wait until it is closed."""
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def open_stream(
    port: int,
    path: str = "/sse/test",
    headers: Headers | None = None,
    *,
    method: str = "GET",
    host: str = "127.0.0.1",
    timeout: float = 5.0,
) -> SSEStream:
    """Send the request and read the response head. Non-2xx bodies can be read with
    :meth:`SSEStream.read_to_end`."""
    reader, writer = await send_request(port, path, headers, method=method, host=host)
    try:
        status, response_headers = await asyncio.wait_for(read_head(reader), timeout)
    except BaseException:
        writer.close()
        raise
    return SSEStream(reader, writer, status, response_headers)
