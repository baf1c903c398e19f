"""Both clients of :mod:`tornado_sse_client` behind one awaitable face.

Tests of the clients run each case twice, with the blocking :class:`Gateway` and with
:class:`AsyncGateway`. The blocking one is called in an executor thread, as a WSGI backend
would call it, so that the test's IOLoop keeps serving the gateway (or the fake) meanwhile.
The ``clients`` fixture (tests/conftest.py) makes them with :class:`Clients`, which closes
their kept-alive connections at the end of the test.
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
        self.client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, functools.partial(method, *args, **kwargs))

        return call


def awaitable_client(kind: str, url: str, secret: str | None = None, timeout: float = 5.0) -> Any:
    """A client of ``url`` whose methods are all awaited the same way: for ``kind`` ``"sync"`` a
    :class:`Gateway` in :class:`InThread`, for ``"async"`` an :class:`AsyncGateway`. The caller
    awaits its ``close_idle()`` before the event loop ends."""
    if kind == "sync":
        return InThread(Gateway(url, secret=secret, timeout=timeout))
    return AsyncGateway(url, secret=secret, timeout=timeout)


class Clients:
    """Makes clients like :func:`awaitable_client` and closes them all in :meth:`close`."""

    def __init__(self) -> None:
        self._made: list[Any] = []

    def __call__(self, kind: str, url: str, secret: str | None = None, timeout: float = 5.0) -> Any:
        client = awaitable_client(kind, url, secret, timeout)
        self._made.append(client)
        return client

    def keep(self, client: Any) -> Any:
        """Close ``client`` (made elsewhere) with the others; returns it."""
        self._made.append(client)
        return client

    async def close(self) -> None:
        """Close the idle connections of every client made."""
        for client in self._made:
            await client.close_idle()
