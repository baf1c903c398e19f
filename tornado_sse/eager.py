"""Run a coroutine at once, in the caller, and pay for a Task only if it has to wait.

``asyncio.ensure_future(coro)`` schedules the coroutine's first step for the next loop
iteration and allocates a Task, even when the coroutine never waits (a send to a stream of this
process is decided and written without waiting). :func:`start` runs it up to its first wait
right away; only a coroutine that does wait continues in a Task (Python 3.12's eager task
factory does the same, for every task of a loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` now until it finishes or first waits; a future of its result.

    The future is already done when ``coro`` did not wait. Otherwise ``coro`` goes on in a Task
    from where it stopped, with the same results and exceptions as if it had run in one.
    """
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        done.set_result(stop.value)
        return done
    except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
        failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        failed.set_exception(exc)
        return failed
    return asyncio.ensure_future(_resume(coro, waiting))


async def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> T:
    """Go on with ``coro``, suspended on ``waiting`` (what it yielded): a future, or ``None``
    for a bare yield (``asyncio.sleep(0)``)."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await waiting
        except BaseException as exc:  # noqa: BLE001 - thrown into coro, as a Task would
            try:
                waiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            return stop.value
