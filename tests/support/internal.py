"""Helpers for tests of the internal API and of JSON error answers.

:func:`raw_request` speaks HTTP/1.1 over a plain asyncio socket, so a test controls every header
and byte (Tornado's client adds a ``Content-Type`` to POSTs, and always sends ``Content-Length``).
:func:`error_code` checks the JSON error shape of the wire contract and returns its code.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import HTTPResponse

from .raw_http import read_chunk, read_head, request_head


@dataclass(frozen=True)
class RawResponse:
    """A response read off the socket: status, lower-cased headers, de-chunked body."""

    code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    chunked: bool = False,
    timeout: float = 5.0,
) -> RawResponse:
    """Send one request with exactly ``headers`` (plus Host, Connection and the body framing)
    and read the whole response. ``chunked`` sends the body in 1 KiB chunks, without
    ``Content-Length``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        pairs = [("Connection", "close"), *(headers or {}).items()]
        if chunked:
            pairs.append(("Transfer-Encoding", "chunked"))
            payload = (
                b"".join(
                    b"%x\r\n%s\r\n" % (len(body[i : i + 1024]), body[i : i + 1024])
                    for i in range(0, len(body), 1024)
                )
                + b"0\r\n\r\n"
            )
        else:
            if body or method in ("POST", "PUT"):
                pairs.append(("Content-Length", "%d" % len(body)))
            payload = body
        writer.write(request_head(method, path, "127.0.0.1", port, pairs))
        try:
            writer.write(payload)
            await writer.drain()
        except ConnectionError:
            pass  # the server may answer (e.g. 413) and close before reading the whole body
        return await asyncio.wait_for(read_response(reader), timeout)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Read one whole response off ``reader`` (no timeout of its own): its head, then its body
    by ``Content-Length``, by chunks, or to the end of the connection."""
    code, headers = await read_head(reader)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while chunk := await read_chunk(reader):  # to the end of the body, or where it was cut
            body += chunk
        return RawResponse(code, headers, bytes(body))
    if "content-length" in headers:
        return RawResponse(code, headers, await reader.readexactly(int(headers["content-length"])))
    return RawResponse(code, headers, await reader.read())


def error_code(response: HTTPResponse | RawResponse, status: int) -> str:
    """Assert ``response`` is a ``status`` JSON error of the contract's shape; return its code."""
    code = response.code
    assert code == status, (code, response.body[:300])
    content_type = (
        response.headers.get("content-type", "")
        if isinstance(response, RawResponse)
        else response.headers.get("Content-Type", "")
    )
    assert content_type.split(";")[0].strip() == "application/json", content_type
    body = json.loads(response.body)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return str(body["error"]["code"])


def cors_headers(headers: Any) -> dict[str, str]:
    """The ``Access-Control-*`` headers among ``headers`` (names lower-cased)."""
    items = headers.get_all() if hasattr(headers, "get_all") else headers.items()
    return {k.lower(): v for k, v in items if k.lower().startswith("access-control-")}
