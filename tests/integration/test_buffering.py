"""Sends that arrive while the connect callback is in flight (wire contract section 4.4).

The fake backend's ``on_connect`` hook runs when the connect callback arrives and before the
backend answers it, so every send it makes is, by construction, a send during the callback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.backend import Answer
from tests.support.internal import error_code


def send_during_connect(gw: Any, backend: Any, *items: dict[str, Any]) -> list[Any]:
    """Make the backend POST each of ``items`` (``token`` filled in) while it answers connect.

    Returns the list that will hold each answer, an ``HTTPResponse``, in order.
    """
    answers: list[Any] = []

    async def hook(body: dict[str, Any]) -> None:
        for item in items:
            answers.append(await gw.post({"token": body["token"], **item}))

    backend.on_connect = hook
    return answers


def ok(response: Any) -> Any:
    """The decoded body of a 200 JSON answer."""
    assert response.code == 200, (response.code, response.body)
    return json.loads(response.body)


@pytest.mark.gen_test(timeout=10)
async def test_send_during_connect_is_buffered(gateway, backend):
    gw = gateway()
    answers = send_during_connect(gw, backend, {"event": {"data": "early"}})
    stream = await gw.open()
    assert [ok(a) for a in answers] == [{"status": "buffered"}]
    assert (await stream.wait_events(1))[0].data == "early"


@pytest.mark.gen_test(timeout=10)
async def test_buffered_events_are_written_first_in_fifo_order_before_live_events(gateway, backend):
    gw = gateway()
    answers = send_during_connect(
        gw,
        backend,
        {"event": {"data": "1"}},
        {"event": {"name": "n", "data": "2", "id": "7"}},
        {"event": {"data": "3"}},
    )
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    assert [ok(a) for a in answers] == [{"status": "buffered"}] * 3
    assert await gw.send({"token": connect.token, "event": {"data": "live"}}) == (
        200,
        {"status": "ok"},
    )
    events = await stream.wait_events(4)
    assert [e.data for e in events] == ["1", "2", "3", "live"]
    assert bytes(stream.raw) == (
        b"data: 1\n\nid: 7\nevent: n\ndata: 2\n\ndata: 3\n\ndata: live\n\n"
    )


@pytest.mark.gen_test(timeout=10)
async def test_buffer_beyond_max_pending_events_is_429_buffer_full(gateway, backend):
    gw = gateway(max_pending_events=3)
    answers = send_during_connect(gw, backend, *({"event": {"data": str(i)}} for i in range(1, 6)))
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    assert [ok(a) for a in answers[:3]] == [{"status": "buffered"}] * 3
    assert error_code(answers[3], 429) == "BUFFER_FULL"
    assert error_code(answers[4], 429) == "BUFFER_FULL"
    await gw.send({"token": connect.token, "event": {"data": "live"}})
    events = await stream.wait_events(4)
    assert [e.data for e in events] == ["1", "2", "3", "live"]


@pytest.mark.gen_test(timeout=10)
async def test_buffer_full_in_a_batch_is_a_per_item_429(gateway, backend):
    gw = gateway(max_pending_events=2)
    answers: list[Any] = []

    async def hook(body: dict[str, Any]) -> None:
        items = [{"token": body["token"], "event": {"data": str(i)}} for i in range(3)]
        answers.append(await gw.send(items))

    backend.on_connect = hook
    stream = await gw.open()
    ((status, body),) = answers
    assert status == 200
    assert [r["status"] for r in body["results"]] == [200, 200, 429]
    assert [r["body"].get("status") for r in body["results"][:2]] == ["buffered", "buffered"]
    assert body["results"][2]["body"]["error"]["code"] == "BUFFER_FULL"
    (connect,) = await backend.wait_for_calls("connect")
    await gw.send({"token": connect.token, "event": {"data": "live"}})
    assert [e.data for e in await stream.wait_events(3)] == ["0", "1", "live"]


@pytest.mark.gen_test(timeout=10)
async def test_failed_connect_drops_the_buffer_and_the_token_answers_404(gateway, backend):
    backend.connect_answer = Answer(status=403)
    gw = gateway()
    answers = send_during_connect(gw, backend, {"event": {"data": "secret"}}, {"close": True})
    stream = await gw.stream()
    assert [ok(a) for a in answers] == [{"status": "buffered"}] * 2
    assert stream.status == 403
    raw = await stream.read_to_end()
    assert stream.headers["content-type"].startswith("application/json")
    assert json.loads(raw)["error"]["code"] == "BACKEND_FORBIDDEN"
    assert b"secret" not in raw
    assert stream.events == []
    (connect,) = backend.of("connect")
    response = await gw.post({"token": connect.token, "event": {"data": "later"}})
    assert error_code(response, 404) == "TOKEN_NOT_FOUND"


@pytest.mark.gen_test(timeout=10)
async def test_buffered_close_ends_the_stream_right_after_the_events_queued_before_it(
    gateway, backend
):
    gw = gateway()
    answers = send_during_connect(
        gw,
        backend,
        {"event": {"data": "a"}},
        {"event": {"data": "b"}, "close": True},
    )
    stream = await gw.open()
    assert [ok(a) for a in answers] == [{"status": "buffered"}] * 2
    raw = await stream.read_to_end()
    assert stream.ended
    assert raw == b"data: a\n\ndata: b\n\n"
    (connect,) = backend.of("connect")
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert disconnect.body["reason"] == "server_closed"
    response = await gw.post({"token": connect.token, "event": {"data": "after"}})
    assert error_code(response, 404) == "TOKEN_NOT_FOUND"


@pytest.mark.gen_test(timeout=10)
async def test_buffered_close_alone_ends_the_stream_with_nothing_written(gateway, backend):
    gw = gateway()
    answers = send_during_connect(gw, backend, {"close": True})
    stream = await gw.open()
    assert [ok(a) for a in answers] == [{"status": "buffered"}]
    assert await stream.read_to_end() == b""
    (connect,) = backend.of("connect")
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert disconnect.body["reason"] == "server_closed"


@pytest.mark.gen_test(timeout=10)
async def test_buffered_token_alone_writes_nothing(gateway, backend):
    gw = gateway()
    answers = send_during_connect(gw, backend, {}, {"close": False})
    stream = await gw.open()
    assert [ok(a) for a in answers] == [{"status": "buffered"}] * 2
    (connect,) = backend.of("connect")
    await gw.send({"token": connect.token, "event": {"data": "first"}})
    assert (await stream.wait_events(1))[0].data == "first"
    assert bytes(stream.raw) == b"data: first\n\n"


@pytest.mark.gen_test(timeout=10)
async def test_invalid_send_during_connect_is_400_not_buffered(gateway, backend):
    gw = gateway()
    answers = send_during_connect(
        gw, backend, {"event": {"data": 1}}, {"close": "yes"}, {"event": {"data": "ok"}}
    )
    stream = await gw.open()
    assert error_code(answers[0], 400) == "INVALID_EVENT_DATA_MISSING"
    assert error_code(answers[1], 400) == "INVALID_CLOSE_TYPE"
    assert ok(answers[2]) == {"status": "buffered"}
    (connect,) = backend.of("connect")
    await gw.send({"token": connect.token, "event": {"data": "live"}})
    await stream.wait_events(2)
    assert bytes(stream.raw) == b"data: ok\n\ndata: live\n\n"
