"""The exactly-once disconnect rule over real loopback sockets (PROTOCOL.md section 2).

The backend hears ``disconnect`` once for every token it may believe connected (2xx, or no
answer in time), never for one it refused or could not be asked about. Absences are proved by
opening and closing a later stream and waiting for *its* disconnect, which the gateway schedules
after any it owed the earlier one.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.backend import Answer
from tests.support.helpers import (
    assert_json_error,
    connects_for,
    listen_also_on,
    open_and_close_another,
    read_to_clean_end,
)
from tests.support.ports import unused_port
from tests.support.raw_http import send_request


def assert_disconnect(callback, connect, reason: str, detail: str | None = None) -> None:
    """``callback`` is the disconnect for ``connect``'s token, with ``reason`` (and ``detail``)
    and the request captured at connect; ``detail`` ``None`` means "not checked"."""
    body = callback.body
    assert body["action"] == "disconnect"
    assert body["token"] == connect.token
    assert body["reason"] == reason, body
    assert body["request"] == connect.body["request"]
    assert set(body) <= {"action", "reason", "token", "request", "detail"}, body
    if detail is not None:
        assert body.get("detail") == detail, body
    assert callback.headers["content-type"].split(";")[0].strip() == "application/json"


def answers_by_path(answers: dict[str, Answer]):
    """An ``answer_for`` choosing the answer by the connect's URL (default: 200)."""
    return lambda body: answers.get(body["request"]["url"], Answer())


async def assert_token_is_gone(gw, token: str) -> None:
    code, body = await gw.send({"token": token, "event": {"data": "too late"}})
    assert code == 404 and body["error"]["code"] == "TOKEN_NOT_FOUND", (code, body)


# -- client_closed ------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_client_leaving_sends_one_client_closed_disconnect_with_the_connect_request(
    gateway, backend
):
    gw = gateway()
    stream = await gw.open(
        "/sse/leave?x=1&x=2", headers=[("Authorization", "Bearer t"), ("X-Request-ID", "rid-1")]
    )
    (connect,) = await backend.wait_for_calls("connect")
    stream.close()
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "client_closed")
    assert disconnect.headers.get("x-request-id") == "rid-1"

    await open_and_close_another(gw, backend, "/sse/second")
    assert len(backend.of("disconnect", connect.token)) == 1
    await assert_token_is_gone(gw, connect.token)


# -- server_closed ------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_close_true_writes_the_event_then_ends_the_stream_cleanly(gateway, backend):
    gw = gateway()
    stream = await gw.open("/sse/bye")
    (connect,) = await backend.wait_for_calls("connect")
    code, body = await gw.send(
        {"token": connect.token, "event": {"name": "bye", "data": "last"}, "close": True}
    )
    assert (code, body) == (200, {"status": "ok"})
    assert await read_to_clean_end(stream), "the stream was cut, not ended with its last chunk"
    assert bytes(stream.raw) == b"event: bye\ndata: last\n\n"

    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "server_closed")
    await assert_token_is_gone(gw, connect.token)
    await open_and_close_another(gw, backend, "/sse/second")
    assert len(backend.of("disconnect", connect.token)) == 1


@pytest.mark.gen_test(timeout=10)
async def test_close_true_without_event_ends_the_stream_with_server_closed(gateway, backend):
    gw = gateway()
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    assert await gw.send({"token": connect.token, "close": True}) == (200, {"status": "ok"})
    assert await read_to_clean_end(stream)
    assert bytes(stream.raw) == b""
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "server_closed")


@pytest.mark.gen_test(timeout=10)
async def test_closing_never_waits_for_the_disconnect_callback(gateway, backend):
    backend.disconnect_answer = Answer(delay=1.0)
    gw = gateway()
    stream = await gw.open()
    (connect,) = await backend.wait_for_calls("connect")
    started = time.monotonic()
    code, body = await gw.send({"token": connect.token, "event": {"data": "x"}, "close": True})
    assert (code, body) == (200, {"status": "ok"})
    assert await read_to_clean_end(stream)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, elapsed  # the backend only answers the disconnect after 1 s
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "server_closed")
    backend.close()  # cuts its 1 s pause short, so the teardown need not wait for it


# -- during the connect callback ----------------------------------------------------------------


@pytest.mark.gen_test(timeout=10)
async def test_client_leaving_during_a_slow_accepting_callback_gets_client_closed(gateway, backend):
    backend.answer_for = answers_by_path({"/sse/slow": Answer(delay=0.5)})
    gw = gateway()
    _, writer = await send_request(gw.port, "/sse/slow")
    (connect,) = await backend.wait_for_calls("connect")
    writer.close()
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "client_closed")

    await open_and_close_another(gw, backend, "/sse/second")
    assert len(backend.of("disconnect", connect.token)) == 1
    connections = await gw.get("/internal/connections", internal=True)
    assert json.loads(connections.body)["count"] == 0
    await assert_token_is_gone(gw, connect.token)


@pytest.mark.gen_test(timeout=10)
async def test_client_leaving_before_a_callback_timeout_gets_client_closed(gateway, backend):
    backend.answer_for = answers_by_path({"/sse/slow": Answer(delay=1.0)})
    gw = gateway(callback_timeout_seconds=0.2)
    _, writer = await send_request(gw.port, "/sse/slow")
    (connect,) = await backend.wait_for_calls("connect")
    writer.close()
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "client_closed")

    await open_and_close_another(gw, backend, "/sse/second")
    assert len(backend.of("disconnect", connect.token)) == 1


@pytest.mark.gen_test(timeout=10)
async def test_callback_timeout_gives_504_and_disconnect_error_connect_timeout(gateway, backend):
    backend.answer_for = answers_by_path({"/sse/slow": Answer(delay=1.0)})
    gw = gateway(callback_timeout_seconds=0.2)
    stream = await gw.stream("/sse/slow")
    await assert_json_error(stream, 504, "GATEWAY_TIMEOUT")
    (connect,) = connects_for(backend, "/sse/slow")
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "error", detail="connect_timeout")

    await open_and_close_another(gw, backend, "/sse/second")
    assert len(backend.of("disconnect", connect.token)) == 1


@pytest.mark.gen_test(timeout=10)
async def test_unusable_connect_answer_gives_502_and_disconnect_error(gateway, backend):
    backend.answer_for = answers_by_path({"/sse/bad": Answer(body=b'{"channels": "x"}')})
    gw = gateway()
    stream = await gw.stream("/sse/bad")
    await assert_json_error(stream, 502, "BAD_CALLBACK_RESPONSE")
    (connect,) = connects_for(backend, "/sse/bad")
    (disconnect,) = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnect, connect, "error", detail="bad_callback_response")

    await open_and_close_another(gw, backend, "/sse/second")
    assert len(backend.of("disconnect", connect.token)) == 1


# -- no disconnect for tokens the backend never accepted ----------------------------------------


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (Answer(status=401), 401),
        (Answer(status=403), 403),
        (Answer(status=500), 500),
        (Answer(status=302, headers={"Location": "/elsewhere"}), 302),
    ],
    ids=["401", "403", "500", "302"],
)
@pytest.mark.gen_test(timeout=10)
async def test_no_disconnect_after_a_refusal(gateway, backend, answer, status):
    backend.answer_for = answers_by_path({"/sse/refused": answer})
    gw = gateway()
    stream = await gw.stream("/sse/refused")
    assert stream.status == status
    await stream.read_to_end()
    refused = connects_for(backend, "/sse/refused")
    assert refused

    await open_and_close_another(gw, backend, "/sse/second")
    assert all(backend.of("disconnect", c.token) == [] for c in refused)
    assert len(backend.of("disconnect")) == 1


@pytest.mark.gen_test(timeout=10)
async def test_no_disconnect_after_a_refused_callback_connection(gateway, backend, monkeypatch):
    port = unused_port()
    gw = gateway(callback_url="http://127.0.0.1:%d/callback" % port)
    # Nothing listens on the port, so a wrongly owed disconnect would be refused too: record
    # every disconnect the gateway schedules, not only those that reach a backend.
    scheduled: list[str] = []
    client = gw.gateway.backend
    original = client.disconnect

    def spy(token, *args, **kwargs):
        scheduled.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(client, "disconnect", spy)
    stream = await gw.stream("/sse/refused")
    await assert_json_error(stream, 503, "BACKEND_UNAVAILABLE")
    assert backend.calls == []

    listen_also_on(backend, port)  # the backend comes up: later streams are accepted
    disconnect = await open_and_close_another(gw, backend, "/sse/second")
    assert scheduled == [disconnect.token]
    assert [c.token for c in backend.of("disconnect")] == [disconnect.token]


# -- cleanup whatever the disconnect callback does ---------------------------------------------


@pytest.mark.parametrize(
    "disconnect_answer",
    [Answer(status=500), Answer(status=404), Answer(drop=True)],
    ids=["500", "404", "dropped"],
)
@pytest.mark.gen_test(timeout=10)
async def test_stream_is_cleaned_up_even_when_the_disconnect_callback_fails(
    gateway, backend, disconnect_answer
):
    backend.disconnect_answer = disconnect_answer
    gw = gateway()
    stream = await gw.open("/sse/first")
    (connect,) = await backend.wait_for_calls("connect")
    stream.close()
    disconnects = await backend.wait_for_calls("disconnect", token=connect.token)
    assert_disconnect(disconnects[0], connect, "client_closed")

    # Later streams still work, and by the time the second disconnect is in, the first
    # (failed) callback has long been answered.
    later = await gw.open("/sse/later")
    (later_connect,) = connects_for(backend, "/sse/later")
    assert await gw.send({"token": later_connect.token, "event": {"data": "ok"}}) == (
        200,
        {"status": "ok"},
    )
    assert [e.data for e in await later.wait_events(1)] == ["ok"]
    later.close()
    await backend.wait_for_calls("disconnect", token=later_connect.token)

    connections = await gw.get("/internal/connections", internal=True)
    assert json.loads(connections.body)["count"] == 0
    await assert_token_is_gone(gw, connect.token)
    await assert_token_is_gone(gw, later_connect.token)


@pytest.mark.gen_test(timeout=10)
async def test_a_disconnect_the_backend_drops_is_resent_once_at_most(gateway, backend):
    # As for connects (see test_stream.py): a callback whose reused keep-alive connection is
    # closed without an answer goes out once more on a fresh connection, identical, and the
    # gateway itself never repeats it.
    backend.disconnect_answer = Answer(drop=True)
    gw = gateway()
    stream = await gw.open("/sse/first")
    (connect,) = await backend.wait_for_calls("connect")
    stream.close()
    await backend.wait_for_calls("disconnect", token=connect.token)
    backend.disconnect_answer = Answer()
    await open_and_close_another(gw, backend, "/sse/second")
    sent = backend.of("disconnect", connect.token)
    assert 1 <= len(sent) <= 2
    assert len({c.raw for c in sent}) == 1


@pytest.mark.parametrize(
    "answer", [Answer(status=401, delay=0.3), Answer(status=500, delay=0.3)], ids=["401", "500"]
)
@pytest.mark.gen_test(timeout=10)
async def test_client_leaving_during_a_refusing_callback_gets_no_disconnect(
    gateway, backend, answer
):
    # The second stream's connect is answered after the first's refusal (0.4 s > 0.3 s), so
    # its disconnect comes after anything the refusal could have caused.
    backend.answer_for = answers_by_path({"/sse/slow": answer, "/sse/second": Answer(delay=0.4)})
    gw = gateway()
    _, writer = await send_request(gw.port, "/sse/slow")
    (connect,) = await backend.wait_for_calls("connect")
    writer.close()
    await open_and_close_another(gw, backend, "/sse/second")
    assert backend.of("disconnect", connect.token) == []


@pytest.mark.gen_test(timeout=10)
async def test_each_of_many_streams_gets_exactly_one_disconnect(gateway, backend):
    gw = gateway()
    paths = ["/sse/n%d" % i for i in range(20)]
    streams = await asyncio.gather(*(gw.open(p) for p in paths))
    await backend.wait_for_calls("connect", count=len(paths))
    tokens = [connects_for(backend, p)[0].token for p in paths]
    # Half leave, half are closed by the backend.
    for i, (stream, token) in enumerate(zip(streams, tokens, strict=True)):
        if i % 2:
            stream.close()
        else:
            assert await gw.send({"token": token, "close": True}) == (200, {"status": "ok"})
    await backend.wait_for_calls("disconnect", count=len(paths))
    await open_and_close_another(gw, backend, "/sse/last")
    for i, token in enumerate(tokens):
        (disconnect,) = backend.of("disconnect", token)
        assert disconnect.body["reason"] == ("client_closed" if i % 2 else "server_closed")
