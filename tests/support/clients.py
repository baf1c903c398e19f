"""Both clients of :mod:`tornado_sse.client` behind one awaitable face.

Tests of the clients run each case twice, with the blocking :class:`Gateway` and with
:class:`AsyncGateway`. The blocking one is called in an executor thread, as a WSGI backend
would call it, so that the test's IOLoop keeps serving the gateway (or the fake) meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from tornado_sse.client import AsyncGateway, Gateway

#: The two kinds of client, as ``kind`` of :func:`awaitable_client`.
KINDS = ["sync", "async"]


class InThread:
    """The blocking client's methods as coroutines, each call run in an executor thread."""

    def __init__(self, client: Gateway) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(method, *args, **kwargs))

        return call


def awaitable_client(kind: str, url: str, secret: str | None = None, timeout: float = 5.0) -> Any:
    """A client of ``url`` whose methods are all awaited the same way: for ``kind`` ``"sync"`` a
    :class:`Gateway` in :class:`InThread`, for ``"async"`` an :class:`AsyncGateway`."""
    if kind == "sync":
        return InThread(Gateway(url, secret=secret, timeout=timeout))
    return AsyncGateway(url, secret=secret, timeout=timeout)
