"""Clients of the publish socket (``GET /internal/ws``) for tests.

:func:`connect` opens it with Tornado's own WebSocket client; :class:`RawSocket` speaks RFC 6455
over a plain asyncio socket (with :mod:`tornado_sse_client.websocket`), so that a test controls
every byte: binary frames, a client that never reads, the close code the gateway sent.
:func:`handshake` sends an opening handshake and reads a refusal whole. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

from tornado_sse_client import websocket

from .internal import RawResponse, read_response
from .raw_http import read_head

PATH = "/internal/ws"


async def connect(port: int, secret: str | None = None) -> WebSocketClientConnection:
    """Open the publish socket on ``port`` (with the bearer ``secret``, if given)."""
    headers = {"Authorization": "Bearer " + secret} if secret else {}
    from tornado.httpclient import HTTPRequest

    request = HTTPRequest("ws://127.0.0.1:%d%s" % (port, PATH), headers=headers)
    return await asyncio.wait_for(websocket_connect(request), 5)


async def exchange(conn: WebSocketClientConnection, message: Any) -> dict[str, Any]:
    """Send ``message`` as JSON text and return the decoded answer."""
    await conn.write_message(json.dumps(message))
    text = await asyncio.wait_for(conn.read_message(), 5)
    assert isinstance(text, str), text
    answer = json.loads(text)
    assert set(answer) == {"ref", "status", "body"}, answer
    return dict(answer)


def upgrade_headers(**extra: str) -> dict[str, str]:
    """The headers of a valid opening handshake, and ``extra`` (``_`` in names as ``-``)."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": websocket.handshake_key(),
        "Sec-WebSocket-Version": "13",
    }
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return headers


async def handshake(port: int, headers: dict[str, str], path: str = PATH) -> RawResponse:
    """Send a ``GET path`` with exactly ``headers`` (plus ``Host``) and read the answer whole;
    for refusals (a ``101`` has no end: use :class:`RawSocket`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port]
        lines += ["%s: %s" % item for item in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return await asyncio.wait_for(read_response(reader), 5)
    finally:
        writer.close()


class RawSocket:
    """A publish socket spoken byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames = websocket.FrameReader()
        self.messages: list[websocket.Message] = []

    @classmethod
    async def open(
        cls,
        port: int,
        secret: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
    ) -> RawSocket:
        """Connect and upgrade (it must be accepted), with the bearer ``secret`` and
        ``headers``. ``receive_buffer`` sets ``SO_RCVBUF`` before connecting, for a client
        that stops reading early."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), 5)
        reader, writer = await asyncio.open_connection(sock=sock)
        key = websocket.handshake_key()
        extra = {"Authorization": "Bearer " + secret} if secret else {}
        extra.update(headers or {})
        writer.write(websocket.handshake_request(PATH, "127.0.0.1:%d" % port, key, extra))
        status, answer_headers = await asyncio.wait_for(read_head(reader), 5)
        assert status == 101, status
        websocket.check_accept(answer_headers, key)
        return cls(reader, writer)

    async def send_text(self, text: str) -> None:
        self.writer.write(websocket.encode_text(text))
        await asyncio.wait_for(self.writer.drain(), 10)

    async def send_frame(self, opcode: int, payload: bytes) -> None:
        self.writer.write(websocket.encode_frame(opcode, payload))
        await asyncio.wait_for(self.writer.drain(), 10)

    async def send_frames(self, frames: list[tuple[int, bytes]]) -> None:
        """Write the frames ``(opcode, payload)`` in one write, as a pipelining backend does."""
        self.writer.write(b"".join(websocket.encode_frame(op, data) for op, data in frames))
        await asyncio.wait_for(self.writer.drain(), 10)

    async def receive(self, timeout: float = 5.0) -> websocket.Message | None:
        """The next message (a close frame included), or ``None`` when the connection ends."""

        async def loop() -> websocket.Message | None:
            while not self.messages:
                piece = await self.reader.read(65536)
                if not piece:
                    return None
                self.messages.extend(self.frames.feed(piece))
            return self.messages.pop(0)

        return await asyncio.wait_for(loop(), timeout)

    async def close_frame(self, timeout: float = 10.0) -> websocket.Message | None:
        """Read until the gateway's close frame (returned) or the end of the connection
        (``None``), skipping the answers before it."""

        async def loop() -> websocket.Message | None:
            while True:
                try:
                    message = await self.receive(timeout)
                except ConnectionError:
                    return None
                if message is None or message.opcode == websocket.OP_CLOSE:
                    return message

        return await asyncio.wait_for(loop(), timeout)

    def close(self) -> None:
        self.writer.close()
