"""The publish socket, ``GET /internal/ws`` (wire contract 4.5), against a real gateway.

Every answer is compared with what ``POST /internal/send`` answers for the same body: the
socket promises the same validation and results.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.integration.test_send import INVALID, NOT_JSON, ORDER, UNKNOWN
from tests.support.backend import Answer
from tests.support.helpers import open_with_token, read_metric, wait_for_metric
from tests.support.internal import error_code
from tests.support.publish_socket import RawSocket, connect, exchange, handshake, upgrade_headers
from tornado_sse_client import websocket


def _values(params: list[Any]) -> list[Any]:
    return [p.values[0] for p in params]


# --------------------------------------------------------------------------------------------
# Answers: the same as /internal/send


@pytest.mark.gen_test(timeout=20)
async def test_every_validation_rule_answers_what_http_answers(gateway):
    gw = gateway()
    conn = await connect(gw.port)
    bodies = _values(INVALID + ORDER)
    for i, body in enumerate(bodies):
        http_status, http_body = await gw.send(body)
        answer = await exchange(conn, {**body, "ref": i})
        assert answer == {"ref": i, "status": http_status, "body": http_body}, body
        assert http_status == 400
    conn.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_message_that_is_not_a_json_object_or_array_is_invalid_json(gateway):
    gw = gateway()
    conn = await connect(gw.port)
    texts = []
    for raw in _values(NOT_JSON):
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue  # not text: a text frame must be UTF-8 (RFC 6455 8.1)
    assert len(texts) >= 10
    for text in texts:
        await conn.write_message(text)
        answer = json.loads(await asyncio.wait_for(conn.read_message(), 5))
        assert answer["ref"] is None and answer["status"] == 400, (text, answer)
        assert answer["body"]["error"]["code"] == "INVALID_JSON", (text, answer)
    conn.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_ref_of_any_json_type_comes_back_as_it_was_sent(gateway):
    gw = gateway()
    conn = await connect(gw.port)
    for ref in [None, 0, -1.5, "abc", "ünï", True, [1, "a", None], {"n": {"deep": [1]}}]:
        answer = await exchange(conn, {"channel": "news", "event": {"data": "x"}, "ref": ref})
        assert answer == {"ref": ref, "status": 200, "body": {"status": "ok"}}
    answer = await exchange(conn, {"channel": "news", "event": {"data": "x"}})
    assert answer == {"ref": None, "status": 200, "body": {"status": "ok"}}
    conn.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_batch_is_answered_once_with_every_result_like_http(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    conn = await connect(gw.port)
    batch = [
        {"token": token, "event": {"data": "one"}},
        {"token": UNKNOWN, "event": {"data": "lost"}},
        {"token": token, "event": {"data": "two", "name": 5}},
        {"channel": "news", "event": {"data": "x"}},
        {"token": token, "event": {"data": "three"}},
    ]
    answer = await exchange(conn, batch)
    http_status, http_body = await gw.send(batch)
    assert answer == {"ref": None, "status": http_status, "body": http_body}
    assert [r["status"] for r in answer["body"]["results"]] == [200, 404, 400, 200, 200]
    assert await exchange(conn, []) == {"ref": None, "status": 200, "body": {"results": []}}
    events = await stream.wait_events(4)  # twice 'one' and 'three': the socket's, then HTTP's
    assert [e.data for e in events] == ["one", "three", "one", "three"]
    conn.close()


# --------------------------------------------------------------------------------------------
# Order and delivery


@pytest.mark.gen_test(timeout=30)
async def test_1000_pipelined_messages_are_answered_in_order_and_delivered_once(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    sock = await RawSocket.open(gw.port)
    count = 1000
    for i in range(count):  # all written before any answer is read
        if i % 100 == 99:
            body: Any = {"token": UNKNOWN, "event": {"data": str(i)}, "ref": "r%d" % i}
        else:
            body = {"token": token, "event": {"data": str(i), "id": str(i)}, "ref": "r%d" % i}
        await sock.send_text(json.dumps(body))
    answers = []
    for _ in range(count):
        message = await sock.receive(10)
        assert message is not None and message.opcode == websocket.OP_TEXT, message
        answers.append(json.loads(message.text))
    assert [a["ref"] for a in answers] == ["r%d" % i for i in range(count)]
    assert [a["status"] for a in answers] == [404 if i % 100 == 99 else 200 for i in range(count)]
    delivered = [str(i) for i in range(count) if i % 100 != 99]
    events = await stream.wait_events(len(delivered), timeout=10)
    assert [e.data for e in events] == delivered
    assert [e.last_event_id for e in events] == delivered
    sock.close()


@pytest.mark.gen_test(timeout=30)
async def test_token_channel_and_user_sends_reach_the_stream_exactly_once(gateway, backend):
    backend.connect_answer = Answer(body=b'{"channels": ["room.7"], "user": "42"}')
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    conn = await connect(gw.port)
    sends = [
        ({"token": token, "event": {"data": "to the token"}}, {"status": "ok"}),
        ({"channel": "room.7", "event": {"data": "to the channel"}}, {"status": "ok"}),
        ({"user": "42", "event": {"data": "to the user"}}, {"status": "ok", "streams": 1}),
    ]
    for i, (body, expected) in enumerate(sends):
        assert await exchange(conn, {**body, "ref": i}) == {
            "ref": i,
            "status": 200,
            "body": expected,
        }
    events = await stream.wait_events(3)
    # A marker sent last over HTTP proves nothing more came from the socket before it.
    assert await gw.send({"token": token, "event": {"data": "end"}}) == (200, {"status": "ok"})
    events = await stream.wait_events(4)
    assert [e.data for e in events] == ["to the token", "to the channel", "to the user", "end"]
    assert await exchange(conn, {"token": token, "close": True}) == {
        "ref": None,
        "status": 200,
        "body": {"status": "ok"},
    }
    await stream.read_to_end()
    (disconnect,) = await backend.wait_for_calls("disconnect", token=token)
    assert disconnect.body["reason"] == "server_closed"
    answer = await exchange(conn, {"token": token, "event": {"data": "late"}})
    assert answer["status"] == 404 and answer["body"]["error"]["code"] == "TOKEN_NOT_FOUND"
    conn.close()


@pytest.mark.gen_test(timeout=30)
async def test_sends_buffered_during_the_connect_callback_keep_their_order(gateway, backend):
    backend.connect_answer = Answer(delay=0.5)
    gw = gateway()
    pending = asyncio.ensure_future(gw.stream("/sse/slow"))
    (connect_call,) = await backend.wait_for_calls("connect", count=1)
    sock = await RawSocket.open(gw.port)
    for i in range(50):
        body = {"token": connect_call.token, "event": {"data": str(i)}, "ref": i}
        await sock.send_text(json.dumps(body))
    await sock.send_text(json.dumps({"channel": "news", "event": {"data": "x"}, "ref": "last"}))
    answers = [json.loads((await sock.receive(5)).text) for _ in range(51)]  # type: ignore[union-attr]
    assert [a["ref"] for a in answers] == [*range(50), "last"]
    assert {a["body"]["status"] for a in answers[:50]} == {"buffered"}
    stream = await pending
    gw.streams.append(stream)
    events = await stream.wait_events(50)
    assert [e.data for e in events] == [str(i) for i in range(50)]
    sock.close()


# --------------------------------------------------------------------------------------------
# Before the upgrade: the rules of /internal/*


@pytest.mark.gen_test(timeout=20)
async def test_without_the_secret_the_answer_is_401_json_and_no_upgrade(gateway):
    gw = gateway(internal_secret="s3cret")
    for extra in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"}]:
        response = await handshake(gw.port, {**upgrade_headers(), **extra})
        assert error_code(response, 401) == "UNAUTHORIZED"
        assert "upgrade" not in response.headers and "sec-websocket-accept" not in response.headers
    for scheme in ["Bearer", "bearer", "BEARER"]:
        sock = await RawSocket.open(gw.port, headers={"Authorization": scheme + " s3cret"})
        await sock.send_text('{"channel": "news", "event": {"data": "x"}}')
        message = await sock.receive()
        assert message is not None and json.loads(message.text)["status"] == 200
        sock.close()


@pytest.mark.gen_test(timeout=20)
async def test_with_internal_port_the_socket_is_there_only(gateway):
    gw = gateway(internal_port=True, internal_secret="s3cret")
    assert gw.internal_port is not None
    response = await handshake(gw.port, upgrade_headers(Authorization="Bearer s3cret"))
    assert error_code(response, 404) == "NOT_FOUND"
    conn = await connect(gw.internal_port, "s3cret")
    answer = await exchange(conn, {"channel": "news", "event": {"data": "x"}, "ref": 1})
    assert answer == {"ref": 1, "status": 200, "body": {"status": "ok"}}
    conn.close()


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({}, 400, "INVALID_UPGRADE", id="plain-get"),
        pytest.param(upgrade_headers(Upgrade="h2c"), 400, "INVALID_UPGRADE", id="upgrade-h2c"),
        pytest.param(
            upgrade_headers(Connection="keep-alive"), 400, "INVALID_UPGRADE", id="no-connection"
        ),
        pytest.param(
            {k: v for k, v in upgrade_headers().items() if k != "Sec-WebSocket-Key"},
            400,
            "INVALID_UPGRADE",
            id="no-key",
        ),
        pytest.param(
            upgrade_headers(Sec_WebSocket_Version="8"), 426, "UPGRADE_REQUIRED", id="version-8"
        ),
        pytest.param(
            upgrade_headers(Origin="https://evil.example"),
            403,
            "CROSS_ORIGIN_REFUSED",
            id="other-origin",
        ),
        pytest.param(
            upgrade_headers(Sec_Fetch_Site="cross-site"),
            403,
            "CROSS_ORIGIN_REFUSED",
            id="cross-site",
        ),
    ],
)
@pytest.mark.gen_test(timeout=20)
async def test_a_request_that_is_no_websocket_handshake_gets_a_json_error(
    gateway, headers, status, code
):
    gw = gateway()
    response = await handshake(gw.port, headers)
    assert error_code(response, status) == code
    if status == 426:
        assert response.headers.get("sec-websocket-version") == "13"


@pytest.mark.gen_test(timeout=20)
async def test_a_page_of_the_same_origin_may_open_it(gateway):
    gw = gateway()
    origin = "http://127.0.0.1:%d" % gw.port
    sock = await RawSocket.open(gw.port, headers={"Origin": origin})
    sock.close()


# --------------------------------------------------------------------------------------------
# Bounds and ends


@pytest.mark.gen_test(timeout=20)
async def test_a_message_over_max_body_bytes_closes_the_socket_with_1009(gateway):
    gw = gateway(max_body_bytes=1000)
    sock = await RawSocket.open(gw.port)
    fits = json.dumps({"channel": "news", "event": {"data": ""}, "ref": ""})
    fits = fits[:-2] + "x" * (1000 - len(fits)) + '"}'
    assert len(fits.encode()) == 1000
    await sock.send_text(fits)
    message = await sock.receive()
    assert message is not None and json.loads(message.text)["status"] == 200
    await sock.send_text(fits[:-2] + 'x"}')  # 1001 bytes
    close = await sock.close_frame()
    assert close is not None and close.code == 1009, close
    sock.close()
    assert (await AsyncHTTPClient().fetch(gw.base_url + "/healthz")).code == 200
    closes = "tornado_sse_publish_socket_closes_total"
    await wait_for_metric(gw.base_url, closes, lambda v: v == 1, why="too_big")


@pytest.mark.parametrize(
    ("opcode", "payload", "code", "why"),
    [
        (websocket.OP_TEXT, b'{"channel": "news", "event": {"data": "\xff"}}', 1007, "not_utf8"),
        (websocket.OP_BINARY, b'{"channel": "news", "event": {"data": "x"}}', 1003, "binary"),
    ],
    ids=["text-not-utf8", "binary"],
)
@pytest.mark.gen_test(timeout=20)
async def test_a_message_that_is_not_utf8_text_closes_the_socket(
    gateway, opcode, payload, code, why
):
    gw = gateway()
    sock = await RawSocket.open(gw.port)
    await sock.send_text(json.dumps({"channel": "news", "event": {"data": "ok"}, "ref": 1}))
    message = await sock.receive()
    assert message is not None and json.loads(message.text)["status"] == 200
    await sock.send_frame(opcode, payload)
    close = await sock.close_frame()
    assert close is not None and close.code == code, close
    sock.close()
    closes = "tornado_sse_publish_socket_closes_total"
    await wait_for_metric(gw.base_url, closes, lambda v: v == 1, why=why)


TOO_BIG = b"x" * 2000  # over the max_body_bytes=1000 of the test below


@pytest.mark.parametrize(
    ("last", "code"),
    [
        ((websocket.OP_TEXT, b'{"channel": "news", "event": {"data": "%s"}}' % TOO_BIG), 1009),
        ((websocket.OP_TEXT, b'{"channel": "news", "event": {"data": "\xff"}}'), 1007),
        ((websocket.OP_BINARY, b"{}"), 1003),
        ((websocket.OP_CLOSE, b"\x03\xe8"), 1000),
    ],
    ids=["too-big", "not-utf8", "binary", "client-close"],
)
@pytest.mark.gen_test(timeout=20)
async def test_answers_of_pipelined_messages_come_before_the_close_that_follows(
    gateway, backend, last, code
):
    gw = gateway(max_body_bytes=1000)
    stream, token = await open_with_token(gw, backend)
    sock = await RawSocket.open(gw.port)
    sends = [
        (websocket.OP_TEXT, json.dumps({"token": token, "event": {"data": str(i)}, "ref": i}))
        for i in range(50)
    ]
    # One write: the gateway applies them in one turn and answers them in one write.
    await sock.send_frames([*((op, text.encode()) for op, text in sends), last])
    refs = []
    for _ in range(51):
        message = await sock.receive()
        assert message is not None
        if message.opcode == websocket.OP_CLOSE:
            assert message.code == code, message
            break
        answer = json.loads(message.text)
        assert answer["status"] == 200, answer
        refs.append(answer["ref"])
    assert refs == list(range(50))
    events = await stream.wait_events(50, timeout=10)
    assert [e.data for e in events] == [str(i) for i in range(50)]
    sock.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_backend_that_does_not_read_its_answers_is_closed(gateway):
    gw = gateway(max_queued_bytes=64 * 1024)
    sock = await RawSocket.open(gw.port, receive_buffer=4096)
    ref = "r" * 60_000  # each answer carries it back: ~60 KB an answer
    message = json.dumps({"token": UNKNOWN, "event": {"data": "x"}, "ref": ref})
    try:
        for _ in range(400):  # ~24 MB of answers: far more than any socket buffers hold
            await sock.send_text(message)
    except (ConnectionError, TimeoutError):
        pass  # the gateway closed the socket meanwhile
    await wait_for_metric(
        gw.base_url,
        "tornado_sse_publish_socket_closes_total",
        lambda v: v == 1,
        timeout=15,
        why="not_reading",
    )
    close = await sock.close_frame(timeout=15)  # queued behind the unread answers, or cut
    assert close is None or close.code == 1008, close
    sock.close()
    # The gateway is fine: it answers, and a new socket works.
    assert (await AsyncHTTPClient().fetch(gw.base_url + "/healthz")).code == 200
    conn = await connect(gw.port)
    answer = await exchange(conn, {"channel": "news", "event": {"data": "x"}, "ref": 1})
    assert answer["status"] == 200
    conn.close()


@pytest.mark.gen_test(timeout=30)
async def test_shutdown_closes_the_socket_with_1001(gateway):
    gw = gateway(callback_url=None)  # no backend: the shutdown closes all there is
    sock = await RawSocket.open(gw.port)
    assert gw.gateway.open_sockets == 1
    await gw.gateway.shutdown()
    close = await sock.close_frame()
    assert close is not None and close.code == 1001, close
    sock.close()
    response = await handshake(gw.port, upgrade_headers())
    assert error_code(response, 503) == "SHUTTING_DOWN"


@pytest.mark.gen_test(timeout=20)
async def test_metrics_count_open_sockets_and_messages_by_status(gateway):
    gw = gateway()
    conn = await connect(gw.port)
    await wait_for_metric(gw.base_url, "tornado_sse_open_publish_sockets", lambda v: v == 1)
    await exchange(conn, {"channel": "news", "event": {"data": "x"}})
    await exchange(conn, {"token": UNKNOWN})
    await exchange(conn, {"token": UNKNOWN})
    name = "tornado_sse_socket_messages_total"
    assert await read_metric(gw.base_url, name, status="200") == 1
    assert await read_metric(gw.base_url, name, status="404") == 2
    conn.close()
    await wait_for_metric(gw.base_url, "tornado_sse_open_publish_sockets", lambda v: v == 0)


@pytest.mark.gen_test(timeout=30)
async def test_a_batch_of_3000_sends_that_each_wait_is_answered_whole(gateway):
    gw = gateway()
    conn = await connect(gw.port)
    batch = [{"channel": "news", "event": {"data": str(i)}} for i in range(3000)]
    answer = await exchange(conn, batch)
    assert answer["status"] == 200
    assert [r["status"] for r in answer["body"]["results"]] == [200] * 3000
    conn.close()
