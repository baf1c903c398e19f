"""Awaiting a condition on what a test server recorded, without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(predicate: Callable[[], bool], changed: asyncio.Event, timeout: float) -> None:
    """Wait until ``predicate()`` holds, checking it now and again each time ``changed`` is set;
    TimeoutError after ``timeout`` seconds.

    Whoever changes what ``predicate`` reads must set ``changed`` afterwards.
    """

    async def loop() -> None:
        while not predicate():
            changed.clear()
            await changed.wait()

    await asyncio.wait_for(loop(), timeout)
