"""The pub/sub reader's RESP parsing (tornado_sse.cluster.resp): byte-exact replies of RESP2
and RESP3, replies split anywhere, and streams that are not RESP."""

from __future__ import annotations

import pytest

from tornado_sse.cluster import resp


def message(channel: bytes, data: bytes, push: bytes = b">") -> bytes:
    return b"%s3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        push,
        len(channel),
        channel,
        len(data),
        data,
    )


SUBSCRIBED = b">3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n"


@pytest.mark.parametrize(
    "raw, value",
    [
        (b"+OK\r\n", "OK"),
        (b":42\r\n", 42),
        (b":-3\r\n", -3),
        (b"$5\r\nhello\r\n", b"hello"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"_\r\n", None),
        (b"#t\r\n", True),
        (b"#f\r\n", False),
        (b",1.5\r\n", "1.5"),
        (b"(12345678901234567890\r\n", 12345678901234567890),
        (b"*2\r\n$1\r\na\r\n:1\r\n", [b"a", 1]),
        (b">2\r\n$4\r\npong\r\n$0\r\n\r\n", [b"pong", b""]),
        (b"~1\r\n$1\r\nx\r\n", [b"x"]),
        (b"*1\r\n*1\r\n:7\r\n", [[7]]),
        (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a bulk string holds any bytes, line ends too
        (b"=7\r\ntxt:abc\r\n", b"txt:abc"),
        (b"%1\r\n+key\r\n:2\r\n", ["key", 2]),  # a map: its keys and values in turn
        (b"|1\r\n+ttl\r\n:3\r\n:9\r\n", 9),  # an attribute is skipped
    ],
)
def test_each_reply_type_parses_to_its_value(raw: bytes, value: object) -> None:
    replies, used, need = resp.parse(raw)
    assert replies == [value]
    assert used == len(raw)
    assert need == used + 1


def test_error_replies_are_values_with_their_message() -> None:
    replies, used, _ = resp.parse(b"-ERR unknown command\r\n!9\r\nSYNTAX no\r\n")
    assert [r.message for r in replies] == ["ERR unknown command", "SYNTAX no"]
    assert used == 37


def test_a_stream_split_anywhere_gives_only_whole_replies_and_the_rest_later() -> None:
    stream = SUBSCRIBED + message(b"room", b"one\r\ntwo") + message(b"room", b"", b"*")
    whole, used, _ = resp.parse(stream)
    assert used == len(stream)
    for cut in range(len(stream) + 1):
        first, used, need = resp.parse(stream[:cut])
        assert used <= cut < need <= len(stream) + 1, cut
        rest, used_rest, _ = resp.parse(stream[:cut][used:] + stream[cut:])
        assert first + rest == whole, cut
        assert used + used_rest == len(stream)


def test_a_large_bulk_string_says_how_many_bytes_it_needs_once_its_length_has_arrived() -> None:
    big = message(b"room", b"x" * 1_000_000)
    replies, used, need = resp.parse(SUBSCRIBED + big[:100_000])
    assert (len(replies), used, need) == (1, len(SUBSCRIBED), len(SUBSCRIBED) + len(big))
    _, used, need = resp.parse(big[:20])  # its length not here yet: any more bytes may do
    assert (used, need) == (0, 21)


def test_events_are_kind_channel_and_payload() -> None:
    stream = (
        SUBSCRIBED
        + message(b"room", b"x")
        + message(b"tornado_sse:c:a b", b'{"id":1}', b"*")
        + b">3\r\n$11\r\nunsubscribe\r\n$4\r\nroom\r\n:0\r\n"
        + b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"  # a RESP2 pong: the link ignores the kind
    )
    replies, _, _ = resp.parse(stream)
    assert resp.events(replies) == [
        ("subscribe", b"room", 1),
        ("message", b"room", b"x"),
        ("message", b"tornado_sse:c:a b", b'{"id":1}'),
        ("unsubscribe", b"room", 0),
        ("pong", b"", None),
    ]


def test_notices_without_a_channel_are_events_with_an_empty_channel() -> None:
    moving = b">4\r\n+MOVING\r\n:1\r\n:15\r\n+10.0.0.2:6379\r\n"
    replies, _, _ = resp.parse(moving + b">2\r\n$9\r\nMIGRATING\r\n:2\r\n")
    assert [kind for kind, _, _ in resp.events(replies)] == ["MOVING", "MIGRATING"]
    assert {channel for _, channel, _ in resp.events(replies)} == {b""}


def test_an_error_reply_on_a_subscription_is_a_protocol_error() -> None:
    replies, _, _ = resp.parse(SUBSCRIBED + b"-NOAUTH Authentication required.\r\n")
    with pytest.raises(resp.ProtocolError, match="NOAUTH"):
        resp.events(replies)


@pytest.mark.parametrize("reply", [b"+OK\r\n", b":1\r\n", b"*0\r\n", b"*1\r\n:1\r\n"])
def test_replies_a_subscription_never_gets_are_protocol_errors(reply: bytes) -> None:
    replies, _, _ = resp.parse(reply)
    with pytest.raises(resp.ProtocolError, match="not a pub/sub reply"):
        resp.events(replies)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"?what\r\n", "unexpected reply type"),
        (b"$x\r\n", "not an integer"),
        (b"*two\r\n", "not an integer"),
        (b"$3\r\nabcde\r\n", "without its end of line"),
        (b"!3\r\nabcde\r\n", "without its end of line"),
        (b"!-7\r\n", "a negative length"),
        (b"$-2\r\n", "a negative length"),
        (b"=-1\r\n", "a negative length"),
        (b">-1\r\n", "a negative count"),
        (b"%-3\r\n", "a negative count"),
        (b"+" + b"a" * (64 * 1024 + 1), "without an end of line"),
    ],
)
def test_bytes_that_are_not_resp_are_refused(raw: bytes, match: str) -> None:
    with pytest.raises(resp.ProtocolError, match=match):
        resp.parse(raw)


MIXED = (
    SUBSCRIBED
    + message(b"room", b"one\r\ntwo")
    + message(b"tornado_sse:c:a b", b"", b"*")
    + b">3\r\n$11\r\nunsubscribe\r\n$4\r\nroom\r\n:0\r\n"
    + message(b"r", b"x" * 300)
)


def test_parse_events_gives_what_parse_then_events_give_for_a_stream_split_anywhere() -> None:
    for cut in range(len(MIXED) + 1):
        expected, used, need = resp.parse(MIXED[:cut])
        assert resp.parse_events(MIXED[:cut]) == (resp.events(expected), used, need), cut
    assert [kind for kind, _, _ in resp.parse_events(MIXED)[0]] == [
        "subscribe",
        "message",
        "message",
        "unsubscribe",
        "message",
    ]


@pytest.mark.parametrize(
    "raw, match",
    [
        (b">3\r\n$7\r\nmessage\r\n$x\r\nroom\r\n$1\r\na\r\n", "not an integer"),
        (b">3\r\n$7\r\nmessage\r\n$4\r\nroomy\r\n$1\r\na\r\n", "without its end of line"),
        (b">3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n:1\r\n", None),  # not a message's payload
        (b">3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$1\r\nab\r\n", "without its end of line"),
        (b">3\r\n$7\r\nmessage\r\n$-1\r\n$1\r\na\r\n", None),
    ],
)
def test_parse_events_reads_a_malformed_message_as_parse_does(raw: bytes, match: str) -> None:
    if match is None:  # not what a server writes, yet RESP: the same event either way
        assert resp.parse_events(raw) == (resp.events(resp.parse(raw)[0]), len(raw), len(raw) + 1)
        return
    with pytest.raises(resp.ProtocolError, match=match):
        resp.parse(raw)
    with pytest.raises(resp.ProtocolError, match=match):
        resp.parse_events(raw)


def test_a_well_formed_message_is_read_by_the_shortcut() -> None:
    raw = message(b"room", b"x\r\ny")
    assert resp._message(raw, 0) == (("message", b"room", b"x\r\ny"), len(raw))
    assert resp._message(raw[:-1], 0) is None  # not whole: parse says what it needs
