"""The socket writer: its reliance on Tornado internals, pinned (a Tornado upgrade that changes
them fails here first, not in production), and its queue for a stream that is behind."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import sys
import tracemalloc
import weakref

import pytest
from tornado.iostream import IOStream, StreamClosedError

from tornado_sse.listener import NoDelayStream, WriteQueue
from tornado_sse.writer import WRITE_OVERHEAD, ChunkEncoder, SocketWriter, backlog


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


# --------------------------------------------------------------------------------------------
# A stream that is behind: one write at a time to Tornado, small frames coalesced, real costs


class _Http:
    """The two things a SocketWriter uses of its HTTP/1 connection."""

    def __init__(self, stream: IOStream) -> None:
        self.stream = stream
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.stream.close()


def stuck_writer(
    stream_class: type[IOStream] = IOStream,
) -> tuple[SocketWriter, IOStream, socket.socket, list[str]]:
    """A SocketWriter (no chunk framing) on a socket whose peer does not read yet."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.setblocking(False)
    stream = stream_class(ours)
    events: list[str] = []
    writer = SocketWriter(_Http(stream), None, lambda: events.append("end"))  # type: ignore[arg-type]
    return writer, stream, theirs, events


async def receive(theirs: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while len(received) < size:  # bounded by the size and the test timeout
        piece = await loop.sock_recv(theirs, 1024 * 1024)
        assert piece, "the writer closed the socket early"
        received += piece
    return bytes(received)


#: Tornado's own stream and the gateway's (compact write queues, listener.NoDelayStream).
STREAM_CLASSES = pytest.mark.parametrize("stream_class", [IOStream, NoDelayStream])


@STREAM_CLASSES
@pytest.mark.gen_test(timeout=10)
async def test_a_stream_that_is_behind_hands_tornado_one_write_at_a_time(
    stream_class: type[IOStream],
):
    writer, stream, theirs, _ = stuck_writer(stream_class)
    try:
        frames = [b"data: %06d %s\n\n" % (i, b"x" * 1000) for i in range(2000)]
        queued = [writer.write_frame(frame) for frame in frames]
        assert queued[-1] > 0
        # One write (and future) in Tornado's queue, not one per frame.
        assert len(stream._write_futures) == 1
        total = sum(len(f) for f in frames)
        # What is queued costs about its bytes: coalesced, plus the bytearray's spare room.
        assert queued[-1] <= total * 1.15 + 2 * WRITE_OVERHEAD, (queued[-1], total)
        received = await receive(theirs, total)
        assert received == b"".join(frames)  # everything, in order
        for _ in range(50):  # the drain callbacks run on the loop (bounded)
            if writer.queued == 0:
                break
            await asyncio.sleep(0.01)
        assert writer.queued == 0
        assert writer.write_frame(b"data: again\n\n") == 0  # straight to the socket again
    finally:
        stream.close()
        theirs.close()


@STREAM_CLASSES
@pytest.mark.gen_test(timeout=10)
async def test_end_writes_every_queued_frame_before_the_last_chunk(stream_class: type[IOStream]):
    writer, stream, theirs, events = stuck_writer(stream_class)
    try:
        frames = [b"data: %d\n\n" % i for i in range(5000)]
        for frame in frames:
            writer.write_frame(frame)
        assert writer.queued > 0
        writer.end()
        assert events == ["end"]
        stream.write(b"LAST")  # what the handler writes when it finishes the response
        body = b"".join(frames) + b"LAST"
        assert await receive(theirs, len(body)) == body
    finally:
        stream.close()
        theirs.close()


@pytest.mark.gen_test(timeout=10)
async def test_abort_drops_the_queued_frames_and_the_connection():
    writer, stream, theirs, events = stuck_writer()
    try:
        for i in range(5000):
            writer.write_frame(b"data: %d\n\n" % i)
        assert writer.queued > 0
        writer.abort()
        assert writer.queued == 0
        assert stream.closed() and events == ["end"]
    finally:
        theirs.close()


@pytest.mark.gen_test(timeout=10)
async def test_a_large_frame_shared_by_streams_that_are_behind_is_stored_once():
    stuck = [stuck_writer() for _ in range(20)]
    try:
        for writer, *_ in stuck:
            while writer.write_frame(b"data: %s\n\n" % (b"f" * 4000)) == 0:
                pass  # until the socket buffers are full and the writer is behind
        shared = b"data: %s\n\n" % (b"s" * (256 * 1024))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for writer, *_ in stuck:
                writer.write_frame(shared)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # 20 copies would be 5 MiB; by reference it costs a few objects per stream.
        assert grown < 20 * 2 * WRITE_OVERHEAD, grown
        # Each stream is still charged the whole frame: the bound never undercounts.
        assert all(writer.queued >= len(shared) for writer, *_ in stuck)
    finally:
        for _, stream, theirs, _ in stuck:
            stream.close()
            theirs.close()


@pytest.mark.gen_test(timeout=10)
async def test_tornado_keeps_under_write_overhead_per_write_beside_the_bytes():
    """The figure WRITE_OVERHEAD stands for, pinned: what one IOStream.write keeps besides the
    bytes (future, index entry, view) on a stream whose peer does not read."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    stream = IOStream(ours)
    try:
        stream.write(b"x" * (1024 * 1024))  # fills the socket: everything after stays queued
        for size in (100, 1000, 3000, 20000):
            frames = [bytes([65]) * size for _ in range(500)]
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for frame in frames:
                    stream.write(frame)
                per_write = (tracemalloc.get_traced_memory()[0] - before) / len(frames)
            finally:
                tracemalloc.stop()
            copied = size if size <= 2048 else 0  # Tornado copies small writes, views large ones
            assert 0 < per_write - copied < WRITE_OVERHEAD, (size, per_write)
    finally:
        stream.close()
        theirs.close()


@pytest.mark.gen_test(timeout=10)
async def test_a_gateway_stream_is_written_straight_to_its_socket_with_empty_queues():
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    stream = NoDelayStream(ours)
    try:
        writer = SocketWriter(_Http(stream), None, lambda: None)  # type: ignore[arg-type]
        assert writer.write_frame(b"data: x\n\n") == 0
        assert stream._total_write_index == 0  # not through Tornado's write queue
        assert await receive(theirs, 9) == b"data: x\n\n"
        # Tornado's queues of an idle stream cost about an empty list each, not a deque block.
        queues = (stream._write_futures, stream._write_buffer._buffers)
        assert all(isinstance(q, WriteQueue) and not q for q in queues)
        assert sum(sys.getsizeof(q) for q in queues) <= 2 * sys.getsizeof([])
    finally:
        stream.close()
        theirs.close()


def _write_to_a_gone_client() -> weakref.ref[NoDelayStream]:
    """Write a frame to a stream whose client closed; a weak reference to the stream, whose
    last strong ones go when this returns."""
    ours, theirs = socket.socketpair()
    theirs.close()
    stream = NoDelayStream(ours)
    writer = SocketWriter(_Http(stream), None, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(StreamClosedError):
        writer.write_frame(b"data: x\n\n")
    assert stream.closed() and isinstance(stream.error, BrokenPipeError)
    return weakref.ref(stream)


@pytest.mark.gen_test(timeout=10)
async def test_a_stream_whose_client_is_gone_is_freed_once_dropped_without_the_collector():
    # A failed write keeps its error on the stream; were the error's traceback kept with it,
    # the stream (and the frames of whatever wrote to it) would stay in a reference cycle
    # until the cyclic collector ran.
    gc.disable()
    try:
        gone = _write_to_a_gone_client()
        assert gone() is None
    finally:
        gc.enable()


async def _read_until_reset() -> weakref.ref[NoDelayStream]:
    """Read from a gateway stream until its client resets the connection; a weak reference to
    the stream, whose last strong ones go when this returns."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    stream = NoDelayStream(ours)
    closed = asyncio.Event()
    stream.set_close_callback(closed.set)
    reading = stream.read_bytes(1)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # linger 0: a reset, not a FIN
    await asyncio.wait_for(closed.wait(), 5)
    # Not awaited: raised here, its traceback would hold this frame, and the frame the stream.
    assert isinstance(reading.exception(), StreamClosedError)
    assert isinstance(stream.error, ConnectionResetError)
    return weakref.ref(stream)


@pytest.mark.gen_test(timeout=10)
async def test_a_stream_its_client_reset_is_freed_once_dropped_without_the_collector():
    gc.disable()
    try:
        gone = await _read_until_reset()
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.gen_test(timeout=10)
async def test_frames_written_before_the_head_go_to_the_handler_until_uncorked():
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    stream = NoDelayStream(ours)
    early: list[bytes] = []
    try:
        writer = SocketWriter(
            _Http(stream),  # type: ignore[arg-type]
            ChunkEncoder(),
            lambda: None,
            early=early.append,
        )
        assert writer.write_frame(b"data: a\n\n") == 0
        assert writer.write_frame(b"data: b\n\n") == 0
        # Unframed, for the handler to send with the head; nothing reached the socket.
        assert early == [b"data: a\n\n", b"data: b\n\n"]
        assert stream._total_write_index == 0
        with pytest.raises(BlockingIOError):
            theirs.recv(100)
        writer.uncork()
        assert writer.write_frame(b"data: c\n\n") == 0
        assert await receive(theirs, 14) == b"9\r\ndata: c\n\n\r\n"
        assert len(early) == 2
    finally:
        stream.close()
        theirs.close()
