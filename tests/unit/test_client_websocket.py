"""tornado_sse_client.websocket: the client side of RFC 6455, byte by byte, without sockets."""

from __future__ import annotations

import struct

import pytest

from tornado_sse_client import websocket
from tornado_sse_client.websocket import FrameReader, ProtocolError


def unmask(frame: bytes) -> tuple[int, bytes]:
    """The opcode and payload of one masked client frame (checking its framing)."""
    assert frame[0] & 0x80, "FIN"
    assert frame[1] & 0x80, "a client frame must be masked"
    length, offset = frame[1] & 0x7F, 2
    if length == 126:
        (length,) = struct.unpack_from("!H", frame, 2)
        offset = 4
    elif length == 127:
        (length,) = struct.unpack_from("!Q", frame, 2)
        offset = 10
    key, payload = frame[offset : offset + 4], frame[offset + 4 :]
    assert len(payload) == length
    return frame[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_accept_is_the_rfc_6455_example():
    assert websocket.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frames_are_masked_and_carry_the_length_in_the_shortest_form(size):
    text = "é" * (size // 2) + "a" * (size % 2)
    frame = websocket.encode_text(text)
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(frame) == header + 4 + size
    assert unmask(frame) == (websocket.OP_TEXT, text.encode())


def test_two_frames_with_the_same_payload_have_different_masks():
    assert websocket.encode_text("same") != websocket.encode_text("same")


def test_close_frame_carries_the_code_and_reason():
    assert unmask(websocket.encode_close(1000, "bye")) == (0x8, b"\x03\xe8bye")


def test_handshake_request_names_the_version_and_key():
    raw = websocket.handshake_request("/internal/ws", "h:1", "k==", {"Authorization": "Bearer s"})
    assert raw == (
        b"GET /internal/ws HTTP/1.1\r\nHost: h:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: k==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer s\r\n\r\n"
    )


def test_check_accept_refuses_a_wrong_accept():
    key = websocket.handshake_key()
    websocket.check_accept(
        {"upgrade": "websocket", "sec-websocket-accept": websocket.accept_for(key)}, key
    )
    with pytest.raises(ProtocolError):
        websocket.check_accept({"upgrade": "websocket", "sec-websocket-accept": "nope"}, key)


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    frame = websocket.encode_frame(opcode, payload, mask=False)
    return frame if fin else bytes([frame[0] & 0x7F]) + frame[1:]


def test_reader_returns_messages_fed_byte_by_byte():
    data = (
        server_frame(0x1, b"one") + server_frame(0x1, b"x" * 300) + server_frame(0x8, b"\x03\xe9go")
    )
    reader = FrameReader()
    messages = []
    for i in range(len(data)):
        messages += reader.feed(data[i : i + 1])
    assert [(m.opcode, m.payload) for m in messages[:2]] == [(0x1, b"one"), (0x1, b"x" * 300)]
    assert (messages[2].opcode, messages[2].code, messages[2].reason) == (0x8, 1001, "go")


def test_reader_joins_fragments_around_a_ping():
    data = server_frame(0x1, b"he", fin=False) + server_frame(0x9, b"p") + server_frame(0x0, b"llo")
    messages = FrameReader().feed(data)
    assert [(m.opcode, m.payload) for m in messages] == [(0x9, b"p"), (0x1, b"hello")]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(websocket.encode_text("masked"), id="masked-server-frame"),
        pytest.param(server_frame(0x0, b"x"), id="continuation-first"),
        pytest.param(
            server_frame(0x1, b"a", fin=False) + server_frame(0x1, b"b"), id="interleaved"
        ),
        pytest.param(server_frame(0x9, b"p", fin=False), id="fragmented-ping"),
        pytest.param(server_frame(0x1, b"x" * 101), id="over-max-size"),
    ],
)
def test_reader_refuses_what_rfc_6455_forbids(data):
    with pytest.raises(ProtocolError):
        FrameReader(max_size=100).feed(data)
