"""The coroutine client: :class:`AsyncGateway`, on asyncio streams with kept-alive connections.

HTTP/1.1 is spoken here directly (the standard library has no asyncio HTTP client): a request
with a ``Content-Length`` body, and an answer framed by ``Content-Length``, chunked, or the end
of the connection. That is all the internal API needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import GatewayUnavailable
from .keepalive import DEFAULT_KEEPALIVE_SECONDS, MAX_IDLE_CONNECTIONS, reusable
from .messages import (
    SEND_PATH,
    SUBSCRIBE_PATH,
    UNSUBSCRIBE_PATH,
    BatchResult,
    base_url,
    batch_results,
    connections_answer,
    connections_path,
    decode_response,
    encode_json,
    history_answer,
    history_path,
    presence_answer,
    presence_path,
    request_headers,
    send_item,
    send_status,
    streams_answer,
    subscription_body,
)

#: Largest answer read, head and body together; a bigger one is an error, not a memory hog.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Largest answer head (status line and headers).
MAX_HEAD_BYTES = 64 * 1024


class BadAnswer(Exception):
    """The bytes that came back are not an HTTP/1.x answer this client can read."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One HTTP answer: ``status``, lower-cased ``headers``, the whole ``body``, and whether the
    connection may carry another request (``reusable``)."""

    status: int
    headers: dict[str, str]
    body: bytes
    reusable: bool


def encode_request(
    method: str, target: str, host: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    """The bytes of an HTTP/1.1 request: ``Content-Length`` whenever there is a ``body``."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """Read one answer from ``reader`` (interim 1xx answers are skipped).

    Raises :class:`BadAnswer` for bytes that are not HTTP/1.x or too large, and
    ``asyncio.IncompleteReadError`` when the connection ends early.
    """
    while True:  # bounded by the bytes the peer sends: each turn reads one whole head
        version, status, headers = _parse_head(await _read_head(reader))
        if status >= 200:
            break
    keep = version == "HTTP/1.1" and "close" not in _tokens(headers.get("connection", ""))
    if status in (204, 304):
        return Answer(status, headers, b"", keep)
    if "chunked" in _tokens(headers.get("transfer-encoding", "")):
        return Answer(status, headers, await _read_chunked(reader), keep)
    length = headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit() or int(length) > MAX_ANSWER_BYTES:
            raise BadAnswer("bad Content-Length: %r" % length[:40])
        return Answer(status, headers, await reader.readexactly(int(length)), keep)
    body = bytearray()  # no framing: the body ends with the connection
    while chunk := await reader.read(65536):  # bounded by MAX_ANSWER_BYTES
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise BadAnswer("answer larger than %d bytes" % MAX_ANSWER_BYTES)
    return Answer(status, headers, bytes(body), False)


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadAnswer("answer head larger than %d bytes" % MAX_HEAD_BYTES) from None


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if version not in ("HTTP/1.0", "HTTP/1.1") or not (code.isdigit() and len(code) == 3):
        raise BadAnswer("not an HTTP answer: %r" % status_line[:80])
    headers: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadAnswer("bad header line: %r" % line[:80])
        key = name.strip().lower()
        headers[key] = headers[key] + ", " + value.strip() if key in headers else value.strip()
    return version, int(code), headers


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:  # bounded by MAX_ANSWER_BYTES
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadAnswer("bad chunk size: %r" % size_text[:20]) from None
        if size == 0:
            break
        if len(body) + size > MAX_ANSWER_BYTES:
            raise BadAnswer("answer larger than %d bytes" % MAX_ANSWER_BYTES)
        body += (await reader.readexactly(size + 2))[:-2]
    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, bounded by the head limit
        pass
    return bytes(body)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    loop: asyncio.AbstractEventLoop
    idle_since: float = 0.0

    def fileno(self) -> int:
        sock = self.writer.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def usable(self, keepalive_seconds: float) -> bool:
        return (
            self.loop is asyncio.get_running_loop()
            and not self.writer.is_closing()
            and not self.reader.at_eof()
            and reusable(self.fileno(), self.idle_since, keepalive_seconds, time.monotonic())
        )

    def abort(self) -> None:
        with contextlib.suppress(RuntimeError):  # its event loop is closed: nothing to tell
            self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self.writer.wait_closed()


class AsyncGateway:
    """The coroutine twin of :class:`~tornado_sse_client.Gateway`, standard library only.

    Same arguments, methods, results and errors. ``timeout`` bounds each call as a whole,
    connecting included. Connections are kept alive and reused by later calls on the same
    event loop while idle for less than ``keepalive_seconds``. Redirects are not followed.

    ``await close_idle()`` (or leaving an ``async with`` block) closes the idle connections,
    before the event loop ends; the client stays usable.
    """

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        timeout: float = 5.0,
        *,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = base_url(url)
        self.secret = secret
        self.timeout = timeout
        self.keepalive_seconds = keepalive_seconds
        parts = urlsplit(self.url)
        self._prefix = parts.path
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None:
            self._host_header += f":{parts.port}"
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._idle: list[_Connection] = []

    async def send(
        self,
        token: str,
        data: str,
        name: str | None = None,
        id: str | None = None,
        close: bool = False,
    ) -> str:
        """See :meth:`tornado_sse_client.Gateway.send`."""
        item = send_item(token, data=data, name=name, id=id, close=close)
        return send_status(await self._post(item))

    async def publish(
        self, channel: str, data: str, name: str | None = None, id: str | None = None
    ) -> None:
        """See :meth:`tornado_sse_client.Gateway.publish`."""
        await self._post(send_item(channel=channel, data=data, name=name, id=id))

    async def close(self, token: str) -> None:
        """See :meth:`tornado_sse_client.Gateway.close`."""
        await self._post(send_item(token, close=True))

    async def batch(self, items: list[dict[str, Any]]) -> list[BatchResult]:
        """See :meth:`tornado_sse_client.Gateway.batch`."""
        return batch_results(await self._post(items), len(items))

    async def connections(self, limit: int = 100, user: str | None = None) -> dict[str, Any]:
        """See :meth:`tornado_sse_client.Gateway.connections`."""
        return connections_answer(await self._call("GET", connections_path(limit, user), None))

    async def send_to_user(
        self,
        user: str,
        data: str | None,
        name: str | None = None,
        id: str | None = None,
        close: bool = False,
    ) -> int:
        """See :meth:`tornado_sse_client.Gateway.send_to_user`."""
        item = send_item(user=user, data=data, name=name, id=id, close=close)
        return streams_answer(await self._post(item))

    async def close_user(self, user: str) -> int:
        """See :meth:`tornado_sse_client.Gateway.close_user`."""
        return streams_answer(await self._post(send_item(user=user, close=True)))

    async def subscribe(
        self, channels: list[str], *, token: str | None = None, user: str | None = None
    ) -> int:
        """See :meth:`tornado_sse_client.Gateway.subscribe`."""
        body = encode_json(subscription_body(channels, token, user))
        return streams_answer(await self._call("POST", SUBSCRIBE_PATH, body))

    async def unsubscribe(
        self, channels: list[str], *, token: str | None = None, user: str | None = None
    ) -> int:
        """See :meth:`tornado_sse_client.Gateway.unsubscribe`."""
        body = encode_json(subscription_body(channels, token, user))
        return streams_answer(await self._call("POST", UNSUBSCRIBE_PATH, body))

    async def presence(self, channel: str) -> dict[str, Any]:
        """See :meth:`tornado_sse_client.Gateway.presence`."""
        return presence_answer(await self._call("GET", presence_path(channel), None))

    async def history(
        self, channel: str, since: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """See :meth:`tornado_sse_client.Gateway.history`."""
        return history_answer(await self._call("GET", history_path(channel, since, limit), None))

    async def close_idle(self) -> None:
        """Close this client's idle connections; it stays usable."""
        idle, self._idle = self._idle, []
        loop = asyncio.get_running_loop()
        for conn in idle:
            if conn.loop is loop:
                await conn.close()
            else:
                conn.abort()

    async def __aenter__(self) -> AsyncGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close_idle()

    async def _post(self, value: Any) -> Any:
        return await self._call("POST", SEND_PATH, encode_json(value))

    async def _call(self, method: str, path: str, body: bytes | None) -> Any:
        headers = request_headers(self.secret, json_body=body is not None)
        status, raw = await self._exchange(method, self._prefix + path, headers, body)
        return decode_response(status, raw)

    async def _exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        """Send one request and read its answer: ``(status, body)``. Raises
        :class:`~tornado_sse_client.GatewayUnavailable` when no whole answer came in time."""
        request = encode_request(method, target, self._host_header, headers, body)
        try:
            async with asyncio.timeout(self.timeout):
                conn = await self._take()
                try:
                    conn.writer.write(request)
                    await conn.writer.drain()
                    answer = await read_answer(conn.reader)
                except BaseException:
                    conn.abort()  # in an unknown state; the request is not sent again
                    raise
        except TimeoutError:
            raise GatewayUnavailable("no answer within %g s" % self.timeout) from None
        except (OSError, EOFError, asyncio.LimitOverrunError, BadAnswer) as exc:
            raise GatewayUnavailable(str(exc) or type(exc).__name__) from exc
        if answer.reusable:
            self._give_back(conn)
        else:
            await conn.close()
        return answer.status, answer.body

    async def _take(self) -> _Connection:
        while self._idle:  # bounded: each turn removes one idle connection
            conn = self._idle.pop()  # the most recently used first
            if conn.usable(self.keepalive_seconds):
                return conn
            conn.abort()
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._ssl, limit=MAX_HEAD_BYTES
        )
        return _Connection(reader, writer, asyncio.get_running_loop())

    def _give_back(self, conn: _Connection) -> None:
        if len(self._idle) < MAX_IDLE_CONNECTIONS:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.abort()
