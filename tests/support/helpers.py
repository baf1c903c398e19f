"""Small helpers for the stream-endpoint integration tests (PROTOCOL.md sections 1-3).

They check shapes the contract fixes (JSON errors, UUID4 tokens, a clean end of a chunked
body), read metrics, and provide the few network tricks the tests need (a closed port, a request
sent without waiting for its answer, a client that never reads, a request that is never
finished). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from typing import Any, Protocol

from tornado.httpclient import AsyncHTTPClient
from tornado.netutil import bind_sockets

from .backend import Callback, FakeBackend
from .raw_http import Headers, read_chunk
from .sse_client import SSEStream


def is_uuid4(text: object) -> bool:
    """Whether ``text`` is a UUID4 in its canonical lower-case, hyphenated string form."""
    if not isinstance(text, str):
        return False
    try:
        value = uuid.UUID(text)
    except ValueError:
        return False
    return value.version == 4 and str(value) == text


async def assert_json_error(
    stream: SSEStream, status: int, code: str, *, cors: bool = True
) -> dict[str, Any]:
    """Read ``stream``'s body and check it is the contract's JSON error ``code`` with ``status``.

    The body must be exactly ``{"error": {"code": code, "message": <non-empty str>}}`` with
    ``Content-Type: application/json``. With ``cors`` (errors of the stream endpoint, default
    ``CORS_ORIGINS=*``) it must also carry ``Access-Control-Allow-Origin: *``. Returns the body.
    """
    # Check the status first: a stream accepted by mistake would never end.
    assert stream.status == status, (stream.status, stream.headers)
    raw = await stream.read_to_end()
    content_type = stream.headers.get("content-type", "")
    assert content_type.split(";")[0].strip().lower() == "application/json", (content_type, raw)
    body = json.loads(raw)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"].strip(), body
    if cors:
        assert stream.headers.get("access-control-allow-origin") == "*", stream.headers
    return body


def listen_also_on(backend: FakeBackend, port: int) -> None:
    """Make ``backend`` also accept callbacks on ``port`` of 127.0.0.1 (e.g. a port that was
    closed a moment ago), so a gateway configured with that port reaches it from now on."""
    sockets = bind_sockets(port, "127.0.0.1")
    backend._server.add_sockets(sockets)  # the fake exposes no public way to add a listener


async def read_to_clean_end(stream: SSEStream, timeout: float = 5.0) -> bool:
    """Read the rest of a chunked body into ``stream`` (``raw``, ``events``); True if it ended
    with the terminating zero-size chunk, False if the connection was cut instead.

    :meth:`SSEStream.read_to_end` treats both the same; the contract's clean end (a browser sees
    the stream end and reconnects) is the terminating chunk.
    """
    assert stream.headers.get("transfer-encoding", "").lower() == "chunked", stream.headers

    async def loop() -> bool:
        while True:
            data = await read_chunk(stream.reader)
            if data is None:
                return False
            if not data:
                return True
            stream.raw += data
            stream.events.extend(stream.parser.feed(data))

    try:
        return await asyncio.wait_for(loop(), timeout)
    finally:
        stream.ended = True


def connects_for(backend: FakeBackend, url: str) -> list[Callback]:
    """The connect callbacks recorded for the request target ``url``."""
    return [c for c in backend.of("connect") if c.body["request"]["url"] == url]


class OpensStreams(Protocol):
    """A gateway under test: the ``gateway`` fixture's, or one in a process of its own."""

    async def stream(self, path: str, headers: Headers | None = None) -> SSEStream:
        """Open a stream on ``path`` (any status)."""
        ...


async def open_with_token(
    gw: OpensStreams,
    backend: FakeBackend,
    path: str = "/sse/test",
    headers: Headers | None = None,
) -> tuple[SSEStream, str]:
    """Open a stream on ``gw``; return it and its token, read from the connect callback
    ``backend`` recorded for it.

    The stream must be accepted (200), and streams must be opened one at a time: the token is
    that of the first connect callback recorded after the call, which must be for ``path``.
    """
    before = len(backend.of("connect"))
    stream = await gw.stream(path, headers)
    assert stream.status == 200, (stream.status, await stream.read_to_end())
    calls = await backend.wait_for_calls("connect", count=before + 1)
    connect = calls[before]
    assert connect.body["request"]["url"] == path, (path, connect.body)
    return stream, connect.token


async def open_and_close_another(gw: OpensStreams, backend: FakeBackend, path: str) -> Callback:
    """Open an accepted stream on ``path``, leave, and wait for its disconnect callback.

    Proves an absence: a disconnect the gateway would have sent for an earlier stream was
    scheduled before this one's and has had its chance to arrive. No other stream may be opening
    meanwhile, and ``backend`` must accept this one. Returns the disconnect callback received.
    """
    stream, token = await open_with_token(gw, backend, path)
    await stream.aclose()
    (disconnect,) = await backend.wait_for_calls("disconnect", token=token)
    return disconnect


async def silent_client(port: int, path: str, timeout: float = 5.0) -> socket.socket:
    """A client that sends its request and then never reads (tiny receive buffer). Connects
    without blocking the loop, so a gateway on the same loop can accept meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
        request = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()
        await asyncio.wait_for(loop.sock_sendall(sock, request), timeout)
    except BaseException:
        sock.close()
        raise
    return sock


async def unfinished_request(
    port: int, head: bytes, timeout: float = 5.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and send ``head`` (any bytes: a partial head, or a head whose declared body
    never follows), and nothing more."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    if head:
        writer.write(head)
        await writer.drain()
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Wait until the server closes the connection; returns what it sent before (often
    nothing). Raises ``TimeoutError`` if it is still open after ``timeout`` seconds."""

    async def loop() -> bytes:
        received = b""
        while True:
            try:
                piece = await reader.read(65536)
            except ConnectionError:
                return received
            if not piece:
                return received
            received += piece

    return await asyncio.wait_for(loop(), timeout)


async def open_count(base_url: str) -> int:
    """How many streams the gateway at ``base_url`` holds open (``/internal/connections``)."""
    response = await AsyncHTTPClient().fetch(
        base_url + "/internal/connections?limit=0", request_timeout=5
    )
    return int(json.loads(response.body)["count"])


async def wait_for_open_count(base_url: str, count: int, timeout: float = 20.0) -> None:
    """Poll until ``count`` streams are open: the connect answers were sent, and the streams
    open as the gateway reads them (it has no event to await for that)."""
    deadline = time.monotonic() + timeout
    while await open_count(base_url) != count:
        assert time.monotonic() < deadline, "the open streams never reached %d" % count
        await asyncio.sleep(0.05)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 if absent."""
    wanted = ",".join('%s="%s"' % item for item in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, label_text = metric.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if base == name and got == wanted:
            return float(value)
    return 0.0


async def read_metric(base_url: str, name: str, **labels: str) -> float:
    """Scrape ``base_url``/metrics and return one sample (0 if absent)."""
    response = await AsyncHTTPClient().fetch(base_url + "/metrics", request_timeout=5)
    return sample(response.body.decode(), name, **labels)


async def wait_for_metric(
    base_url: str, name: str, predicate: Any, timeout: float = 5.0, **labels: str
) -> float:
    """Scrape until ``predicate(value)`` holds (every 20 ms, at most ``timeout`` seconds);
    returns the value. The gateway has no event to await for a gauge, so this polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read_metric(base_url, name, **labels)
        if predicate(value):
            return value
        assert time.monotonic() < deadline, "%s stayed at %s" % (name, value)
        await asyncio.sleep(0.02)


async def open_accepted(gateway: Any, conn: Any, writer: Any) -> None:
    """Open an accepted stream the way the stream handler does: ``Gateway.open``, then its
    replay when it returns one."""
    replay = gateway.open(conn, writer)
    if replay is not None:
        await replay
