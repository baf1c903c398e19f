"""Requests that never finish arriving (wire contract section 7, ``BODY_TIMEOUT_SECONDS``):
they are closed after their timeout, show in ``tornado_sse_requests_receiving`` meanwhile, and
take places under ``MAX_CONNECTIONS``."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.helpers import (
    assert_json_error,
    closed_by_server,
    read_metric,
    unfinished_request,
    wait_for_metric,
)

RECEIVING = "tornado_sse_requests_receiving"

#: A stream request and a send that declare a body and never send it.
STREAM_WITHOUT_BODY = b"GET /sse/held HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
SEND_WITHOUT_BODY = (
    b"POST /internal/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n"
)
#: A head that never ends (no blank line).
PARTIAL_HEAD = b"GET /sse/slowloris HTTP/1.1\r\nHost: x\r\nX-Slow: "


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("head", [STREAM_WITHOUT_BODY, SEND_WITHOUT_BODY], ids=["stream", "send"])
async def test_a_request_whose_declared_body_never_arrives_is_closed_after_body_timeout(
    gateway, backend, head
):
    gw = gateway(body_timeout_seconds=0.5, header_timeout_seconds=30.0)
    started = time.monotonic()
    reader, writer = await unfinished_request(gw.port, head)
    try:
        await wait_for_metric(gw.base_url, RECEIVING, lambda v: v == 1)
        answer = await closed_by_server(reader, timeout=5)
        elapsed = time.monotonic() - started
        assert answer == b""  # closed, not answered: the request never arrived
        assert 0.45 <= elapsed < 0.5 + 1.0, elapsed
        assert await read_metric(gw.base_url, RECEIVING) == 0
        assert backend.calls == []  # the stream request never reached the connect callback
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=15)
async def test_a_body_still_arriving_is_not_cut_before_body_timeout(gateway, backend):
    gw = gateway(body_timeout_seconds=0.8)
    body = b'{"channel": "c", "event": {"data": "x"}}'
    head = (
        b"POST /internal/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    reader, writer = await unfinished_request(gw.port, head + body[:10])
    try:
        await wait_for_metric(gw.base_url, RECEIVING, lambda v: v == 1)
        writer.write(body[10:])
        answer = await closed_by_server(reader, timeout=5)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert answer.endswith(b'{"status":"ok"}'), answer
        assert await read_metric(gw.base_url, RECEIVING) == 0
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=15)
async def test_a_head_that_never_ends_is_closed_after_header_timeout(gateway, backend):
    gw = gateway(header_timeout_seconds=0.5)
    started = time.monotonic()
    reader, writer = await unfinished_request(gw.port, PARTIAL_HEAD)
    try:
        await wait_for_metric(gw.base_url, RECEIVING, lambda v: v == 1)
        assert await closed_by_server(reader, timeout=5) == b""
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 0.5 + 1.0, elapsed
        assert await read_metric(gw.base_url, RECEIVING) == 0
        assert backend.calls == []
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=20)
async def test_requests_still_being_received_take_places_under_max_connections(gateway, backend):
    gw = gateway(max_connections=3, body_timeout_seconds=1.0, header_timeout_seconds=1.0)
    stream = await gw.open("/sse/first")  # one place taken by a real stream
    held = [
        await unfinished_request(gw.port, STREAM_WITHOUT_BODY),
        await unfinished_request(gw.port, b""),  # connected, sends nothing
    ]
    try:
        await wait_for_metric(gw.base_url, RECEIVING, lambda v: v == 2)
        refused = await gw.stream("/sse/refused")
        await assert_json_error(refused, 503, "TOO_MANY_CONNECTIONS")
        # Both held requests are closed by their timeouts, and their places come back.
        await asyncio.gather(*(closed_by_server(reader, timeout=5) for reader, _ in held))
        await wait_for_metric(gw.base_url, RECEIVING, lambda v: v == 0)
        accepted = await gw.stream("/sse/after")
        assert accepted.status == 200
        assert [c.body["request"]["url"] for c in backend.of("connect")] == [
            "/sse/first",
            "/sse/after",
        ]
    finally:
        for _, writer in held:
            writer.close()
        await stream.aclose()


@pytest.mark.gen_test(timeout=15)
async def test_finished_requests_and_kept_alive_idle_connections_do_not_count(gateway, backend):
    gw = gateway(max_connections=1)
    reader, writer = await unfinished_request(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await asyncio.wait_for(reader.readexactly(length), 5)
        # The connection is kept alive, idle: it holds no place.
        assert await read_metric(gw.base_url, RECEIVING) == 0
        stream = await gw.open("/sse/only")  # the one place is free
        assert stream.status == 200
    finally:
        writer.close()
