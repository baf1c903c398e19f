"""The log of user sends that reaches streams whose connect callback was in flight."""

from __future__ import annotations

import time

from tornado_sse.user_sends import SendLog, UserSend, merged, pack, parse_mark, unpack


def test_the_send_log_gives_a_users_sends_since_a_moment_in_order():
    log = SendLog()
    began = time.monotonic()
    assert log.since("ann", began) == ((), (0, 0))
    first = log.log("ann", b"one", False, keep=60.0)
    log.log("bob", b"other", False, keep=60.0)
    second = log.log("ann", None, True, keep=60.0)
    sends, through = log.since("ann", began)
    later = time.monotonic()
    assert [(s.mark, s.frame, s.close) for s in sends] == [
        (first, b"one", False),
        (second, None, True),
    ]
    assert began <= sends[0].at <= sends[1].at <= later  # when each was logged
    assert first < second == through == (0, 3)  # bob's send took (0, 2)
    assert log.since("ann", later + 1.0)[0] == ()  # none logged since then
    log.log("cy", b"gone soon", False, keep=0.0)
    log.log("bob", b"lets the expired go", False, keep=60.0)
    assert len(log) == 4 and log.since("cy", began)[0] == ()  # the one kept 0 s went


def test_a_send_packs_and_unpacks_whole():
    for frame, close in [(b"data: x\n\n", False), (None, True), (b"", True), (None, False)]:
        assert unpack((1, 2), pack(frame, close), 7.5) == UserSend((1, 2), frame, close, 7.5)
    assert parse_mark(b"1733187000000-7") == (1733187000000, 7)
    assert parse_mark("0-0") < parse_mark("5-0") < parse_mark("5-1")


def test_held_sends_after_the_log_follow_it_once_each():
    logged = (UserSend((5, 0), b"a", False, 1.0),)
    held = [
        UserSend((9, 0), b"c", False, 2.0),
        UserSend((5, 0), b"a", False, 2.0),
        UserSend((7, 1), b"b", False, 2.0),
    ]
    held.append(UserSend((1, 0), b"before the connect", False, 2.0))
    assert [s.frame for s in merged(logged, held, through=(6, 0))] == [b"a", b"b", b"c"]
