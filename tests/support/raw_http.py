"""The HTTP/1.1 framing shared by the raw test clients (:mod:`.sse_client`, :mod:`.internal`).

They speak HTTP over plain asyncio streams so that a test sees and controls every byte: these
helpers write a request head and read a response head and the chunks of a chunked body. None of
them waits without bound on its own; callers put their reads under a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

#: Request headers as the tests give them: a dict, or a list of pairs (to repeat a name).
Headers = dict[str, str] | list[tuple[str, str]]


def request_head(
    method: str, path: str, host: str, port: int, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The bytes of a request head: ``method path HTTP/1.1``, ``Host: host:port``, then
    ``headers`` exactly as given and in order, then the blank line; encoded as Latin-1."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s:%d" % (host, port)]
    lines += ["%s: %s" % (name, value) for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def send_request(
    port: int,
    path: str,
    headers: Headers | None = None,
    *,
    method: str = "GET",
    host: str = "127.0.0.1",
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``host:port``, send a ``method`` request for ``path`` (no body) and return at
    once, without waiting for the answer.

    For tests where the client leaves before the gateway has answered; :func:`read_head` reads
    the answer of the others.
    """
    reader, writer = await asyncio.open_connection(host, port)
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    writer.write(request_head(method, path, host, port, pairs))
    await writer.drain()
    return reader, writer


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read a response's status line and headers: (status code, headers by lower-cased name).

    AssertionError if the server closes the connection before the status line.
    """
    status_line = await reader.readline()
    assert status_line, "the server closed the connection without answering"
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes | None:
    """Read the next chunk of a chunked body and return its data.

    ``b""`` for the terminating zero-size chunk followed by the empty trailer: the body ended
    cleanly. ``None`` if the body was cut instead: the connection closed first, or a chunk or the
    trailer was not ended by CRLF. A size line that is not hexadecimal raises ValueError.
    """
    try:
        size_line = await reader.readline()
        if not size_line.endswith(b"\n"):
            return None  # EOF in the middle of (or instead of) a chunk header
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            return b"" if await reader.readline() == b"\r\n" else None
        data = await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            return None
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return data
