"""The backend's client for the internal API, as ``tornado_sse.client``.

The clients live in :mod:`tornado_sse_client`, a distribution of their own (standard library
only: ``pip install ./clients/python``) that a backend installs without the gateway. This
module is the same API for code written against ``tornado_sse.client``; its
:class:`AsyncGateway` also accepts a Tornado ``http_client`` to send through.
:func:`mint_jwt` makes the token of a stream that opens without a connect callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tornado_sse_client import aio
from tornado_sse_client.errors import (
    BufferFull,
    GatewayClientError,
    GatewayUnavailable,
    InvalidRequest,
    TokenNotFound,
    Unauthorized,
)
from tornado_sse_client.keepalive import DEFAULT_KEEPALIVE_SECONDS
from tornado_sse_client.messages import (
    CONNECTIONS_PATH,
    SEND_PATH,
    BatchResult,
    decode_response,
    encode_json,
    error_for,
    request_headers,
    send_item,
    subscription_body,
)
from tornado_sse_client.sync import Gateway
from tornado_sse_client.tokens import mint_jwt

if TYPE_CHECKING:
    from tornado.httpclient import AsyncHTTPClient

__all__ = [
    "CONNECTIONS_PATH",
    "SEND_PATH",
    "AsyncGateway",
    "BatchResult",
    "BufferFull",
    "Gateway",
    "GatewayClientError",
    "GatewayUnavailable",
    "InvalidRequest",
    "TokenNotFound",
    "Unauthorized",
    "decode_response",
    "encode_json",
    "error_for",
    "mint_jwt",
    "request_headers",
    "send_item",
    "subscription_body",
]


class AsyncGateway(aio.AsyncGateway):
    """:class:`tornado_sse_client.AsyncGateway`, which can also send through a Tornado client.

    ``http_client`` is an ``AsyncHTTPClient`` to use instead of the built-in kept-alive
    connections (its owner closes it); ``timeout`` then bounds connecting and the whole request.
    """

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        timeout: float = 5.0,
        *,
        http_client: AsyncHTTPClient | None = None,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        transport: str = "http",
    ) -> None:
        super().__init__(
            url, secret, timeout, keepalive_seconds=keepalive_seconds, transport=transport
        )
        self._http_client = http_client

    async def _exchange(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        if self._http_client is None:
            return await super()._exchange(method, target, headers, body)
        from tornado.httpclient import HTTPClientError, HTTPRequest

        request = HTTPRequest(
            self.url.removesuffix(self._prefix) + target,
            method=method,
            body=body,
            headers=headers,
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await self._http_client.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:
            # With raise_error=False only failures without an answer (refused, timeout,
            # reset) are raised; HTTPClientError is Tornado's 599 for them.
            raise GatewayUnavailable(str(exc) or type(exc).__name__) from exc
        return response.code, response.body or b""
