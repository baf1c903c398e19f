"""Byte-exact tests of the pure protocol core (wire contract sections 3, 3.1, 4.1 and 4.2)."""

from __future__ import annotations

import base64
import json
import sys
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.sse_parser import ParsedEvent, SSEParser, parse
from tornado_sse import protocol
from tornado_sse.errors import InvalidRequest
from tornado_sse.protocol import (
    HEARTBEAT,
    MAX_CHANNEL_LENGTH,
    MAX_CHANNELS,
    Event,
    RequestSnapshot,
    SendRequest,
    bearer_matches,
    capture_headers,
    capture_request,
    connect_body,
    credentials_match,
    decode_json,
    disconnect_body,
    encode,
    encode_comment,
    encode_event,
    encode_retry,
    is_valid_channel,
    parse_connect_answer,
    utf8_text,
    validate_send,
)

MIB = 1024 * 1024

# --------------------------------------------------------------------------------------------
# Event encoding (4.2)

# (data, name, id, exact bytes on the wire)
ENCODE_CASES: list[Any] = [
    pytest.param("hello", None, None, b"data: hello\n\n", id="plain"),
    pytest.param("", None, None, b"data: \n\n", id="empty-data"),
    pytest.param("a\nb", None, None, b"data: a\ndata: b\n\n", id="lf"),
    pytest.param("a\rb", None, None, b"data: a\ndata: b\n\n", id="cr"),
    pytest.param("a\r\nb", None, None, b"data: a\ndata: b\n\n", id="crlf"),
    pytest.param("a\r\n\rb\nc", None, None, b"data: a\ndata: \ndata: b\ndata: c\n\n", id="mixed"),
    pytest.param("\n\r", None, None, b"data: \ndata: \ndata: \n\n", id="lf-then-cr-is-two-breaks"),
    pytest.param("\r\n", None, None, b"data: \ndata: \n\n", id="crlf-only-is-one-break"),
    pytest.param("a\n", None, None, b"data: a\ndata: \n\n", id="trailing-lf"),
    pytest.param("a\r\n", None, None, b"data: a\ndata: \n\n", id="trailing-crlf"),
    pytest.param("\na", None, None, b"data: \ndata: a\n\n", id="leading-lf"),
    pytest.param(" x ", None, None, b"data:  x \n\n", id="spaces-kept"),
    pytest.param("k: v", None, None, b"data: k: v\n\n", id="colon-in-data"),
    pytest.param("a\x00b", None, None, b"data: a\x00b\n\n", id="nul-in-data"),
    pytest.param(
        "a\u2028b\x85c\x0bd\x0ce",
        None,
        None,
        b"data: a\xe2\x80\xa8b\xc2\x85c\x0bd\x0ce\n\n",
        id="other-unicode-breaks-not-split",
    ),
    pytest.param("h\u00e9llo", None, None, b"data: h\xc3\xa9llo\n\n", id="utf8-2-byte"),
    pytest.param(
        "\u65e5\u672c", None, None, b"data: \xe6\x97\xa5\xe6\x9c\xac\n\n", id="utf8-3-byte"
    ),
    pytest.param("\U0001f600", None, None, b"data: \xf0\x9f\x98\x80\n\n", id="emoji-4-byte"),
    pytest.param("x", "", None, b"data: x\n\n", id="empty-name-omitted"),
    pytest.param("x", "update", None, b"event: update\ndata: x\n\n", id="name"),
    pytest.param(
        "x", "\u00e4nderung", None, b"event: \xc3\xa4nderung\ndata: x\n\n", id="utf8-name"
    ),
    pytest.param("x", None, "17", b"id: 17\ndata: x\n\n", id="id"),
    pytest.param("x", None, "", b"id: \ndata: x\n\n", id="empty-id-given"),
    pytest.param("x", "", "", b"id: \ndata: x\n\n", id="empty-id-and-empty-name"),
    pytest.param(
        "line 1\nline 2",
        "update",
        "17",
        b"id: 17\nevent: update\ndata: line 1\ndata: line 2\n\n",
        id="id-then-name-then-data",
    ),
    pytest.param("", "e", "1", b"id: 1\nevent: e\ndata: \n\n", id="empty-data-with-name-and-id"),
]


@pytest.mark.parametrize(("data", "name", "event_id", "wire"), ENCODE_CASES)
def test_encode_event_writes_exact_bytes(
    data: str, name: str | None, event_id: str | None, wire: bytes
) -> None:
    assert encode_event(data, name, event_id) == wire


@pytest.mark.parametrize(("data", "name", "event_id", "wire"), ENCODE_CASES)
def test_encode_of_event_object_matches_encode_event(
    data: str, name: str | None, event_id: str | None, wire: bytes
) -> None:
    assert encode(Event(data=data, name=name, id=event_id)) == wire


def test_encode_event_defaults_omit_name_and_id() -> None:
    assert encode_event("x") == b"data: x\n\n"
    assert encode(Event("x")) == b"data: x\n\n"


def test_one_mebibyte_single_line_is_one_data_line() -> None:
    data = "x" * MIB
    assert encode_event(data) == b"data: " + b"x" * MIB + b"\n\n"


def test_one_mebibyte_of_lines_gives_one_data_line_each() -> None:
    data = "line\r\n" * (MIB // 6)
    wire = encode_event(data, "bulk", "9")
    assert wire == b"id: 9\nevent: bulk\n" + b"data: line\n" * (MIB // 6) + b"data: \n\n"
    assert parse(wire) == [
        ParsedEvent(type="bulk", data=data.replace("\r\n", "\n"), last_event_id="9")
    ]


def test_one_mebibyte_of_emoji_round_trips() -> None:
    data = "\U0001f600" * (MIB // 4)
    wire = encode_event(data)
    assert len(wire) == len(b"data: \n\n") + MIB
    assert parse(wire) == [ParsedEvent(type="message", data=data, last_event_id="")]


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("heartbeat", b": heartbeat\n\n"),
        ("", b": \n\n"),
        ("caf\u00e9 \U0001f600", b": caf\xc3\xa9 \xf0\x9f\x98\x80\n\n"),
    ],
)
def test_encode_comment_writes_colon_space_text_and_blank_line(text: str, wire: bytes) -> None:
    assert encode_comment(text) == wire


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\r\nb", "a\x00b", "\n"])
def test_encode_comment_rejects_line_breaks_and_nul(text: str) -> None:
    with pytest.raises(ValueError):
        encode_comment(text)


@pytest.mark.parametrize(
    ("milliseconds", "wire"),
    [(0, b"retry: 0\n\n"), (1500, b"retry: 1500\n\n"), (86_400_000, b"retry: 86400000\n\n")],
)
def test_encode_retry_writes_decimal_milliseconds(milliseconds: int, wire: bytes) -> None:
    assert encode_retry(milliseconds) == wire


def test_encode_retry_rejects_negative_delay() -> None:
    with pytest.raises(ValueError):
        encode_retry(-1)


def test_encode_retry_is_understood_by_a_client_as_reconnection_time() -> None:
    parser = SSEParser()
    assert parser.feed(encode_retry(2750)) == []
    assert parser.retry == 2750


def test_heartbeat_is_the_contract_comment() -> None:
    assert HEARTBEAT == b": heartbeat\n\n"


def test_heartbeat_dispatches_no_event_and_keeps_last_event_id() -> None:
    parser = SSEParser()
    parser.feed(encode_event("x", id="4"))
    assert parser.feed(HEARTBEAT) == []
    assert parser.comments == ["heartbeat"]
    assert parser.last_event_id == "4"


# --------------------------------------------------------------------------------------------
# Round trip through a WHATWG parser (4.2: the client receives exactly the data sent)

_FIELD_CHARS = st.characters(codec="utf-8", exclude_characters="\r\n\x00")
_fields = st.none() | st.text(_FIELD_CHARS)


def _as_received(data: str) -> str:
    """What an ``EventSource`` must receive for ``data``: CRLF and CR become LF."""
    return data.replace("\r\n", "\n").replace("\r", "\n")


@settings(database=None)
@given(data=st.text(), name=_fields, event_id=_fields)
def test_any_event_round_trips_through_an_sse_parser(
    data: str, name: str | None, event_id: str | None
) -> None:
    assert parse(encode_event(data, name, event_id)) == [
        ParsedEvent(type=name or "message", data=_as_received(data), last_event_id=event_id or "")
    ]


@settings(database=None)
@given(st.lists(st.tuples(st.text(), _fields, _fields), max_size=8))
def test_event_sequences_round_trip_with_last_event_id_persisting(
    events: list[tuple[str, str | None, str | None]],
) -> None:
    stream = b"".join(encode_event(data, name, event_id) for data, name, event_id in events)
    expected = []
    last_id = ""
    for data, name, event_id in events:
        if event_id is not None:
            last_id = event_id
        expected.append(ParsedEvent(name or "message", _as_received(data), last_id))
    assert parse(stream) == expected


# --------------------------------------------------------------------------------------------
# /internal/send validation (4.1)


def _code_of(item: Any) -> str:
    """The code of the ``InvalidRequest`` that ``validate_send(item)`` raises (400 checked)."""
    with pytest.raises(InvalidRequest) as info:
        validate_send(item)
    assert info.value.status == 400
    return info.value.code


OK_EVENT = {"data": "x"}
LONG_CHANNEL = "c" * (MAX_CHANNEL_LENGTH + 1)

# One row per rule of the table, in the table's order, each breaking only that rule.
INVALID_SEND_CASES: list[Any] = [
    # body not an object (arrays are split into items before validate_send)
    pytest.param([], "INVALID_JSON", id="array-item"),
    pytest.param("token", "INVALID_JSON", id="string"),
    pytest.param(1, "INVALID_JSON", id="number"),
    pytest.param(None, "INVALID_JSON", id="null"),
    pytest.param(True, "INVALID_JSON", id="bool"),
    # not exactly one of token / channel a non-empty string
    pytest.param({}, "INVALID_TOKEN_MISSING", id="neither"),
    pytest.param({"event": OK_EVENT}, "INVALID_TOKEN_MISSING", id="event-without-target"),
    pytest.param({"token": None}, "INVALID_TOKEN_MISSING", id="token-null"),
    pytest.param({"token": None, "channel": None}, "INVALID_TOKEN_MISSING", id="both-null"),
    pytest.param({"token": ""}, "INVALID_TOKEN_MISSING", id="token-empty"),
    pytest.param({"token": 42}, "INVALID_TOKEN_MISSING", id="token-number"),
    pytest.param({"token": True}, "INVALID_TOKEN_MISSING", id="token-bool"),
    pytest.param({"token": ["t"]}, "INVALID_TOKEN_MISSING", id="token-list"),
    pytest.param({"token": {"t": 1}}, "INVALID_TOKEN_MISSING", id="token-object"),
    pytest.param({"channel": ""}, "INVALID_TOKEN_MISSING", id="channel-empty"),
    pytest.param({"channel": 7}, "INVALID_TOKEN_MISSING", id="channel-number"),
    pytest.param({"token": "t", "channel": "c"}, "INVALID_TOKEN_MISSING", id="both-given"),
    pytest.param(
        {"token": "", "channel": "c"}, "INVALID_TOKEN_MISSING", id="empty-token-and-channel"
    ),
    pytest.param(
        {"token": "t", "channel": ""}, "INVALID_TOKEN_MISSING", id="token-and-empty-channel"
    ),
    # (ext) channel name
    pytest.param({"channel": "a b"}, "INVALID_CHANNEL", id="channel-space"),
    pytest.param({"channel": LONG_CHANNEL}, "INVALID_CHANNEL", id="channel-201-chars"),
    pytest.param({"channel": "caf\u00e9"}, "INVALID_CHANNEL", id="channel-non-ascii"),
    pytest.param({"channel": "a\tb"}, "INVALID_CHANNEL", id="channel-tab"),
    pytest.param({"channel": "a\n"}, "INVALID_CHANNEL", id="channel-trailing-lf"),
    pytest.param({"channel": "a\x7f"}, "INVALID_CHANNEL", id="channel-del"),
    # event not an object (null counts as present)
    pytest.param({"token": "t", "event": None}, "INVALID_EVENT_TYPE", id="event-null"),
    pytest.param({"token": "t", "event": "x"}, "INVALID_EVENT_TYPE", id="event-string"),
    pytest.param({"token": "t", "event": ["x"]}, "INVALID_EVENT_TYPE", id="event-list"),
    pytest.param({"token": "t", "event": 0}, "INVALID_EVENT_TYPE", id="event-number"),
    pytest.param({"channel": "c", "event": False}, "INVALID_EVENT_TYPE", id="channel-event-bool"),
    # event.data missing or not a string
    pytest.param({"token": "t", "event": {}}, "INVALID_EVENT_DATA_MISSING", id="data-missing"),
    pytest.param(
        {"token": "t", "event": {"data": None}}, "INVALID_EVENT_DATA_MISSING", id="data-null"
    ),
    pytest.param(
        {"token": "t", "event": {"data": 1}}, "INVALID_EVENT_DATA_MISSING", id="data-number"
    ),
    pytest.param(
        {"token": "t", "event": {"data": ["a"]}}, "INVALID_EVENT_DATA_MISSING", id="data-list"
    ),
    pytest.param(
        {"token": "t", "event": {"data": {"a": 1}}}, "INVALID_EVENT_DATA_MISSING", id="data-object"
    ),
    pytest.param(
        {"token": "t", "event": {"name": "n"}}, "INVALID_EVENT_DATA_MISSING", id="name-only"
    ),
    # event.name present and not a clean string
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": None}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-null",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": 1}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-number",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": True}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-bool",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": "a\rb"}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-cr",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": "a\nb"}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-lf",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": "a\x00"}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-nul",
    ),
    # (ext) event.id present and not a clean string
    pytest.param(
        {"token": "t", "event": {"data": "x", "id": None}}, "INVALID_EVENT_ID", id="id-null"
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "id": 17}}, "INVALID_EVENT_ID", id="id-number"
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "id": "1\r"}}, "INVALID_EVENT_ID", id="id-cr"
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "id": "1\n"}}, "INVALID_EVENT_ID", id="id-lf"
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "id": "1\x002"}}, "INVALID_EVENT_ID", id="id-nul"
    ),
    # close present and not a boolean; (ext) close: true with a channel
    pytest.param({"token": "t", "close": None}, "INVALID_CLOSE_TYPE", id="close-null"),
    pytest.param({"token": "t", "close": "true"}, "INVALID_CLOSE_TYPE", id="close-string"),
    pytest.param({"token": "t", "close": 1}, "INVALID_CLOSE_TYPE", id="close-one"),
    pytest.param({"token": "t", "close": 0}, "INVALID_CLOSE_TYPE", id="close-zero"),
    pytest.param({"channel": "c", "close": True}, "INVALID_CLOSE_TYPE", id="channel-close-true"),
    pytest.param(
        {"channel": "c", "event": OK_EVENT, "close": True},
        "INVALID_CLOSE_TYPE",
        id="channel-event-close-true",
    ),
]


@pytest.mark.parametrize(("item", "code"), INVALID_SEND_CASES)
def test_validate_send_rejects_each_rule_with_its_code(item: Any, code: str) -> None:
    assert _code_of(item) == code


# Each input breaks two rules; the earlier row of the table decides the code.
ORDER_CASES: list[Any] = [
    pytest.param({"event": None}, "INVALID_TOKEN_MISSING", id="target-before-event-type"),
    pytest.param({"event": {}}, "INVALID_TOKEN_MISSING", id="target-before-data"),
    pytest.param({"close": "x"}, "INVALID_TOKEN_MISSING", id="target-before-close"),
    pytest.param(
        {"token": 1, "channel": "a b"}, "INVALID_TOKEN_MISSING", id="target-before-channel-name"
    ),
    pytest.param(
        {"channel": "a b", "event": None}, "INVALID_CHANNEL", id="channel-name-before-event-type"
    ),
    pytest.param(
        {"channel": "a b", "close": True}, "INVALID_CHANNEL", id="channel-name-before-close"
    ),
    pytest.param(
        {"token": "t", "event": 1, "close": 1}, "INVALID_EVENT_TYPE", id="event-type-before-close"
    ),
    pytest.param(
        {"token": "t", "event": {"name": 1}}, "INVALID_EVENT_DATA_MISSING", id="data-before-name"
    ),
    pytest.param(
        {"token": "t", "event": {"id": 1}}, "INVALID_EVENT_DATA_MISSING", id="data-before-id"
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": 1, "id": 1}},
        "INVALID_EVENT_NAME_TYPE",
        id="name-before-id",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": "\n"}, "close": None},
        "INVALID_EVENT_NAME_TYPE",
        id="name-before-close",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "id": "\n"}, "close": None},
        "INVALID_EVENT_ID",
        id="id-before-close",
    ),
    pytest.param(
        {"channel": "c", "event": {"data": 1}, "close": True},
        "INVALID_EVENT_DATA_MISSING",
        id="data-before-channel-close",
    ),
]


@pytest.mark.parametrize(("item", "code"), ORDER_CASES)
def test_validate_send_reports_the_earliest_broken_rule(item: Any, code: str) -> None:
    assert _code_of(item) == code


VALID_SEND_CASES: list[Any] = [
    pytest.param({"token": "t"}, SendRequest("t", None, None, False), id="token-alone-is-noop"),
    pytest.param(
        {"token": "t", "channel": None},
        SendRequest("t", None, None, False),
        id="unused-channel-null",
    ),
    pytest.param(
        {"channel": "c", "token": None}, SendRequest(None, "c", None, False), id="unused-token-null"
    ),
    pytest.param(
        {
            "token": "t",
            "event": {"name": "update", "data": "line 1\nline 2", "id": "17"},
            "close": True,
        },
        SendRequest("t", None, Event("line 1\nline 2", "update", "17"), True),
        id="contract-example",
    ),
    pytest.param(
        {"token": "t", "event": {"data": ""}},
        SendRequest("t", None, Event(""), False),
        id="empty-data",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "x", "name": "", "id": ""}},
        SendRequest("t", None, Event("x", "", ""), False),
        id="empty-name-and-id-strings",
    ),
    pytest.param(
        {"token": "t", "close": False}, SendRequest("t", None, None, False), id="close-false"
    ),
    pytest.param(
        {"token": "t", "close": True}, SendRequest("t", None, None, True), id="close-alone"
    ),
    pytest.param(
        {"channel": "c", "close": False},
        SendRequest(None, "c", None, False),
        id="channel-close-false",
    ),
    pytest.param(
        {"channel": "user.42", "event": {"data": "hi"}},
        SendRequest(None, "user.42", Event("hi"), False),
        id="channel-event",
    ),
    pytest.param(
        {"channel": "!" + "~" * (MAX_CHANNEL_LENGTH - 1)},
        SendRequest(None, "!" + "~" * (MAX_CHANNEL_LENGTH - 1), None, False),
        id="channel-200-printable-chars",
    ),
    pytest.param(
        {"token": "t", "extra": [1], "event": {"data": "x", "retry": 5}},
        SendRequest("t", None, Event("x"), False, unknown=("extra", "event.retry")),
        id="unknown-keys-ignored-and-named",
    ),
    pytest.param(
        {"token": "t", "event": {"nmae": "update", "data": "x"}, "clsoe": True},
        SendRequest("t", None, Event("x"), False, unknown=("clsoe", "event.nmae")),
        id="a-typo-is-named",
    ),
    pytest.param(
        {"token": "t", "event": {"data": "a\r\nb\x00", "name": "\u00e9 v", "id": "\U0001f600"}},
        SendRequest("t", None, Event("a\r\nb\x00", "\u00e9 v", "\U0001f600"), False),
        id="data-may-hold-any-character",
    ),
]


@pytest.mark.parametrize(("item", "expected"), VALID_SEND_CASES)
def test_validate_send_accepts_valid_items(item: dict[str, Any], expected: SendRequest) -> None:
    assert validate_send(item) == expected


# --------------------------------------------------------------------------------------------
# decode_json


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"\xff", id="invalid-utf8-byte"),
        pytest.param(b'{"token": "\xc3"}', id="truncated-utf8-sequence"),
        pytest.param(b'"\xed\xa0\x80"', id="utf8-encoded-surrogate"),
        pytest.param(b'"\\ud800"', id="lone-high-surrogate-escape"),
        pytest.param(b'"\\udfff"', id="lone-low-surrogate-escape"),
        pytest.param(b'{"\\ud800": 1}', id="lone-surrogate-in-key"),
        pytest.param(b'[{"event": {"data": "a\\ud800b"}}]', id="lone-surrogate-nested"),
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b"-Infinity", id="minus-infinity"),
        pytest.param(b'{"close": NaN}', id="nan-in-object"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="open-brace"),
        pytest.param(b'{"token": "t"', id="truncated-object"),
        pytest.param(b'{"token": "t', id="truncated-string"),
        pytest.param(b"[1,]", id="trailing-comma"),
        pytest.param(b"{'token': 't'}", id="single-quotes"),
        pytest.param(b'{"a": 1} x', id="trailing-garbage"),
        pytest.param(b"[" * 100_000, id="deep-nesting"),
    ],
)
def test_decode_json_rejects_with_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_json(raw)
    assert info.value.code == "INVALID_JSON"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        pytest.param(b'{"token": "t"}', {"token": "t"}, id="object"),
        pytest.param(b' [ {"channel": "c"} ] ', [{"channel": "c"}], id="array-with-whitespace"),
        pytest.param(b"[]", [], id="empty-array"),
        pytest.param(b'"\\ud83d\\ude00"', "\U0001f600", id="surrogate-pair-escape"),
        pytest.param(b'{"k": "caf\xc3\xa9"}', {"k": "caf\u00e9"}, id="utf8-text"),
        pytest.param(b'{"k": "\\u0000"}', {"k": "\x00"}, id="nul-escape"),
        pytest.param(b"1", 1, id="number"),
        pytest.param(b"null", None, id="null"),
    ],
)
def test_decode_json_returns_the_value(raw: bytes, value: Any) -> None:
    assert decode_json(raw) == value


# --------------------------------------------------------------------------------------------
# Connect answers (3.1)


def _answer(value: Any) -> bytes:
    return json.dumps(value).encode()


HUNDRED = [f"ch.{i}" for i in range(MAX_CHANNELS)]


@pytest.mark.parametrize(
    ("body", "channels"),
    [
        pytest.param(b"", (), id="empty"),
        pytest.param(b" \r\n", (), id="whitespace"),
        pytest.param(b"OK", (), id="node-style-ok"),
        pytest.param(b"[1]", (), id="array"),
        pytest.param(b'["a"]', (), id="array-of-names"),
        pytest.param(b'"channels"', (), id="string"),
        pytest.param(b"null", (), id="null"),
        pytest.param(b"{}", (), id="empty-object"),
        pytest.param(b'{"other": 1}', (), id="unrelated-object"),
        pytest.param(b'{"channels": ["a"]', (), id="truncated-json"),
        pytest.param(_answer({"channels": []}), (), id="empty-list"),
        pytest.param(
            _answer({"channels": ["user.42", "broadcast"]}),
            ("user.42", "broadcast"),
            id="contract-example",
        ),
        pytest.param(_answer({"bindings": ["a", "b"]}), ("a", "b"), id="bindings-alias"),
        pytest.param(_answer({"bindings": ["b"], "channels": ["a"]}), ("a",), id="channels-wins"),
        pytest.param(_answer({"channels": [], "bindings": ["a"]}), (), id="empty-channels-wins"),
        pytest.param(
            _answer({"channels": ["b", "a", "b", "c", "a"]}),
            ("b", "a", "c"),
            id="duplicates-removed-in-order",
        ),
        pytest.param(
            _answer({"status": "ok", "channels": ["a"], "meta": {"x": [1]}}),
            ("a",),
            id="unknown-keys-ignored",
        ),
        pytest.param(_answer({"channels": HUNDRED}), tuple(HUNDRED), id="100-channels"),
        pytest.param(
            _answer({"channels": ["x" * MAX_CHANNEL_LENGTH]}),
            ("x" * MAX_CHANNEL_LENGTH,),
            id="200-char-name",
        ),
        pytest.param(
            _answer({"channels": ["!", "~", "a:b/c#d"]}),
            ("!", "~", "a:b/c#d"),
            id="printable-ascii",
        ),
    ],
)
def test_parse_connect_answer_returns_channels(body: bytes, channels: tuple[str, ...]) -> None:
    assert parse_connect_answer(body) == channels


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_answer({"channels": HUNDRED + ["one.more"]}), id="101-channels"),
        pytest.param(_answer({"channels": None}), id="channels-null"),
        pytest.param(_answer({"channels": "a"}), id="channels-string"),
        pytest.param(_answer({"channels": {"a": 1}}), id="channels-object"),
        pytest.param(_answer({"bindings": 5}), id="bindings-number"),
        pytest.param(_answer({"channels": [1]}), id="name-number"),
        pytest.param(_answer({"channels": [None]}), id="name-null"),
        pytest.param(_answer({"channels": [["a"]]}), id="name-list"),
        pytest.param(_answer({"channels": ["ok", ""]}), id="name-empty"),
        pytest.param(_answer({"channels": ["a b"]}), id="name-space"),
        pytest.param(_answer({"channels": ["x" * (MAX_CHANNEL_LENGTH + 1)]}), id="name-201-chars"),
        pytest.param(_answer({"channels": ["caf\u00e9"]}), id="name-non-ascii"),
        pytest.param(_answer({"channels": ["a\n"]}), id="name-trailing-lf"),
        pytest.param(
            _answer({"channels": ["a b"], "bindings": ["ok"]}),
            id="invalid-channels-wins-over-bindings",
        ),
    ],
)
def test_parse_connect_answer_rejects_bad_channels(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_connect_answer(body)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("!" * MAX_CHANNEL_LENGTH, True),
        ("", False),
        ("a b", False),
        ("a" * (MAX_CHANNEL_LENGTH + 1), False),
        ("\u00e9", False),
        (None, False),
        (1, False),
    ],
)
def test_is_valid_channel_accepts_1_to_200_printable_ascii(name: object, valid: bool) -> None:
    assert is_valid_channel(name) is valid


# --------------------------------------------------------------------------------------------
# Callback bodies (3)


@pytest.mark.parametrize(
    ("pairs", "headers"),
    [
        pytest.param([], {}, id="none"),
        pytest.param(
            [("Authorization", "Bearer t")], {"authorization": "Bearer t"}, id="lower-cased"
        ),
        pytest.param(
            [("X-Custom", "a"), ("x-CUSTOM", "b")],
            {"x-custom": "a, b"},
            id="case-insensitive-repeat",
        ),
        pytest.param(
            [("Accept", "a"), ("Host", "h"), ("accept", "b"), ("ACCEPT", "c")],
            {"accept": "a, b, c", "host": "h"},
            id="repeat-joined-with-comma",
        ),
        pytest.param(
            [("Cookie", "a=1"), ("cookie", "b=2")],
            {"cookie": "a=1; b=2"},
            id="cookie-joined-with-semicolon",
        ),
        pytest.param(
            [("Cookie", "a=1"), ("Cookie", "b=2"), ("Cookie", "c=3")],
            {"cookie": "a=1; b=2; c=3"},
            id="three-cookies",
        ),
        pytest.param([("Cookie", "a=1; b=2")], {"cookie": "a=1; b=2"}, id="single-cookie-kept"),
    ],
)
def test_capture_headers(pairs: list[tuple[str, str]], headers: dict[str, str]) -> None:
    assert capture_headers(pairs) == headers


def test_capture_headers_keeps_first_seen_order() -> None:
    assert list(capture_headers([("B", "1"), ("A", "2"), ("b", "3")])) == ["b", "a"]


@pytest.mark.parametrize(
    ("authorization", "matches"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("BEARER s3cret", True),
        ("bEaReR s3cret", True),
        ("Bearer   s3cret", True),  # 1*SP after the scheme
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        ("Bearer wrong", False),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Bearer S3CRET", False),  # the scheme's case is free, the secret's is not
        ("Bearers3cret", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("Bearer s3cret ", False),
    ],
)
def test_bearer_matches_any_case_of_the_scheme_and_only_the_exact_secret(
    authorization: str | None, matches: bool
) -> None:
    assert bearer_matches(authorization, "s3cret") is matches


def latin1(text: str) -> str:
    """``text`` as an HTTP server that decodes Latin-1 gives its UTF-8 bytes: café -> cafÃ©."""
    return text.encode("utf-8").decode("latin-1")


@pytest.mark.parametrize(
    ("given", "text"),
    [
        pytest.param("/sse/x?y=1", "/sse/x?y=1", id="ascii"),
        pytest.param(latin1("/sse/caf\u00e9"), "/sse/caf\u00e9", id="utf8-bytes"),
        pytest.param(latin1("\u65e5 \U0001f600"), "\u65e5 \U0001f600", id="utf8-wide"),
        pytest.param("/sse/caf%C3%A9", "/sse/caf%C3%A9", id="percent-escapes-kept"),
        pytest.param("Jos\u00e9", "Jos\u00e9", id="latin1-byte-not-utf8-kept"),
        pytest.param("\u00c3(", "\u00c3(", id="broken-utf8-kept"),
        pytest.param("\u65e5", "\u65e5", id="beyond-latin1-kept"),
    ],
)
def test_utf8_text_rereads_latin1_decoded_utf8_bytes(given: str, text: str) -> None:
    assert utf8_text(given) == text


def test_capture_request_rereads_url_and_header_values_as_utf8() -> None:
    request = capture_request(
        latin1("/sse/caf\u00e9?q=\u00fc"),
        [
            ("Cookie", latin1("name=Jos\u00e9")),
            ("Cookie", "old=Jos\u00e9"),  # a Latin-1 byte that is not UTF-8: kept as is
            ("Last-Event-ID", latin1("\u00fcn\u00ef")),
        ],
    )
    assert request.url == "/sse/caf\u00e9?q=\u00fc"
    assert request.headers == {
        "cookie": "name=Jos\u00e9; old=Jos\u00e9",
        "last-event-id": "\u00fcn\u00ef",
    }
    assert request.last_event_id == "\u00fcn\u00ef"


def test_capture_request_reads_a_utf8_last_event_id_query_parameter() -> None:
    raw = capture_request(latin1("/sse/x?lastEventId=\u00fcn\u00ef"), [])
    escaped = capture_request("/sse/x?lastEventId=%C3%BCn%C3%AF", [])
    assert raw.last_event_id == escaped.last_event_id == "\u00fcn\u00ef"
    assert escaped.url == "/sse/x?lastEventId=%C3%BCn%C3%AF"


def snapshot(url: str, headers: dict[str, str]) -> RequestSnapshot:
    return RequestSnapshot(url=url, headers=headers, request_id="rid")


def test_connect_body_is_compact_json() -> None:
    assert connect_body("t", snapshot("/sse/x?y=1", {"a": "b"})) == (
        b'{"action":"connect","token":"t","request":{"url":"/sse/x?y=1","headers":{"a":"b"}}}'
    )


def test_connect_body_keeps_non_ascii_as_utf8() -> None:
    body = connect_body("t", snapshot("/sse/caf\u00e9", {"x-name": "Zo\u00eb \U0001f600"}))
    assert body == (
        b'{"action":"connect","token":"t","request":{"url":"/sse/caf\xc3\xa9",'
        b'"headers":{"x-name":"Zo\xc3\xab \xf0\x9f\x98\x80"}}}'
    )
    assert b"\\u" not in body


def test_connect_body_escapes_json_specials() -> None:
    assert connect_body('t"', snapshot("/a\\b", {"k": "\n"})) == (
        b'{"action":"connect","token":"t\\"","request":{"url":"/a\\\\b","headers":{"k":"\\n"}}}'
    )


def test_disconnect_body_without_detail_has_no_detail_key() -> None:
    assert disconnect_body("t", "client_closed", snapshot("/sse/x", {})) == (
        b'{"action":"disconnect","reason":"client_closed","token":"t",'
        b'"request":{"url":"/sse/x","headers":{}}}'
    )


def test_disconnect_body_with_detail_appends_it() -> None:
    request = snapshot("/sse/x", {"a": "b"})
    assert disconnect_body("t", "server_closed", request, detail="shutdown") == (
        b'{"action":"disconnect","reason":"server_closed","token":"t",'
        b'"request":{"url":"/sse/x","headers":{"a":"b"}},"detail":"shutdown"}'
    )


def test_disconnect_body_keeps_non_ascii_as_utf8() -> None:
    request = snapshot("/sse/\u00fc", {"h": "\u65e5"})
    body = disconnect_body("t", "error", request, detail="slow_consumer")
    assert body == (
        b'{"action":"disconnect","reason":"error","token":"t",'
        b'"request":{"url":"/sse/\xc3\xbc","headers":{"h":"\xe6\x97\xa5"}},'
        b'"detail":"slow_consumer"}'
    )


# --------------------------------------------------------------------------------------------
# The publish socket (4.5)


@pytest.mark.parametrize(
    ("message", "ref", "body"),
    [
        ({"token": "t", "ref": 7}, 7, {"token": "t"}),
        ({"token": "t", "ref": None}, None, {"token": "t"}),
        ({"token": "t", "ref": {"a": [1]}}, {"a": [1]}, {"token": "t"}),
        ({"token": "t"}, None, {"token": "t"}),
        ([{"token": "t", "ref": 1}], None, [{"token": "t", "ref": 1}]),  # a batch has none
        ("text", None, "text"),
    ],
)
def test_split_ref_takes_the_ref_off_an_object_only(message, ref, body):
    assert protocol.split_ref(message) == (ref, body)


def test_socket_answer_is_compact_json_in_a_fixed_order():
    text = protocol.encode_socket_answer("ü", 404, {"error": {"code": "X", "message": "m"}})
    assert text == '{"ref":"ü","status":404,"body":{"error":{"code":"X","message":"m"}}}'


def _basic(pair: bytes) -> str:
    return "Basic " + base64.b64encode(pair).decode()


@pytest.mark.parametrize(
    ("authorization", "matches"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        (_basic(b"dashboard:s3cret"), True),
        (_basic(b":s3cret"), True),  # any user name, the empty one too
        ("basic " + base64.b64encode(b"x:s3cret").decode(), True),
        ("BASIC  " + base64.b64encode(b"x:s3cret").decode(), True),
        (_basic("jos\u00e9:s3cret".encode()), True),  # charset="UTF-8"
        (_basic(b"x:s3cret:more"), False),  # the password is all after the first colon
        (_basic(b"a:b:s3cret"), False),
        (_basic(b"s3cret:"), False),  # the secret as the user name is not the password
        (_basic(b"s3cret"), False),  # no colon: no password at all
        (_basic(b"x:wrong"), False),
        (_basic(b"x:S3CRET"), False),
        ("Basic s3cret", False),  # not base64
        ("Basic " + base64.b64encode(b"x:s3cret").decode()[:-1], False),  # bad padding
        ("Basic", False),
        ("Basic ", False),
        ("Digest s3cret", False),
        (None, False),
        ("", False),
    ],
)
def test_credentials_match_bearer_or_the_basic_password(
    authorization: str | None, matches: bool
) -> None:
    assert credentials_match(authorization, "s3cret") is matches


def test_a_request_snapshot_costs_about_its_json():
    request = snapshot("/sse/x?ch=a", {"host": "h", "cookie": "session=" + "s" * 40})
    assert request.json == b'{"url":"/sse/x?ch=a","headers":{"host":"h","cookie":"session=%b"}}' % (
        b"s" * 40
    )
    # What a held stream keeps: its bytes and the bytes object's header, no spare buffer.
    assert sys.getsizeof(request.json) <= len(request.json) + 40
    assert request.url == "/sse/x?ch=a"
    assert request.headers == {"host": "h", "cookie": "session=" + "s" * 40}


def test_new_uuid4_is_a_canonical_random_uuid4():
    tokens = {protocol.new_uuid4() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        parsed = uuid.UUID(token)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == token


def test_a_fresh_request_id_is_the_hex_of_a_uuid4():
    fresh = protocol.request_id(None)
    assert uuid.UUID(fresh).version == 4 and fresh == uuid.UUID(fresh).hex
