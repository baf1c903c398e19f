"""Tests of the test-support SSE parser against the examples and rules of the HTML spec."""

from __future__ import annotations

import pytest

from tests.support.sse_parser import ParsedEvent, SSEParser, parse


def message(data: str, last_event_id: str = "", type: str = "message") -> ParsedEvent:
    """A :class:`ParsedEvent` with the defaults of an unnamed event."""
    return ParsedEvent(type=type, data=data, last_event_id=last_event_id)


# A stream that exercises every rule at once, with CRLF, CR and multibyte text, so that
# splitting it anywhere lands inside each of them.
MIXED_STREAM = (
    "\ufeff: hello\r\n"
    "retry: 2500\r\n"
    "id: 1\r"
    "event: ünïcode\n"
    "data: 日本 😀\r\n"
    "data\r\n"
    "\r\n"
    "data:  two spaces\r"
    "\r"
    "id\n"
    "data: x\n"
    "\n"
    "data: unfinished\n"
).encode("utf-8")

MIXED_EVENTS = [
    ParsedEvent(type="ünïcode", data="日本 😀\n", last_event_id="1"),
    message(" two spaces", "1"),
    message("x", ""),
]


def test_spec_example_first_second_third_messages() -> None:
    stream = (
        b"data: This is the first message.\n\n"
        b"data: This is the second message, it\n"
        b"data: has two lines.\n\n"
        b"data: This is the third message.\n\n"
    )
    assert parse(stream) == [
        message("This is the first message."),
        message("This is the second message, it\nhas two lines."),
        message("This is the third message."),
    ]


def test_event_field_sets_type_and_type_resets_to_message_after_dispatch() -> None:
    stream = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\ndata: 113411\n\n"
    assert parse(stream) == [
        message("73857293", type="add"),
        message("2153", type="remove"),
        message("113411"),
    ]


def test_event_type_is_cleared_by_a_blank_line_even_without_data() -> None:
    assert parse(b"event: lost\n\ndata: x\n\n") == [message("x")]


def test_comment_lines_are_recorded_and_dispatch_nothing() -> None:
    parser = SSEParser()
    assert parser.feed(b": test stream\n\n:no space\n:  two\n\n") == []
    assert parser.comments == ["test stream", "no space", " two"]


def test_id_persists_across_events_and_bare_id_line_resets_it() -> None:
    # The spec's example: "id" without a colon sets the last event ID to the empty string,
    # and the final block is not dispatched because the stream ends before a blank line.
    stream = (
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n"
    )
    assert parse(stream) == [message("first event", "1"), message("second event", "")]


def test_id_is_kept_for_later_events_that_carry_no_id() -> None:
    assert parse(b"id: 7\ndata: a\n\ndata: b\n\n") == [message("a", "7"), message("b", "7")]


def test_id_containing_nul_is_ignored() -> None:
    assert parse(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [
        message("a", "1"),
        message("b", "1"),
    ]


def test_last_event_id_is_updated_by_a_blank_line_even_without_data() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 5\n") == []
    assert parser.last_event_id == ""  # not yet: the browser's string changes at dispatch
    assert parser.feed(b"\n") == []
    assert parser.last_event_id == "5"


def test_bare_data_lines_and_empty_data_values_follow_the_spec_example() -> None:
    # "The first block fires events with the data set to the empty string, as would the last
    # block if it was followed by a blank line. The middle block fires an event with the data
    # set to a single newline character."
    assert parse(b"data\n\ndata\ndata\n\ndata:") == [message(""), message("\n")]


def test_one_leading_space_is_removed_from_values_and_only_one() -> None:
    assert parse(b"data:test\n\ndata: test\n\ndata:  test\n\n") == [
        message("test"),
        message("test"),
        message(" test"),
    ]


def test_value_is_split_at_the_first_colon_only() -> None:
    assert parse(b"data: a: b:c\n\n") == [message("a: b:c")]


def test_unknown_and_wrongly_cased_fields_are_ignored() -> None:
    assert parse(b"Data: x\nfoo: y\nDATA: z\n\n") == []
    assert parse(b"foo: y\ndata: z\n\n") == [message("z")]


def test_block_without_data_dispatches_nothing() -> None:
    assert parse(b"event: e\nid: 1\n\n\n\n") == []


def test_retry_with_ascii_digits_sets_reconnection_time() -> None:
    parser = SSEParser()
    parser.feed(b"retry: 1500\n\n")
    assert parser.retry == 1500
    parser.feed(b"retry:0\n")
    assert parser.retry == 0


@pytest.mark.parametrize(
    "line",
    [
        b"retry: 15a\n",
        b"retry: -1\n",
        b"retry: 1.5\n",
        b"retry: \n",
        b"retry\n",
        b"retry:  15\n",
        "retry: \u0661\u0662\n".encode(),
    ],
    ids=["letter", "negative", "decimal", "empty", "bare", "two-spaces", "arabic-indic-digits"],
)
def test_retry_that_is_not_only_ascii_digits_is_ignored(line: bytes) -> None:
    parser = SSEParser()
    parser.feed(b"retry: 100\n" + line)
    assert parser.retry == 100


def test_retry_is_none_before_any_retry_field() -> None:
    assert SSEParser().retry is None


@pytest.mark.parametrize(
    "stream",
    [
        b"data: a\ndata: b\n\n",
        b"data: a\rdata: b\r\r",
        b"data: a\r\ndata: b\r\n\r\n",
        b"data: a\r\ndata: b\n\r",
    ],
    ids=["lf", "cr", "crlf", "mixed"],
)
def test_lf_cr_and_crlf_all_end_lines(stream: bytes) -> None:
    assert parse(stream) == [message("a\nb")]


def test_crlf_split_across_chunks_is_one_line_ending_not_a_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r\n\r\n") == [message("a\nb")]


def test_unicode_line_separators_other_than_cr_and_lf_do_not_end_lines() -> None:
    data = "a\u2028b\u2029c\x85d\x0be\x0cf"
    assert parse(("data: " + data + "\n\n").encode()) == [message(data)]


def test_leading_bom_is_stripped() -> None:
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [message("x")]


def test_bom_split_across_chunks_is_stripped() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: x\n\n") == [message("x")]


def test_only_the_first_bom_is_stripped() -> None:
    # The second BOM becomes part of the field name "\ufeffdata", which is unknown.
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []


def test_bom_at_the_start_of_a_later_chunk_is_not_stripped() -> None:
    # Only the stream's first character may be a dropped BOM, not each chunk's.
    parser = SSEParser()
    assert parser.feed(b"data: x\n\n") == [message("x")]
    assert parser.feed(b"\xef\xbb\xbfdata: y\n\n") == []


def test_bom_after_the_start_of_the_stream_is_data() -> None:
    assert parse(b"data: x\n\ndata: \xef\xbb\xbfy\n\n") == [message("x"), message("\ufeffy")]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert parse(b"data: a\xffb\n\n") == [message("a\ufffdb")]


def test_stream_ending_mid_event_dispatches_nothing() -> None:
    assert parse(b"data: a\n") == []
    assert parse(b"data: a") == []


def test_every_two_chunk_split_gives_the_same_events() -> None:
    assert parse(MIXED_STREAM) == MIXED_EVENTS
    for offset in range(len(MIXED_STREAM) + 1):
        parser = SSEParser()
        events = parser.feed(MIXED_STREAM[:offset]) + parser.feed(MIXED_STREAM[offset:])
        assert events == MIXED_EVENTS, offset
        assert parser.retry == 2500
        assert parser.comments == ["hello"]
        assert parser.last_event_id == ""


def test_byte_by_byte_feeding_gives_the_same_events() -> None:
    parser = SSEParser()
    events = [
        event for i in range(len(MIXED_STREAM)) for event in parser.feed(MIXED_STREAM[i : i + 1])
    ]
    assert events == MIXED_EVENTS
