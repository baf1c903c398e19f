"""The coroutine client: :class:`AsyncGateway`, on asyncio streams with kept-alive connections.

HTTP/1.1 is spoken here directly (the standard library has no asyncio HTTP client): a request
with a ``Content-Length`` body, and an answer framed by ``Content-Length``, chunked, or the end
of the connection. That is all the internal API needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import itertools
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import websocket
from .errors import GatewayClientError, GatewayUnavailable
from .keepalive import DEFAULT_KEEPALIVE_SECONDS, MAX_IDLE_CONNECTIONS, reusable
from .messages import (
    SEND_PATH,
    SOCKET_PATH,
    SUBSCRIBE_PATH,
    UNSUBSCRIBE_PATH,
    BatchResult,
    base_url,
    batch_results,
    check_transport,
    close_error,
    connections_answer,
    connections_path,
    decode_response,
    encode_json,
    error_for,
    history_answer,
    history_path,
    presence_answer,
    presence_path,
    request_headers,
    send_item,
    send_status,
    socket_answer,
    socket_message,
    socket_url,
    streams_answer,
    subscription_body,
)
from .websocket import FrameReader, ProtocolError

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


class _Link:
    """One open WebSocket to the publish socket: text messages out and in, in order."""

    close_code: int | None = None
    close_reason: str = ""

    async def send(self, text: str) -> None:
        """Write ``text`` (the write is queued at once, in call order)."""
        raise NotImplementedError

    async def receive(self) -> str | None:
        """The next text message, or ``None`` once the socket is closed (see
        :attr:`close_code`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the socket."""
        raise NotImplementedError


class _TornadoLink(_Link):
    """A :class:`_Link` on Tornado's ``websocket_connect``."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, url: str, headers: dict[str, str], ssl_context: Any) -> _TornadoLink:
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.websocket import websocket_connect

        request = HTTPRequest(url, headers=headers, ssl_options=ssl_context)
        try:
            conn = await websocket_connect(request)
        except HTTPClientError as exc:
            if exc.code == 599 or exc.response is None:
                raise GatewayUnavailable(str(exc)) from exc
            raise error_for(exc.code, exc.response.body) from exc
        return cls(conn)

    async def send(self, text: str) -> None:
        await self._conn.write_message(text)

    async def receive(self) -> str | None:
        message = await self._conn.read_message()
        if message is None:
            self.close_code, self.close_reason = (
                self._conn.close_code,
                self._conn.close_reason or "",
            )
            return None
        if isinstance(message, bytes):
            raise ProtocolError("a binary message")
        return str(message)

    def close(self) -> None:
        self._conn.close()


class _StreamLink(_Link):
    """A :class:`_Link` on asyncio streams and :mod:`tornado_sse_client.websocket`, when
    Tornado is not installed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = FrameReader()
        self._messages: collections.deque[websocket.Message] = collections.deque()

    @classmethod
    async def open(
        cls, host: str, port: int, host_header: str, target: str, headers: dict[str, str], tls: Any
    ) -> _StreamLink:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, limit=MAX_HEAD_BYTES)
        try:
            key = websocket.handshake_key()
            writer.write(websocket.handshake_request(target, host_header, key, headers))
            answer = await _read_upgrade(reader)
            if answer.status != 101:
                raise error_for(answer.status, answer.body)
            websocket.check_accept(answer.headers, key)
        except BaseException:
            writer.transport.abort()
            raise
        return cls(reader, writer)

    async def send(self, text: str) -> None:
        self._writer.write(websocket.encode_text(text))
        await self._writer.drain()

    async def receive(self) -> str | None:
        while True:  # bounded by what the peer sends
            while self._messages:
                message = self._messages.popleft()
                if message.opcode == websocket.OP_TEXT:
                    return message.text
                if message.opcode == websocket.OP_PING:
                    self._writer.write(websocket.encode_frame(websocket.OP_PONG, message.payload))
                elif message.opcode == websocket.OP_CLOSE:
                    self.close_code, self.close_reason = message.code, message.reason
                    self.close()
                    return None
                elif message.opcode == websocket.OP_BINARY:
                    raise ProtocolError("a binary message")
            piece = await self._reader.read(65536)
            if not piece:
                return None
            self._messages.extend(self._frames.feed(piece))

    def close(self) -> None:
        if not self._writer.is_closing():
            with contextlib.suppress(RuntimeError, OSError):
                self._writer.write(websocket.encode_close())
            self._writer.close()


async def _read_upgrade(reader: asyncio.StreamReader) -> Answer:
    """The answer to an opening handshake: a ``101`` head alone, or a whole refusal."""
    version, status, headers = _parse_head(await _read_head(reader))
    if status == 101:
        return Answer(status, headers, b"", True)
    length = headers.get("content-length", "0").strip()
    size = min(int(length), MAX_HEAD_BYTES) if length.isdigit() else 0
    return Answer(status, headers, await reader.readexactly(size), False)


class _Socket:
    """The publish socket of one event loop, shared by every call on it: each call writes its
    message at once (pipelining) and the answers, which come in the order the messages went,
    are handed to the calls in that order by one reading task."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.loop = asyncio.get_running_loop()
        #: Set once the socket is unusable: the error each later call gets.
        self.broken: GatewayClientError | None = None
        self._waiting: collections.deque[asyncio.Future[str]] = collections.deque()
        self._reading = self.loop.create_task(self._read())

    async def call(self, text: str) -> str:
        """Send the message ``text``; the text of its answer."""
        if self.broken is not None:
            raise self.broken
        answer = self.loop.create_future()
        self._waiting.append(answer)
        try:
            await self.link.send(text)
        except (OSError, RuntimeError) as exc:
            self._break(GatewayUnavailable(str(exc) or type(exc).__name__))
        except GatewayClientError as exc:
            self._break(exc)
        return await answer

    async def _read(self) -> None:
        error: GatewayClientError | None = None
        try:
            while True:  # bounded by the socket's life
                text = await self.link.receive()
                if text is None:
                    break
                if not self._waiting:
                    error = GatewayUnavailable("an answer nobody asked for")
                    break
                answer = self._waiting.popleft()
                if not answer.done():  # its call may have timed out
                    answer.set_result(text)
        except (OSError, ProtocolError, EOFError, RuntimeError) as exc:
            error = GatewayUnavailable(str(exc) or type(exc).__name__)
        self._break(error or close_error(self.link.close_code, self.link.close_reason))

    def _break(self, error: GatewayClientError) -> None:
        if self.broken is None:
            self.broken = error
        self.link.close()
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(self.broken)

    def close(self) -> None:
        """Close the socket; calls still waiting fail."""
        self._break(GatewayUnavailable("the client closed its publish socket"))
        self._reading.cancel()


#: Whether Tornado is installed (its ``websocket_connect`` then carries ``transport="ws"``).
HAVE_TORNADO = importlib.util.find_spec("tornado") is not None


class AsyncGateway:
    """The coroutine twin of :class:`~tornado_sse_client.Gateway`, standard library only.

    Same arguments, methods, results and errors. ``timeout`` bounds each call as a whole,
    connecting included. With ``transport="ws"`` the sends go over one publish socket per
    event loop (on Tornado's ``websocket_connect`` when Tornado is installed, else on asyncio
    streams); concurrent calls are pipelined on it, and each gets its own answer. A send is
    never written twice: when the socket fails before its answer came, the call raises
    ``GatewayUnavailable``. Connections are kept alive and reused by later calls on the same
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
        transport: str = "http",
    ) -> None:
        self.url = base_url(url)
        self.secret = secret
        self.timeout = timeout
        self.transport = check_transport(transport)
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
        self._socket: asyncio.Future[_Socket] | None = None
        self._refs = itertools.count(1)

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
        """Close this client's idle connections and its publish socket; it stays usable."""
        opening, self._socket = self._socket, None
        if opening is not None and opening.done() and not opening.cancelled():
            if opening.exception() is None:
                opening.result().close()
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
        if self.transport == "ws":
            return await self._socket_call(value)
        return await self._call("POST", SEND_PATH, encode_json(value))

    async def _socket_call(self, value: Any) -> Any:
        """Send ``value`` over the publish socket (opened if need be) and return its answer's
        body, or raise the error it got."""
        ref = next(self._refs) if isinstance(value, dict) else None
        text = socket_message(value, ref or 0)
        try:
            async with asyncio.timeout(self.timeout):
                sock = await self._open_socket()
                answer = await sock.call(text)
        except TimeoutError:
            raise GatewayUnavailable("no answer within %g s" % self.timeout) from None
        except (OSError, EOFError, asyncio.LimitOverrunError, BadAnswer, ProtocolError) as exc:
            raise GatewayUnavailable(str(exc) or type(exc).__name__) from exc
        try:
            return socket_answer(answer, ref)
        except GatewayUnavailable:
            sock.close()  # an answer that is not one: the socket is out of step
            raise

    async def _open_socket(self) -> _Socket:
        """This event loop's publish socket, opened by the first call that needs it (the
        others wait for that one) and again after it broke."""
        loop = asyncio.get_running_loop()
        opening = self._socket
        if opening is not None and opening.get_loop() is loop:
            if not opening.done():
                return await asyncio.shield(opening)
            if not opening.cancelled() and opening.exception() is None:
                sock = opening.result()
                if sock.broken is None:
                    return sock
        opening = self._socket = loop.create_future()
        try:
            sock = _Socket(await self._connect_link())
        except BaseException as exc:
            if self._socket is opening:
                self._socket = None
            if isinstance(exc, Exception):
                opening.set_exception(exc)
                opening.exception()  # retrieved: the callers that wait get it, or nobody
            else:
                opening.cancel()
            raise
        opening.set_result(sock)
        return sock

    async def _connect_link(self) -> _Link:
        headers = request_headers(self.secret, json_body=False)
        if HAVE_TORNADO:
            return await _TornadoLink.open(socket_url(self.url), headers, self._ssl)
        return await _StreamLink.open(
            self._host,
            self._port,
            self._host_header,
            self._prefix + SOCKET_PATH,
            headers,
            self._ssl,
        )

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
