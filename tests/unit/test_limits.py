"""The token bucket of MAX_CONNECTS_PER_SECOND and the expiry heap, on fake clocks."""

from __future__ import annotations

import pytest

from tornado_sse.connection import Connection
from tornado_sse.errors import CloseReason
from tornado_sse.expiry import MIN_COMPACT, ExpiryQueue
from tornado_sse.limits import TokenBucket
from tornado_sse.protocol import RequestSnapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_of_one_seconds_worth_then_refuses():
    clock = Clock()
    bucket = TokenBucket(5, clock=clock)
    assert [bucket.take() for _ in range(7)] == [True] * 5 + [False] * 2


def test_bucket_refills_at_its_rate_up_to_its_burst():
    clock = Clock()
    bucket = TokenBucket(10, clock=clock)
    assert all(bucket.take() for _ in range(10)) and not bucket.take()
    clock.now += 0.25  # 2.5 tokens back
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 60  # never more than the burst
    assert sum(bucket.take() for _ in range(20)) == 10


def test_bucket_below_one_per_second_still_allows_one():
    clock = Clock()
    bucket = TokenBucket(0.5, clock=clock)
    assert bucket.take() and not bucket.take()
    clock.now += 1.9
    assert not bucket.take()
    clock.now += 0.2
    assert bucket.take()


def test_bucket_needs_a_positive_rate():
    with pytest.raises(ValueError):
        TokenBucket(0)


def conn(name: str) -> Connection:
    return Connection(name, RequestSnapshot("/sse/x", {}, "rid"))


def test_expiry_queue_gives_the_due_streams_earliest_first_and_skips_ended_ones():
    queue = ExpiryQueue()
    a, b, c, d = conn("a"), conn("b"), conn("c"), conn("d")
    for deadline, item in ((30, c), (10, a), (20, b), (20, d)):
        queue.add(deadline, item)
    b.detach()  # ended before its deadline
    assert queue.next_deadline() == 10
    assert queue.pop_due(9) == []
    assert queue.pop_due(25) == [a, d]
    assert queue.next_deadline() == 30
    c.close_reason = CloseReason.CLIENT_CLOSED
    c.detach()
    assert queue.next_deadline() is None and len(queue) == 0


def test_expiry_queue_stays_bounded_by_the_open_streams_under_churn():
    queue = ExpiryQueue()
    live = [conn("live%d" % i) for i in range(10)]
    for item in live:
        queue.add(1e9, item)
    for i in range(20 * MIN_COMPACT):  # streams that come and go long before their deadline
        gone = conn("gone%d" % i)
        queue.add(1e9, gone)
        gone.detach()
    assert len(queue) < MIN_COMPACT + len(live)
    assert queue.pop_due(1e9) == live
