"""The socket writer's reliance on Tornado internals, pinned: a Tornado upgrade that changes
them fails here first, not in production."""

from __future__ import annotations

import asyncio
import socket

import pytest
from tornado.iostream import IOStream

from tornado_sse.writer import ChunkEncoder, backlog


def test_chunk_encoder_frames_a_frame_as_one_http_chunk():
    chunks = ChunkEncoder()
    assert chunks(b"data: x\n\n") == b"9\r\ndata: x\n\n\r\n"


def test_chunk_encoder_frames_a_shared_frame_once():
    chunks = ChunkEncoder()
    frame = b"data: shared\n\n"
    first = chunks(frame)
    assert chunks(frame) is first  # the same object: framed once for every stream
    assert chunks(b"data: other\n\n") is not first


@pytest.mark.gen_test(timeout=10)
async def test_iostream_write_counters_give_the_unsent_backlog():
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setblocking(False)
    stream = IOStream(ours)
    try:
        # The two private counters the writer reads exist and start equal.
        assert stream._total_write_index == stream._total_write_done_index == 0
        assert backlog(stream) == 0
        payload = b"x" * (4 * 1024 * 1024)  # far more than the socket buffers take
        done = stream.write(payload)
        assert 0 < backlog(stream) <= len(payload)
        received = 0
        loop = asyncio.get_running_loop()
        while received < len(payload):  # bounded by the payload size and the test timeout
            received += len(await loop.sock_recv(theirs, 1024 * 1024))
        await done
        assert backlog(stream) == 0
        assert stream._total_write_index == len(payload)
    finally:
        stream.close()
        theirs.close()
