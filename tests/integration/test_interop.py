"""What SSE clients nobody here wrote see on the wire: the stream's charset, the CORS preflight
that fetch-based clients send, and the end of a stream to an HTTP/1.0 client.

Each test is a raw client on a loopback socket, so it sees the bytes a third-party client sees.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.backend import Answer
from tests.support.internal import raw_request
from tests.support.sse_parser import SSEParser

STREAM_TYPE = "text/event-stream; charset=utf-8"


async def _preflight(port: int, request_headers: str) -> dict[str, str]:
    response = await raw_request(
        port,
        "OPTIONS",
        "/sse/x",
        headers={
            "Origin": "https://page.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": request_headers,
        },
    )
    assert response.code == 204, response.body
    return response.headers


def _allowed(headers: dict[str, str]) -> set[str]:
    return {name.strip().lower() for name in headers["access-control-allow-headers"].split(",")}


# -- Content-Type ------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_stream_says_its_charset_so_latin1_default_clients_decode_utf8(gateway, backend):
    gw = gateway()
    stream = await gw.open()
    assert stream.headers["content-type"] == STREAM_TYPE
    (connect,) = await backend.wait_for_calls("connect")
    status, _ = await gw.send({"token": connect.token, "event": {"data": "héllo ✓"}})
    assert status == 200
    await stream.wait_events(1)
    charset = stream.headers["content-type"].split("charset=")[1]
    assert bytes(stream.raw).decode(charset) == "data: héllo ✓\n\n"


@pytest.mark.gen_test(timeout=10)
async def test_retry_stream_says_its_charset_too(gateway, backend):
    backend.connect_answer = Answer(status=503)
    gw = gateway(retry_on_unavailable=True)
    stream = await gw.stream()
    assert (stream.status, stream.headers["content-type"]) == (200, STREAM_TYPE)
    await stream.read_to_end()
    assert stream.parser.retry is not None


# -- CORS preflight ----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_preflight_allows_authorization_and_request_id_for_fetch_based_clients(gateway):
    gw = gateway()
    headers = await _preflight(gw.port, "authorization, x-request-id, last-event-id")
    assert headers["access-control-allow-origin"] == "*"
    assert _allowed(headers) == {
        "content-type",
        "cache-control",
        "last-event-id",
        "authorization",
        "x-request-id",
    }


@pytest.mark.gen_test(timeout=10)
async def test_preflight_allowed_headers_come_from_cors_allow_headers(gateway):
    gw = gateway(cors_allow_headers="Last-Event-ID, X-Tenant")
    headers = await _preflight(gw.port, "x-tenant")
    assert headers["access-control-allow-headers"] == "Last-Event-ID, X-Tenant"


# -- HTTP/1.0 ----------------------------------------------------------------------------------


async def _http10_stream(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send an HTTP/1.0 GET asking for keep-alive; return the reader, writer and the head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /sse/old HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
        b"Accept: text/event-stream\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


@pytest.mark.gen_test(timeout=10)
async def test_http10_keep_alive_client_sees_a_closed_stream_end_at_once(gateway, backend):
    gw = gateway()
    reader, writer, head = await _http10_stream(gw.port)
    try:
        lines = head.decode("latin-1").lower().split("\r\n")
        assert lines[0].startswith("http/1.1 200")
        assert "connection: close" in lines, lines
        assert not any(line.startswith(("transfer-encoding", "content-length")) for line in lines)
        (connect,) = await backend.wait_for_calls("connect")
        status, _ = await gw.send(
            {"token": connect.token, "event": {"data": "last"}, "close": True}
        )
        assert status == 200
        # Read to EOF: with no length and no chunks, only the closed socket ends the body.
        body = await asyncio.wait_for(reader.read(), 2.0)
        assert [e.data for e in SSEParser().feed(body)] == ["last"]
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=10)
async def test_http10_keep_alive_client_sees_the_retry_stream_end_at_once(gateway, backend):
    backend.connect_answer = Answer(status=503)
    gw = gateway(retry_on_unavailable=True)
    reader, writer, head = await _http10_stream(gw.port)
    try:
        assert b"connection: close" in head.lower()
        body = await asyncio.wait_for(reader.read(), 2.0)
        parser = SSEParser()
        parser.feed(body)
        assert parser.retry is not None, body
    finally:
        writer.close()
