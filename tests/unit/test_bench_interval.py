"""The interval ``python -m benchmarks.presence`` reports beside a median ratio: it holds the
median, it narrows as rounds agree, the same figures give the same interval, and too few
rounds give none."""

from __future__ import annotations

import statistics

from benchmarks.presence import median_interval


def test_the_interval_holds_the_median_and_lies_within_the_ratios() -> None:
    ratios = [0.91, 1.12, 1.04, 0.98, 1.30, 1.07, 0.95, 1.01, 1.21, 1.03, 0.99]
    interval = median_interval(ratios)
    assert interval is not None
    low, high = interval
    assert min(ratios) <= low <= statistics.median(ratios) <= high <= max(ratios)
    assert low < high


def test_rounds_that_agree_give_a_narrower_interval() -> None:
    spread = [0.70, 1.40, 0.85, 1.25, 1.05, 0.95, 1.30, 0.75, 1.10, 1.00]
    close = [1.04, 1.06, 1.05, 1.03, 1.05, 1.07, 1.05, 1.04, 1.06, 1.05]
    spread_interval, close_interval = median_interval(spread), median_interval(close)
    assert spread_interval is not None and close_interval is not None
    spread_low, spread_high = spread_interval
    close_low, close_high = close_interval
    assert close_high - close_low < (spread_high - spread_low) / 5


def test_the_same_figures_give_the_same_interval_and_too_few_rounds_none() -> None:
    ratios = [1.2, 0.9, 1.1, 1.0, 1.05, 0.95, 1.15, 1.02, 0.98, 1.07]
    assert median_interval(ratios) is not None
    assert median_interval(ratios) == median_interval(list(ratios))
    assert median_interval(ratios[:9]) is None
