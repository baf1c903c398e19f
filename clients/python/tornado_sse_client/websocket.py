"""The client side of a WebSocket (RFC 6455), without I/O: what the ``transport="ws"`` clients
send and how they read what comes back on the gateway's publish socket (``/internal/ws``).

Only what that socket needs: the opening handshake, text and close frames (client frames are
masked, section 5.3), pings answered with pongs, fragmented messages put back together, and a
bound on the size of a message. No extensions, no subprotocols.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

#: The GUID of RFC 6455 section 1.3, for ``Sec-WebSocket-Accept``.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

#: Close codes (section 7.4.1) a client may see.
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL_ERROR = 1000, 1001, 1002
CLOSE_UNSUPPORTED_DATA, CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG = 1003, 1008, 1009


class ProtocolError(Exception):
    """The peer broke RFC 6455 (or sent a message over the bound); the socket is unusable."""


def handshake_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_for(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def handshake_request(target: str, host: str, key: str, headers: dict[str, str]) -> bytes:
    """The bytes of the opening handshake for ``target`` on ``host`` (the ``Host`` header)."""
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_accept(headers: dict[str, str], key: str) -> None:
    """Raise :class:`ProtocolError` unless the ``101`` answer's lower-cased ``headers`` accept
    ``key`` (section 4.2.2)."""
    if headers.get("upgrade", "").lower() != "websocket":
        raise ProtocolError("the answer does not upgrade to websocket")
    if headers.get("sec-websocket-accept") != accept_for(key):
        raise ProtocolError("the answer's Sec-WebSocket-Accept is wrong")


def encode_frame(opcode: int, payload: bytes, *, mask: bool = True) -> bytes:
    """One final frame; masked with a fresh key unless ``mask`` is false (a server's)."""
    length = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 1 << 16:
        head += struct.pack("!BH", bit | 126, length)
    else:
        head += struct.pack("!BQ", bit | 127, length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(key, payload)


def encode_text(text: str) -> bytes:
    """A masked text frame holding ``text``."""
    return encode_frame(OP_TEXT, text.encode("utf-8"))


def encode_close(code: int = CLOSE_NORMAL, reason: str = "") -> bytes:
    """A masked close frame."""
    return encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:120])


def _mask(key: bytes, data: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


@dataclass(frozen=True, slots=True)
class Message:
    """A whole message: ``opcode`` (text, binary, close, ping or pong) and its payload. A
    close carries its ``code`` (``None`` when it had none) and ``reason``."""

    opcode: int
    payload: bytes
    code: int | None = None
    reason: str = ""

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")


class FrameReader:
    """Turns the bytes a server sent into whole :class:`Message` objects.

    :meth:`feed` takes any piece of the byte stream and returns the messages it completed.
    Raises :class:`ProtocolError` for a masked server frame, a bad fragment sequence, or a
    message over ``max_size`` bytes.
    """

    def __init__(self, max_size: int = 64 * 1024 * 1024) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Add ``data`` and return every message it completed, in order."""
        self._buffer += data
        out: list[Message] = []
        while True:  # bounded: each turn consumes one whole frame or stops
            frame = self._next_frame()
            if frame is None:
                return out
            message = self._assemble(*frame)
            if message is not None:
                out.append(message)

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        if buf[1] & 0x80:
            raise ProtocolError("a server's frame must not be masked")
        length, offset = buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, 2)
            offset = 10
        if length > self.max_size:
            raise ProtocolError("a message over %d bytes" % self.max_size)
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        return fin, opcode, payload

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> Message | None:
        if opcode >= OP_CLOSE:  # control frames are never fragmented
            if not fin:
                raise ProtocolError("a fragmented control frame")
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return Message(opcode, payload, code, payload[2:].decode("utf-8", "replace"))
            return Message(opcode, payload)
        if opcode == OP_CONTINUATION:
            if self._fragment_opcode is None:
                raise ProtocolError("a continuation without a first fragment")
        elif self._fragment_opcode is not None:
            raise ProtocolError("a new message inside a fragmented one")
        else:
            self._fragment_opcode = opcode
        self._fragments.append(payload)
        if sum(len(f) for f in self._fragments) > self.max_size:
            raise ProtocolError("a message over %d bytes" % self.max_size)
        if not fin:
            return None
        whole = b"".join(self._fragments)
        first = self._fragment_opcode
        self._fragments, self._fragment_opcode = [], None
        return Message(first, whole)
