"""Promises of wire contract v2, each tested from the outside over loopback sockets.

- A refused ``/internal/send`` answer reaches the client whatever the body's size (PROTOCOL 7):
  the gateway reads and discards the rest of the body for a bounded time before it closes.
- UTF-8 bytes in the request target and headers reach the backend as that text (PROTOCOL 1.2).
- ``INTERNAL_SECRET`` guards ``/metrics`` too, and ``Bearer`` is matched in any case (PROTOCOL 4).
- ``REDIS_URL`` without the redis extra stops start-up with the line that says how to install it
  (PROTOCOL 6).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tornado_sse
from tests.support.backend import Answer
from tests.support.helpers import open_with_token
from tests.support.internal import RawResponse, error_code, read_response
from tests.support.process import run_command, start_gateway
from tests.support.raw_http import read_head, request_head
from tests.support.sse_client import SSEStream
from tornado_sse.json_post import LINGER_MAX_BYTES, LINGER_SECONDS

MB = 1000 * 1000

#: What the oversize clients write, piece after piece: valid JSON never arrives.
PIECE = b"x" * 65536

# --------------------------------------------------------------------------------------------
# A refused send's answer always arrives (PROTOCOL 7): the lingering close


@dataclass
class Refusal:
    """What a client saw that kept writing a body while it read the answer."""

    answer: RawResponse
    #: Body bytes written when the whole answer had been read.
    sent_before_answer: int
    #: Body bytes written in all, and why writing stopped early (None: it did not).
    sent: int
    write_error: BaseException | None
    #: What followed the answer on the connection: b"" is a clean close (FIN), an exception
    #: a reset.
    end: bytes | BaseException


async def post_while_reading(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    port: int,
    size: int,
    *,
    chunked: bool = False,
    headers: Sequence[tuple[str, str]] = (("Content-Type", "application/json"),),
    timeout: float = 20.0,
) -> Refusal:
    """POST a ``size``-byte body to ``/internal/send`` on an open connection, writing it
    piece by piece while reading the answer concurrently; then finish writing and read what
    follows the answer. Every step is bounded by ``timeout``."""
    framing = ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(size))
    writer.write(request_head("POST", "/internal/send", "127.0.0.1", port, [*headers, framing]))
    sent = 0

    async def write_body() -> None:
        nonlocal sent
        while sent < size:
            piece = PIECE[: size - sent]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            sent += len(piece)
            await asyncio.sleep(0)  # the reading side runs between pieces
        if chunked:
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    writing = asyncio.ensure_future(write_body())
    try:
        answer = await asyncio.wait_for(read_response(reader), timeout)
        sent_before_answer = sent
        write_error: BaseException | None = None
        try:
            await asyncio.wait_for(writing, timeout)
        except ConnectionError as exc:
            write_error = exc
        end: bytes | BaseException
        try:
            end = await asyncio.wait_for(reader.read(), timeout)
        except ConnectionError as exc:
            end = exc
    finally:
        writing.cancel()
    return Refusal(answer, sent_before_answer, sent, write_error, end)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def send_on(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: object
) -> RawResponse:
    """One ordinary send on an open connection, which stays open (keep-alive)."""
    data = json.dumps(body).encode()
    pairs = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    writer.write(request_head("POST", "/internal/send", "127.0.0.1", port, pairs) + data)
    return await asyncio.wait_for(read_response(reader), 5.0)


@pytest.mark.parametrize("size", [20 * MB, 200 * MB], ids=["20MB", "200MB"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("kept_alive", [False, True], ids=["fresh", "kept-alive"])
@pytest.mark.gen_test(timeout=60)
async def test_oversize_send_gets_its_413_json_while_still_sending_and_a_clean_close(
    gateway, backend, size, chunked, kept_alive
):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    reader, writer = await connect(gw.port)
    try:
        if kept_alive:
            first = await send_on(reader, writer, gw.port, {"token": token, "event": {"data": "1"}})
            assert (first.code, first.json()) == (200, {"status": "ok"})
            assert first.headers.get("connection") != "close"
        refusal = await post_while_reading(reader, writer, gw.port, size, chunked=chunked)
    finally:
        writer.close()

    assert error_code(refusal.answer, 413) == "PAYLOAD_TOO_LARGE"
    assert refusal.answer.headers["content-type"] == "application/json"
    assert refusal.answer.headers["connection"] == "close"
    # Read while the client was still sending, and the gateway took in the rest of the body
    # before closing: no reset on either side.
    assert refusal.sent_before_answer < size, refusal
    assert (refusal.sent, refusal.write_error, refusal.end) == (size, None, b""), refusal
    # The gateway keeps serving: the next send reaches the stream, and only it (the oversize
    # body delivered nothing).
    assert await gw.send({"token": token, "event": {"data": "2"}}) == (200, {"status": "ok"})
    events = await stream.wait_events(2 if kept_alive else 1)
    assert [e.data for e in events] == (["1", "2"] if kept_alive else ["2"])


@pytest.mark.parametrize(
    ("settings", "content_type", "chunked", "status", "code"),
    [
        pytest.param(
            {"internal_secret": "s3cret"},
            "application/json",
            False,
            401,
            "UNAUTHORIZED",
            id="401-no-bearer",
        ),
        # Chunked: a declared length over MAX_BODY_BYTES would be refused with 413 first.
        pytest.param({}, "text/plain", True, 415, "UNSUPPORTED_MEDIA_TYPE", id="415-chunked"),
    ],
)
@pytest.mark.gen_test(timeout=30)
async def test_send_refused_before_its_20mb_body_is_read_gets_its_json_answer(
    gateway, settings, content_type, chunked, status, code
):
    gw = gateway(**settings)
    reader, writer = await connect(gw.port)
    headers = [("Content-Type", content_type)]
    try:
        refusal = await post_while_reading(
            reader, writer, gw.port, 20 * MB, chunked=chunked, headers=headers
        )
    finally:
        writer.close()
    assert error_code(refusal.answer, status) == code
    assert refusal.sent_before_answer < 20 * MB, refusal
    assert (refusal.sent, refusal.write_error, refusal.end) == (20 * MB, None, b""), refusal


@pytest.mark.gen_test(timeout=30)
async def test_send_expecting_100_continue_gets_its_413_and_no_100_after_it(gateway):
    gw = gateway()
    reader, writer = await connect(gw.port)
    size = 2 * MB
    pairs = [("Content-Type", "application/json"), ("Content-Length", str(size))]
    pairs.append(("Expect", "100-continue"))
    try:
        writer.write(request_head("POST", "/internal/send", "127.0.0.1", gw.port, pairs))
        answer = await asyncio.wait_for(read_response(reader), 5.0)
        # A client that waited for "100 Continue" in vain sends the body anyway (curl does
        # after a second); the gateway reads it to its end and closes.
        writer.write(b"x" * size)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    assert error_code(answer, 413) == "PAYLOAD_TOO_LARGE"
    assert rest == b""  # nothing after the final answer: no interim "100 Continue"


@pytest.mark.gen_test(timeout=LINGER_SECONDS + 15)
async def test_refused_send_that_never_ends_is_closed_after_the_linger_time(gateway):
    gw = gateway()
    reader, writer = await connect(gw.port)
    pairs = [("Content-Type", "application/json"), ("Content-Length", str(20 * MB))]
    try:
        writer.write(request_head("POST", "/internal/send", "127.0.0.1", gw.port, pairs))
        answer = await asyncio.wait_for(read_response(reader), 5.0)
        answered = time.monotonic()
        closed = asyncio.ensure_future(reader.read())
        # A client that keeps trickling its body, a few bytes at a time, and would go on for
        # far longer than the gateway lingers.
        for _ in range(int(LINGER_SECONDS * 10) + 100):
            done, _pending = await asyncio.wait({closed}, timeout=0.1)
            if done:
                break
            writer.write(b"xxxx")
        assert closed.done(), "the gateway did not close the connection"
        elapsed = time.monotonic() - answered
        closed.exception()  # a close (b"") or a reset: either ends the linger
    finally:
        writer.close()
    assert error_code(answer, 413) == "PAYLOAD_TOO_LARGE"
    assert LINGER_SECONDS - 0.5 < elapsed < LINGER_SECONDS + 3.0, elapsed


@pytest.mark.gen_test(timeout=60)
async def test_refused_send_is_closed_once_the_linger_byte_bound_is_read(gateway):
    gw = gateway()
    announced = 4 * LINGER_MAX_BYTES
    reader, writer = await connect(gw.port)
    try:
        refusal = await post_while_reading(reader, writer, gw.port, announced)
    finally:
        writer.close()
    assert error_code(refusal.answer, 413) == "PAYLOAD_TOO_LARGE"
    # The gateway read what it lingers for, then closed; what the client wrote on top fits in
    # the sockets' buffers.
    assert isinstance(refusal.write_error, ConnectionError), refusal
    assert LINGER_MAX_BYTES < refusal.sent < LINGER_MAX_BYTES + 64 * MB, refusal
    assert (await gw.get("/healthz")).code == 200


# --------------------------------------------------------------------------------------------
# UTF-8 is forwarded as UTF-8 (PROTOCOL 1.2)


async def open_raw_stream(gw: Any, head: bytes) -> SSEStream:
    """Send ``head``, a request head given byte for byte, to the ``gateway`` fixture's ``gw``
    and read the answer's head; the stream is closed at teardown."""
    reader, writer = await connect(gw.port)
    writer.write(head)
    try:
        status, headers = await asyncio.wait_for(read_head(reader), 5.0)
    except BaseException:
        writer.close()
        raise
    stream = SSEStream(reader, writer, status, headers)
    gw.streams.append(stream)
    return stream


def get_head(target: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET %b HTTP/1.1" % target, b"Host: 127.0.0.1", *headers]) + b"\r\n\r\n"


@pytest.mark.gen_test(timeout=10)
async def test_utf8_target_and_header_values_reach_the_connect_callback_as_utf8(gateway, backend):
    gw = gateway()
    head = get_head(
        "/sse/café?q=ünï".encode(),
        "Cookie: name=José".encode(),
        "Last-Event-ID: ünï".encode(),
        "X-Note: 日本 😀".encode(),
    )
    stream = await open_raw_stream(gw, head)
    assert stream.status == 200
    (connect,) = await backend.wait_for_calls("connect")
    request = connect.body["request"]
    assert request["url"] == "/sse/café?q=ünï"
    assert request["headers"]["cookie"] == "name=José"
    assert request["headers"]["last-event-id"] == "ünï"
    assert request["headers"]["x-note"] == "日本 😀"
    # On the wire to the backend: the same UTF-8 bytes the client sent.
    assert '"url":"/sse/café?q=ünï"'.encode() in connect.raw
    # The disconnect carries the request captured at connect.
    await stream.aclose()
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert disconnect.body["request"] == request


@pytest.mark.gen_test(timeout=10)
async def test_percent_encoded_target_reaches_the_backend_byte_exact(gateway, backend):
    gw = gateway()
    stream = await open_raw_stream(gw, get_head(b"/sse/caf%C3%A9?q=%C3%BC&r=%e9"))
    assert stream.status == 200
    (connect,) = await backend.wait_for_calls("connect")
    assert connect.body["request"]["url"] == "/sse/caf%C3%A9?q=%C3%BC&r=%e9"


@pytest.mark.gen_test(timeout=10)
async def test_header_bytes_that_are_not_utf8_reach_the_backend_as_latin1(gateway, backend):
    gw = gateway()
    stream = await open_raw_stream(gw, get_head(b"/sse/x", b"X-Old: Jos\xe9", b"X-Mixed: \xc3("))
    assert stream.status == 200
    (connect,) = await backend.wait_for_calls("connect")
    headers = connect.body["request"]["headers"]
    assert (headers["x-old"], headers["x-mixed"]) == ("Jos\u00e9", "\u00c3(")


@pytest.mark.parametrize(
    "asked",
    [
        pytest.param((b"/sse/room", "Last-Event-ID: ünï".encode()), id="header"),
        pytest.param((b"/sse/room?lastEventId=%C3%BCn%C3%AF",), id="query-parameter"),
        pytest.param(("/sse/room?lastEventId=ünï".encode(),), id="raw-query-parameter"),
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_non_ascii_last_event_id_gets_a_history_gap_with_its_text_intact(
    gateway, backend, asked
):
    backend.connect_answer = Answer(body=b'{"channels": ["room"]}')
    gw = gateway()
    target, *headers = asked
    stream = await open_raw_stream(gw, get_head(target, *headers))
    assert stream.status == 200
    (gap,) = await stream.wait_events(1)
    assert (gap.type, gap.data) == ("history_gap", "ünï")
    assert "data: ünï\n".encode() in stream.raw


# --------------------------------------------------------------------------------------------
# INTERNAL_SECRET guards /metrics too; the scheme in any case (PROTOCOL 4)


@pytest.mark.parametrize("internal_port", [None, 1], ids=["main-port", "internal-port"])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "bearer S3CRET", "Basic s3cret", "s3cret"]
)
@pytest.mark.gen_test(timeout=10)
async def test_metrics_without_the_right_bearer_is_401_json(gateway, internal_port, authorization):
    gw = gateway(internal_secret="s3cret", internal_port=internal_port)
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await gw.get("/metrics", headers=headers, internal=True)
    assert error_code(response, 401) == "UNAUTHORIZED"
    assert b"tornado_sse_" not in response.body


@pytest.mark.parametrize("internal_port", [None, 1], ids=["main-port", "internal-port"])
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
@pytest.mark.gen_test(timeout=10)
async def test_bearer_scheme_in_any_case_opens_the_internal_api_and_metrics(
    gateway, backend, internal_port, scheme
):
    gw = gateway(internal_secret="s3cret", internal_port=internal_port)
    stream, token = await open_with_token(gw, backend)
    auth = {"Authorization": "%s s3cret" % scheme}
    assert await gw.send({"token": token, "event": {"data": scheme}}, headers=auth) == (
        200,
        {"status": "ok"},
    )
    assert [e.data for e in await stream.wait_events(1)] == [scheme]
    listing = await gw.get("/internal/connections", headers=auth, internal=True)
    assert (listing.code, json.loads(listing.body)["count"]) == (200, 1)
    metrics = await gw.get("/metrics", headers=auth, internal=True)
    assert metrics.code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert b"tornado_sse_open_streams 1.0" in metrics.body


@pytest.mark.gen_test(timeout=10)
async def test_metrics_need_no_bearer_without_internal_secret(gateway):
    gw = gateway()
    metrics = await gw.get("/metrics", internal=True)
    assert metrics.code == 200 and b"tornado_sse_open_streams" in metrics.body


# --------------------------------------------------------------------------------------------
# REDIS_URL without the redis extra (PROTOCOL 6)

#: The directory that holds the package under test, for the child processes' PYTHONPATH.
SOURCE_ROOT = Path(tornado_sse.__file__).resolve().parents[1]

INSTALL_LINE = "pip install 'tornado-sse[redis]'"


def without_redis(tmp_path: Path) -> dict[str, str]:
    """The environment of a Python that cannot import redis, as where the extra is not
    installed: a ``sitecustomize`` marks the module absent (``import redis`` raises
    ModuleNotFoundError and ``importlib.util.find_spec("redis")`` is None)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n\nsys.modules['redis'] = None  # the redis extra is not installed\n"
    )
    return {"PYTHONPATH": "%s:%s" % (tmp_path, SOURCE_ROOT)}


def test_redis_url_without_the_redis_extra_stops_startup_with_the_install_line(tmp_path):
    env = without_redis(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", "import redis"], env=env, capture_output=True, text=True, timeout=30
    )
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr, probe.stderr
    settings = {"REDIS_URL": "redis://127.0.0.1:6379/0", "CALLBACK_URL": "http://127.0.0.1:9/cb"}

    started = run_command([], {**env, **settings})
    assert started.returncode == 2, started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and INSTALL_LINE in lines[0] and "REDIS_URL" in lines[0], lines
    assert "Traceback" not in started.stderr

    checked = run_command(["check"], {**env, **settings})
    assert checked.returncode == 2, checked.stdout
    assert checked.stdout.startswith("FAIL ") and INSTALL_LINE in checked.stdout, checked.stdout
    assert "Traceback" not in checked.stdout + checked.stderr


@pytest.mark.gen_test(timeout=30)
async def test_without_redis_url_the_gateway_runs_without_the_redis_extra(backend, tmp_path):
    gw = await start_gateway({**without_redis(tmp_path), "CALLBACK_URL": backend.url})
    try:
        stream = await gw.stream("/sse/no-redis")
        assert stream.status == 200
        stream.close()
    finally:
        await gw.stop()
