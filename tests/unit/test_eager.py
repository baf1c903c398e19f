"""eager.start: a coroutine runs at once, and one that waits goes on as in a Task."""

from __future__ import annotations

import asyncio

import pytest

from tornado_sse import eager


async def _now(trace: list[str]) -> int:
    trace.append("ran")
    return 1


async def _waits(loop: asyncio.AbstractEventLoop) -> int:
    future = loop.create_future()
    loop.call_soon(future.set_result, 41)
    value = await future
    await asyncio.sleep(0)  # a bare yield too
    return value + 1


async def _fails_after_waiting() -> None:
    await asyncio.sleep(0)
    raise KeyError("late")


async def _catches(loop: asyncio.AbstractEventLoop) -> str:
    future = loop.create_future()
    loop.call_soon(future.set_exception, ValueError("thrown in"))
    try:
        await future
    except ValueError as exc:
        return "caught %s" % exc
    return "not caught"


async def _fails_at_once() -> None:
    raise LookupError("at once")


@pytest.mark.gen_test
async def test_a_coroutine_that_does_not_wait_is_done_when_start_returns():
    trace: list[str] = []
    future = eager.start(_now(trace))
    assert trace == ["ran"]
    assert future.done() and future.result() == 1


@pytest.mark.gen_test
async def test_a_coroutine_that_waits_goes_on_with_the_values_it_awaited():
    future = eager.start(_waits(asyncio.get_running_loop()))
    assert not future.done()
    assert await future == 42


@pytest.mark.gen_test
async def test_exceptions_reach_the_future_and_the_coroutine():
    with pytest.raises(LookupError, match="at once"):
        await eager.start(_fails_at_once())
    with pytest.raises(KeyError, match="late"):
        await eager.start(_fails_after_waiting())
    assert await eager.start(_catches(asyncio.get_running_loop())) == "caught thrown in"


@pytest.mark.gen_test
async def test_cancelling_the_future_cancels_the_coroutine():
    loop = asyncio.get_running_loop()
    never = loop.create_future()
    seen: list[str] = []

    async def waits_forever() -> None:
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    future = eager.start(waits_forever())
    await asyncio.sleep(0)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await future
    assert seen == ["cancelled"]
