"""The pure aggregation of attempts into cumulative measurements.

``percentile`` is the exact reference (numpy's interpolation over every value); snapshots and
``summarize`` read latency histograms instead: within 0.78 % of it, the max exact (held to
that bound, and merges to exactness, in tests/shards/test_histogram.py and test_merge.py).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy_guard.measurements import Attempt
from deploy_guard.probes.aggregate import Aggregator, percentile, summarize


def ok(total: float = 0.1, code: int | None = 1000) -> Attempt:
    return Attempt(ok=True, close_code=code, status=101, durations={"total": total})


def bad(cause: str, code: int | None = None, detail: str = "") -> Attempt:
    return Attempt(ok=False, cause=cause, close_code=code, detail=detail, durations={"total": 1.0})


def test_counts_histogram_and_first_failure() -> None:
    agg = Aggregator("chat", "websocket", planned=10)
    agg.add(ok(), 0.5)
    agg.add(bad("close_code", 1011), 7.25)
    agg.add(ok(), 7.5)
    agg.add(bad("close_code", 1011), 8.0)
    agg.add(bad("timeout", 1000), 9.0)
    m = agg.snapshot()
    assert (m.planned, m.done, m.succeeded, m.failed) == (10, 5, 2, 3)
    assert m.failures_by_cause == {"close_code": 2, "timeout": 1}
    assert m.close_codes == {1000: 3, 1011: 2}
    assert m.first_failure_after == 7.25
    assert not m.complete
    assert agg.snapshot(complete=True).complete


def test_samples_keep_variety_when_full() -> None:
    agg = Aggregator("chat", "websocket", planned=100, max_samples=3)
    for i in range(5):
        agg.add(bad("timeout", detail=f"t{i}"), float(i))
    agg.add(bad("close_code", 1011, detail="the 1011"), 6.0)
    agg.add(bad("isolation_breach", detail="leak"), 7.0)
    causes = [s.cause for s in agg.snapshot().samples]
    assert len(causes) == 3
    assert set(causes) == {"timeout", "close_code", "isolation_breach"}


def test_the_exact_reference_interpolates_like_numpy() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert summarize([]) == {}
    assert summarize([0.2]) == {"p50": 0.2, "p95": 0.2, "p99": 0.2, "max": 0.2}
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


@given(st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=200))
def test_percentiles_are_ordered_and_bounded(values: list[float]) -> None:
    s = summarize(values)
    assert min(values) - 1e-6 <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"] + 1e-6
    assert s["max"] == round(max(values), 6)
