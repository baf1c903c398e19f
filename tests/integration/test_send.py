"""``POST /internal/send`` over HTTP (wire contract sections 1, 4, 4.1 and 4.2)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from tests.support.backend import Answer
from tests.support.helpers import open_with_token
from tests.support.internal import cors_headers, error_code, raw_request

UNKNOWN = "00000000-0000-4000-8000-000000000000"  # a well-formed token no stream holds

# --------------------------------------------------------------------------------------------
# Validation (4.1): each rule through HTTP. The token is unknown, so a 400 also proves that
# validation happens before the lookup (a valid body would get 404).

# (body, code)
INVALID: list[Any] = [
    # INVALID_TOKEN_MISSING
    pytest.param({}, "INVALID_TOKEN_MISSING", id="empty-object"),
    pytest.param({"event": {"data": "x"}}, "INVALID_TOKEN_MISSING", id="no-token"),
    pytest.param({"token": None}, "INVALID_TOKEN_MISSING", id="token-null"),
    pytest.param({"token": ""}, "INVALID_TOKEN_MISSING", id="token-empty"),
    pytest.param({"token": 17}, "INVALID_TOKEN_MISSING", id="token-number"),
    pytest.param({"token": [UNKNOWN]}, "INVALID_TOKEN_MISSING", id="token-list"),
    pytest.param({"channel": ""}, "INVALID_TOKEN_MISSING", id="channel-empty"),
    pytest.param({"channel": 5}, "INVALID_TOKEN_MISSING", id="channel-number"),
    pytest.param({"token": None, "channel": None}, "INVALID_TOKEN_MISSING", id="both-null"),
    pytest.param(
        {"token": UNKNOWN, "channel": "news", "event": {"data": "x"}},
        "INVALID_TOKEN_MISSING",
        id="token-and-channel",
    ),
    # INVALID_EVENT_TYPE
    pytest.param({"token": UNKNOWN, "event": None}, "INVALID_EVENT_TYPE", id="event-null"),
    pytest.param({"token": UNKNOWN, "event": "hi"}, "INVALID_EVENT_TYPE", id="event-string"),
    pytest.param({"token": UNKNOWN, "event": ["hi"]}, "INVALID_EVENT_TYPE", id="event-list"),
    pytest.param({"token": UNKNOWN, "event": 1}, "INVALID_EVENT_TYPE", id="event-number"),
    # INVALID_EVENT_DATA_MISSING
    pytest.param({"token": UNKNOWN, "event": {}}, "INVALID_EVENT_DATA_MISSING", id="no-data"),
    pytest.param(
        {"token": UNKNOWN, "event": {"name": "n"}}, "INVALID_EVENT_DATA_MISSING", id="name-only"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": None}}, "INVALID_EVENT_DATA_MISSING", id="data-null"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": 1}}, "INVALID_EVENT_DATA_MISSING", id="data-number"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": {"a": 1}}},
        "INVALID_EVENT_DATA_MISSING",
        id="data-object",
    ),
    # INVALID_EVENT_NAME_TYPE
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "name": None}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-null",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "name": 3}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-number",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "name": "a\nb"}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-lf",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "name": "a\rb"}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-cr",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "name": "a\x00b"}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-nul",
    ),
    # INVALID_EVENT_ID
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "id": None}}, "INVALID_EVENT_ID", id="id-null"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "id": 17}}, "INVALID_EVENT_ID", id="id-number"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "id": "1\n"}}, "INVALID_EVENT_ID", id="id-lf"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "id": "1\r2"}}, "INVALID_EVENT_ID", id="id-cr"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "id": "\x00"}}, "INVALID_EVENT_ID", id="id-nul"
    ),
    # INVALID_CLOSE_TYPE
    pytest.param({"token": UNKNOWN, "close": None}, "INVALID_CLOSE_TYPE", id="close-null"),
    pytest.param({"token": UNKNOWN, "close": "true"}, "INVALID_CLOSE_TYPE", id="close-string"),
    pytest.param({"token": UNKNOWN, "close": 1}, "INVALID_CLOSE_TYPE", id="close-one"),
    pytest.param({"token": UNKNOWN, "close": 0}, "INVALID_CLOSE_TYPE", id="close-zero"),
    pytest.param(
        {"channel": "news", "event": {"data": "x"}, "close": True},
        "INVALID_CLOSE_TYPE",
        id="channel-close-true",
    ),
]

# A body breaking two rules gets the code of the earlier one in the table.
ORDER: list[Any] = [
    pytest.param({"event": 5, "close": "x"}, "INVALID_TOKEN_MISSING", id="token-before-event"),
    pytest.param(
        {"token": "", "event": {"data": "x", "id": 1}},
        "INVALID_TOKEN_MISSING",
        id="token-before-id",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": "x", "close": "x"},
        "INVALID_EVENT_TYPE",
        id="event-type-before-close",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"name": 1}},
        "INVALID_EVENT_DATA_MISSING",
        id="data-before-name",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"id": 1}}, "INVALID_EVENT_DATA_MISSING", id="data-before-id"
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "name": 1, "id": 1}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-before-id",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "name": "a\n", "id": 1}, "close": 1},
        "INVALID_EVENT_NAME_TYPE",
        id="name-before-close",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": "x", "id": 1}, "close": 1},
        "INVALID_EVENT_ID",
        id="id-before-close",
    ),
    pytest.param(
        {"token": UNKNOWN, "event": {"data": 1}, "close": "yes"},
        "INVALID_EVENT_DATA_MISSING",
        id="data-before-close",
    ),
]


@pytest.mark.parametrize(("body", "code"), INVALID + ORDER)
@pytest.mark.gen_test(timeout=10)
async def test_invalid_send_is_400_with_the_code_of_the_first_rule_broken(gateway, body, code):
    gw = gateway()
    response = await gw.post(body)
    assert error_code(response, 400) == code


# (raw body, description)
NOT_JSON: list[Any] = [
    pytest.param(b"not json", id="garbage"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b'{"token": "x"', id="truncated"),
    pytest.param(b'{"token": "x",}', id="trailing-comma"),
    pytest.param(b'{"token": "\xff\xfe"}', id="invalid-utf8"),
    pytest.param(b"\xc3(", id="invalid-utf8-only"),
    pytest.param(b'{"token": "\\ud800"}', id="lone-surrogate-escape"),
    pytest.param(b'{"token": "t", "event": {"data": "a\\udc00b"}}', id="lone-low-surrogate"),
    pytest.param(b'{"\\ud800": 1, "token": "t"}', id="lone-surrogate-in-key"),
    pytest.param(b'"a string"', id="top-level-string"),
    pytest.param(b"42", id="top-level-number"),
    pytest.param(b"null", id="top-level-null"),
    pytest.param(b"true", id="top-level-true"),
    pytest.param(b'{"token": "t", "event": {"data": NaN}}', id="nan-constant"),
]


@pytest.mark.parametrize("raw", NOT_JSON)
@pytest.mark.gen_test(timeout=10)
async def test_body_that_is_not_a_json_object_or_array_is_invalid_json(gateway, raw):
    gw = gateway()
    response = await gw.post(None, raw=raw)
    assert error_code(response, 400) == "INVALID_JSON"


@pytest.mark.gen_test(timeout=10)
async def test_valid_send_to_unknown_token_is_404_token_not_found(gateway):
    gw = gateway()
    response = await gw.post({"token": UNKNOWN, "event": {"data": "x"}})
    assert error_code(response, 404) == "TOKEN_NOT_FOUND"


# --------------------------------------------------------------------------------------------
# Delivery to a token


@pytest.mark.gen_test(timeout=10)
async def test_send_writes_the_event_in_sse_wire_format_and_answers_ok(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    response = await gw.post(
        {"token": token, "event": {"name": "update", "data": "line 1\nline 2", "id": "17"}}
    )
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.body) == {"status": "ok"}
    await stream.wait_events(1)
    assert bytes(stream.raw) == b"id: 17\nevent: update\ndata: line 1\ndata: line 2\n\n"


@pytest.mark.gen_test(timeout=10)
async def test_empty_data_is_written_as_one_empty_data_line(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    assert await gw.send({"token": token, "event": {"data": ""}}) == (200, {"status": "ok"})
    await gw.send({"token": token, "event": {"data": "next"}})
    events = await stream.wait_events(2)
    assert [e.data for e in events] == ["", "next"]
    assert bytes(stream.raw) == b"data: \n\ndata: next\n\n"


@pytest.mark.gen_test(timeout=10)
async def test_token_alone_is_a_no_op_that_writes_nothing(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    assert await gw.send({"token": token}) == (200, {"status": "ok"})
    assert await gw.send({"token": token, "close": False}) == (200, {"status": "ok"})
    assert await gw.send({"token": token, "event": {"data": "later"}}) == (200, {"status": "ok"})
    events = await stream.wait_events(1)
    assert events[0].data == "later"
    assert bytes(stream.raw) == b"data: later\n\n"  # nothing was written before it


@pytest.mark.gen_test(timeout=10)
async def test_event_with_close_is_written_before_the_stream_ends(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    status, body = await gw.send({"token": token, "event": {"data": "bye"}, "close": True})
    assert (status, body) == (200, {"status": "ok"})
    raw = await stream.read_to_end()
    assert stream.ended
    assert raw == b"data: bye\n\n"
    (disconnect,) = await backend.wait_for_calls("disconnect", token=token)
    assert disconnect.body["reason"] == "server_closed"


@pytest.mark.gen_test(timeout=10)
async def test_token_answers_404_after_close(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    assert await gw.send({"token": token, "close": True}) == (200, {"status": "ok"})
    assert await stream.read_to_end() == b""
    response = await gw.post({"token": token, "event": {"data": "too late"}})
    assert error_code(response, 404) == "TOKEN_NOT_FOUND"
    response = await gw.post({"token": token, "close": True})
    assert error_code(response, 404) == "TOKEN_NOT_FOUND"


# --------------------------------------------------------------------------------------------
# Content type, body size, routes, CORS


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.gen_test(timeout=10)
async def test_non_json_content_type_is_415_json_error(gateway, backend, content_type):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    response = await gw.post(
        {"token": token, "event": {"data": "no"}}, headers={"Content-Type": content_type}
    )
    assert error_code(response, 415) == "UNSUPPORTED_MEDIA_TYPE"
    # The refused send was not delivered: the next event is the first on the stream.
    await gw.send({"token": token, "event": {"data": "yes"}})
    await stream.wait_events(1)
    assert bytes(stream.raw) == b"data: yes\n\n"


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
@pytest.mark.gen_test(timeout=10)
async def test_json_content_types_are_accepted(gateway, backend, content_type):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    status, body = await gw.send(
        {"token": token, "event": {"data": "x"}}, headers={"Content-Type": content_type}
    )
    assert (status, body) == (200, {"status": "ok"})
    assert (await stream.wait_events(1))[0].data == "x"


@pytest.mark.gen_test(timeout=10)
async def test_missing_content_type_is_accepted(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    body = json.dumps({"token": token, "event": {"data": "untyped"}}).encode()
    # raw_request sends no header but Host, Connection and Content-Length.
    response = await raw_request(gw.port, "POST", "/internal/send", body=body)
    assert response.code == 200, response.body
    assert response.json() == {"status": "ok"}
    assert (await stream.wait_events(1))[0].data == "untyped"


def _body_of_size(size: int, token: str = UNKNOWN) -> bytes:
    """A valid send of exactly ``size`` bytes (padded in the event data)."""
    empty = json.dumps({"token": token, "event": {"data": ""}}).encode()
    body = json.dumps({"token": token, "event": {"data": "x" * (size - len(empty))}}).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("size", [1001, 5000, 200_000])
@pytest.mark.gen_test(timeout=10)
async def test_body_over_max_body_bytes_is_413_json_error(gateway, size):
    gw = gateway(max_body_bytes=1000)
    response = await gw.post(None, raw=_body_of_size(size))
    assert error_code(response, 413) == "PAYLOAD_TOO_LARGE"


@pytest.mark.gen_test(timeout=10)
async def test_chunked_body_over_max_body_bytes_is_413_json_error(gateway):
    gw = gateway(max_body_bytes=1000)
    response = await raw_request(
        gw.port,
        "POST",
        "/internal/send",
        body=_body_of_size(3000),
        headers={"Content-Type": "application/json"},
        chunked=True,
    )
    assert error_code(response, 413) == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("size", [999, 1000])
@pytest.mark.gen_test(timeout=10)
async def test_body_up_to_max_body_bytes_is_accepted(gateway, backend, size):
    gw = gateway(max_body_bytes=1000)
    stream, token = await open_with_token(gw, backend)
    body = _body_of_size(size, token)
    assert await gw.send(None, raw=body) == (200, {"status": "ok"})
    events = await stream.wait_events(1)
    assert events[0].data == json.loads(body)["event"]["data"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "NOT_FOUND"),
        ("POST", "/nope", 404, "NOT_FOUND"),
        ("POST", "/internal/nope", 404, "NOT_FOUND"),
        ("GET", "/internal/nope", 404, "NOT_FOUND"),
        # The internal API is /internal/...; /internal itself is an ordinary path (a stream
        # under SSE_PATH_PREFIX=/, see test_stream), here outside the prefix like /nope.
        ("GET", "/internal/", 404, "NOT_FOUND"),
        ("GET", "/internal/send", 405, "METHOD_NOT_ALLOWED"),
        ("PUT", "/internal/send", 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/internal/send", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/healthz", 405, "METHOD_NOT_ALLOWED"),
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_unknown_routes_and_methods_get_json_errors_never_html(
    gateway, method, path, status, code
):
    gw = gateway()
    body = b"{}" if method in ("POST", "PUT") else b""
    response = await raw_request(
        gw.port,
        method,
        path,
        body=body,
        headers={"Content-Type": "application/json", "Accept": "text/html"},
    )
    assert error_code(response, status) == code
    assert b"<html" not in response.body.lower()


@pytest.mark.gen_test(timeout=10)
async def test_internal_api_carries_no_cors_headers(gateway, backend):
    gw = gateway()  # CORS_ORIGINS defaults to "*": the public endpoints do carry it
    stream, token = await open_with_token(gw, backend)
    assert stream.headers.get("access-control-allow-origin") == "*"
    origin = {"Origin": "https://page.example"}
    ok = await gw.post({"token": token, "event": {"data": "x"}}, headers=origin)
    bad = await gw.post({"token": 1}, headers=origin)
    missing = await gw.post({"token": UNKNOWN}, headers=origin)
    listing = await gw.get("/internal/connections", headers=origin, internal=True)
    preflight = await raw_request(
        gw.port,
        "OPTIONS",
        "/internal/send",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert [ok.code, bad.code, missing.code, listing.code] == [200, 400, 404, 200]
    for response in (ok, bad, missing, listing):
        assert cors_headers(response.headers) == {}, response.effective_url
    assert preflight.code != 204
    assert cors_headers(preflight.headers) == {}


# --------------------------------------------------------------------------------------------
# Channels (ext)


@pytest.mark.gen_test(timeout=10)
async def test_channel_send_without_subscribers_is_ok(gateway):
    gw = gateway()
    assert await gw.send({"channel": "news", "event": {"data": "x"}}) == (200, {"status": "ok"})
    assert await gw.send({"channel": "news"}) == (200, {"status": "ok"})
    assert await gw.send({"channel": "news", "token": None, "event": {"data": "y"}}) == (
        200,
        {"status": "ok"},
    )


@pytest.mark.gen_test(timeout=10)
async def test_channel_event_reaches_subscriber_with_a_decimal_gateway_id(gateway, backend):
    backend.connect_answer = Answer(body=b'{"channels":["news"]}')
    gw = gateway()
    stream, _ = await open_with_token(gw, backend)
    status, body = await gw.send({"channel": "news", "event": {"name": "headline", "data": "hi"}})
    assert (status, body) == (200, {"status": "ok"})
    (event,) = await stream.wait_events(1)
    assert (event.type, event.data) == ("headline", "hi")
    assert event.last_event_id.isascii() and event.last_event_id.isdigit()
    assert bytes(stream.raw) == b"id: %s\nevent: headline\ndata: hi\n\n" % (
        event.last_event_id.encode()
    )


@pytest.mark.gen_test(timeout=10)
async def test_channel_event_ids_strictly_increase(gateway, backend):
    backend.connect_answer = Answer(body=b'{"channels":["news","sport"]}')
    gw = gateway()
    stream, _ = await open_with_token(gw, backend)
    for i, channel in enumerate(["news", "sport", "news", "other", "sport", "news"]):
        assert await gw.send({"channel": channel, "event": {"data": str(i)}}) == (
            200,
            {"status": "ok"},
        )
    events = await stream.wait_events(5)
    assert [e.data for e in events] == ["0", "1", "2", "4", "5"]
    ids = [int(e.last_event_id) for e in events]
    assert all(a < b for a, b in zip(ids, ids[1:], strict=False)), ids


@pytest.mark.gen_test(timeout=10)
async def test_channel_event_reaches_only_subscribers(gateway, backend):
    backend.answer_for = lambda body: Answer(
        body=b'{"channels":["news"]}' if "news" in body["request"]["url"] else b""
    )
    gw = gateway()
    subscribed = await gw.open("/sse/news")
    other, other_token = await open_with_token(gw, backend, "/sse/other")
    await backend.wait_for_calls("connect", count=2)
    await gw.send({"channel": "news", "event": {"data": "for news"}})
    await gw.send({"token": other_token, "event": {"data": "direct"}})
    assert (await subscribed.wait_events(1))[0].data == "for news"
    assert [e.data for e in await other.wait_events(1)] == ["direct"]
    assert bytes(other.raw) == b"data: direct\n\n"


@pytest.mark.gen_test(timeout=10)
async def test_channel_with_close_false_is_allowed(gateway, backend):
    backend.connect_answer = Answer(body=b'{"channels":["news"]}')
    gw = gateway()
    stream, _ = await open_with_token(gw, backend)
    status, body = await gw.send({"channel": "news", "event": {"data": "x"}, "close": False})
    assert (status, body) == (200, {"status": "ok"})
    assert (await stream.wait_events(1))[0].data == "x"


@pytest.mark.gen_test(timeout=10)
async def test_channel_with_close_true_is_400_and_publishes_nothing(gateway, backend):
    backend.connect_answer = Answer(body=b'{"channels":["news"]}')
    gw = gateway()
    stream, _ = await open_with_token(gw, backend)
    response = await gw.post({"channel": "news", "event": {"data": "no"}, "close": True})
    assert error_code(response, 400) == "INVALID_CLOSE_TYPE"
    await gw.send({"channel": "news", "event": {"data": "yes"}})
    assert [e.data for e in await stream.wait_events(1)] == ["yes"]


# --------------------------------------------------------------------------------------------
# Batches (ext)


@pytest.mark.gen_test(timeout=10)
async def test_batch_answers_each_item_in_order_as_if_sent_alone(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    batch = [
        {"token": token, "event": {"data": "one"}},
        {"token": token, "event": "not an object"},
        5,
        {"token": UNKNOWN, "event": {"data": "lost"}},
        {"channel": "news", "event": {"data": "nobody"}},
        {"token": token, "close": "no"},
        {"token": token, "event": {"data": "two"}},
    ]
    status, body = await gw.send(batch)
    assert status == 200
    results = body["results"]
    assert [r["status"] for r in results] == [200, 400, 400, 404, 200, 400, 200]
    assert results[0]["body"] == {"status": "ok"}
    assert results[4]["body"] == {"status": "ok"}
    assert results[6]["body"] == {"status": "ok"}
    codes = [r["body"]["error"]["code"] for r in results if r["status"] != 200]
    assert codes == ["INVALID_EVENT_TYPE", "INVALID_JSON", "TOKEN_NOT_FOUND", "INVALID_CLOSE_TYPE"]
    for result in results:
        if result["status"] != 200:
            assert set(result["body"]) == {"error"}
            assert set(result["body"]["error"]) == {"code", "message"}
            assert isinstance(result["body"]["error"]["message"], str)
    # Each item's answer equals the one it gets alone.
    for item, result in zip(batch[1:4], results[1:4], strict=True):
        assert (await gw.send(item))[0] == result["status"]
    events = await stream.wait_events(2)
    assert [e.data for e in events] == ["one", "two"]


@pytest.mark.gen_test(timeout=10)
async def test_empty_batch_answers_empty_results(gateway):
    gw = gateway()
    assert await gw.send([]) == (200, {"results": []})


@pytest.mark.gen_test(timeout=10)
async def test_batch_items_are_applied_in_order(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend)
    batch: list[Any] = [{"token": token, "event": {"data": str(i)}} for i in range(20)]
    batch += [{"token": token, "event": {"data": "last"}, "close": True}]
    batch += [{"token": token, "event": {"data": "after close"}}]
    status, body = await gw.send(batch)
    assert status == 200
    assert [r["status"] for r in body["results"]] == [200] * 21 + [404]
    assert body["results"][-1]["body"]["error"]["code"] == "TOKEN_NOT_FOUND"
    await stream.read_to_end()
    assert [e.data for e in stream.events] == [str(i) for i in range(20)] + ["last"]


@pytest.mark.gen_test(timeout=10)
async def test_batch_publishes_to_channels_in_order(gateway, backend):
    backend.connect_answer = Answer(body=b'{"channels":["news"]}')
    gw = gateway()
    stream, _ = await open_with_token(gw, backend)
    batch = [{"channel": "news", "event": {"data": c}} for c in "abcde"]
    status, body = await gw.send(batch)
    assert (status, body) == (200, {"results": [{"status": 200, "body": {"status": "ok"}}] * 5})
    events = await stream.wait_events(5)
    assert [e.data for e in events] == list("abcde")
    ids = [int(e.last_event_id) for e in events]
    assert ids == sorted(set(ids))


# --------------------------------------------------------------------------------------------
# Connection handling of the answer: kept alive as HTTP/1.1 and HTTP/1.0 say, pipelining in
# order, and closed when the client asks.


async def _post_raw(writer, version: str, body: bytes, connection: str | None) -> None:
    head = "POST /internal/send %s\r\nHost: x\r\nContent-Type: application/json\r\n" % version
    head += "Content-Length: %d\r\n" % len(body)
    if connection is not None:
        head += "Connection: %s\r\n" % connection
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()


async def _read_answer(reader) -> tuple[bytes, dict[str, str], bytes]:
    status_line = await asyncio.wait_for(reader.readline(), 5)
    headers: dict[str, str] = {}
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status_line, headers, body


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "version, connection, kept, header",
    [
        ("HTTP/1.1", None, True, None),
        ("HTTP/1.1", "close", False, "close"),
        ("HTTP/1.0", None, False, None),
        ("HTTP/1.0", "keep-alive", True, "Keep-Alive"),
    ],
)
async def test_the_answer_keeps_the_connection_alive_as_the_request_asks(
    gateway, version, connection, kept, header
):
    gw = gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        body = json.dumps({"channel": "c", "event": {"data": "x"}}).encode()
        await _post_raw(writer, version, body, connection)
        status_line, headers, answer = await _read_answer(reader)
        assert status_line.startswith(b"HTTP/1.1 200 "), status_line
        assert json.loads(answer) == {"status": "ok"}
        assert headers["content-type"] == "application/json"
        assert "date" in headers
        assert headers.get("connection") == header
        if kept:
            await _post_raw(writer, version, body, connection)
            status_line, _, answer = await _read_answer(reader)
            assert status_line.startswith(b"HTTP/1.1 200 ") and json.loads(answer)["status"] == "ok"
        else:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the gateway
    finally:
        writer.close()


@pytest.mark.gen_test
async def test_pipelined_sends_are_answered_in_order(gateway, backend):
    gw = gateway()
    stream, token = await open_with_token(gw, backend, "/sse/p")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        bodies = [
            json.dumps({"token": token, "event": {"data": str(i)}}).encode() for i in range(20)
        ] + [json.dumps({"token": UNKNOWN}).encode()]
        for body in bodies:  # all written before the first answer is read
            await _post_raw(writer, "HTTP/1.1", body, None)
        answers = [await _read_answer(reader) for _ in bodies]
        assert [json.loads(a[2]) for a in answers[:20]] == [{"status": "ok"}] * 20
        assert answers[20][0].startswith(b"HTTP/1.1 404 ")
        events = await stream.wait_events(20)
        assert [e.data for e in events] == [str(i) for i in range(20)]
    finally:
        writer.close()


@pytest.mark.gen_test(timeout=60)
async def test_pipelined_answers_larger_than_the_socket_takes_arrive_whole_and_in_order(gateway):
    # A client with a small receive buffer: each batch's answer (about 2 MB) is more than
    # the gateway's socket takes at once, so the rest waits in the gateway's buffer while the
    # next requests wait for it.
    gw = gateway()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        batches = [
            json.dumps([{"token": "gone-%d-%d" % (n, i)} for i in range(20000)]).encode()
            for n in range(4)
        ]

        async def write_all() -> None:
            for body in batches:
                await _post_raw(writer, "HTTP/1.1", body, None)

        writing = asyncio.ensure_future(write_all())
        answers = [await _read_answer(reader) for _ in batches]
        await writing
        for status_line, _, body in answers:
            assert status_line.startswith(b"HTTP/1.1 200 "), status_line
            results = json.loads(body)["results"]
            assert [r["status"] for r in results] == [404] * 20000
        assert len(answers[0][2]) > 1_000_000
    finally:
        writer.close()
