"""The latency histogram: a fixed bucket scheme, percentiles within 0.78 %, exact merges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy_guard.histogram import (
    PERCENTILES,
    RELATIVE_ERROR,
    Histogram,
    bucket_of,
    middle_of,
)
from deploy_guard.probes.aggregate import percentile

durations = st.floats(min_value=0, max_value=3600, allow_nan=False)


def histogram(values: list[float]) -> Histogram:
    h = Histogram()
    for v in values:
        h.add(v)
    return h


@given(st.floats(min_value=1e-9, max_value=1e9))
def test_a_value_lies_in_its_bucket_and_the_middle_is_within_the_bound(value: float) -> None:
    index = bucket_of(value)
    assert bucket_of(middle_of(index)) == index
    assert abs(middle_of(index) - value) <= RELATIVE_ERROR * value
    assert RELATIVE_ERROR == 1 / 128


def test_the_buckets_are_the_same_on_every_machine() -> None:
    """frexp and a multiplication by a power of two are exact: these indices never change."""
    assert [bucket_of(v) for v in (1e-6, 0.001, 0.25, 1.0, 7.0, 60.0)] == [
        -1213, -575, -64, 64, 240, 440,
    ]  # fmt: skip
    assert middle_of(64) == 1.0078125


@given(st.lists(durations, min_size=1, max_size=300))
def test_percentiles_are_within_the_bound_of_the_exact_ones(values: list[float]) -> None:
    found = histogram(values).percentiles(PERCENTILES)
    ordered = sorted(values)
    for pct in PERCENTILES:
        exact = percentile(ordered, pct)
        assert abs(found[pct] - exact) <= RELATIVE_ERROR * exact + 1e-12, pct
    summary = histogram(values).summary()
    assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    assert summary["max"] == round(max(values), 6)  # exact
    assert summary["p50"] >= round(min(values), 6)


@given(st.lists(durations, max_size=200), st.lists(durations, max_size=200))
def test_merging_is_the_histogram_of_all_the_values(a: list[float], b: list[float]) -> None:
    merged = histogram(a)
    merged.merge(histogram(b))
    whole = histogram(a + b)
    assert merged == whole
    assert merged.summary() == whole.summary()


def test_one_value_and_zeros_are_exact() -> None:
    assert histogram([0.2]).summary() == {"p50": 0.2, "p95": 0.2, "p99": 0.2, "max": 0.2}
    assert histogram([0.0, 0.0, 0.0]).summary() == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    assert histogram([]).summary() == {}
    with pytest.raises(ValueError, match="no values"):
        histogram([]).percentiles([50])
    h = histogram([math.nan, math.inf, 1.0])
    assert h.count == 1  # no duration is infinite or NaN


def test_memory_is_bounded_by_the_range_not_the_count() -> None:
    """10,000 sessions from 1 ms to 60 s: a few hundred counters, not 10,000 values."""
    h = histogram([0.001 * 1.0007**i for i in range(10_000)])  # 1 ms .. ~1.1 s, all distinct
    assert h.count == 10_000
    assert len(h.buckets) <= 64 * 11  # 64 per power of two, ~10 powers of two spanned


@given(st.lists(durations, max_size=100))
def test_serialising_round_trips(values: list[float]) -> None:
    h = histogram(values)
    assert Histogram.from_dict(h.to_dict()) == h


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"scheme": "log2x32"}, "scheme"),
        ({"count": 99}, "not the sum"),
        ({"buckets": [[1, 0]]}, "not positive"),
        ({"buckets": [[1, 1], [1, 1]]}, "repeated"),
        ({"buckets": [["a", 1]]}, r"not \[index, count\]"),
        ({"min": 5.0, "max": 1.0}, "min is above"),
        ({"zeros": -1}, "not a count"),
    ],
)
def test_a_damaged_histogram_is_refused(change: dict[str, object], words: str) -> None:
    data = histogram([1.0, 2.0]).to_dict() | change
    with pytest.raises(ValueError, match=words):
        Histogram.from_dict(data)
