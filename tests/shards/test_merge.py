"""Shards' measurements merge into exactly what one process running all the attempts measures."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_guard.measurements import (
    Attempt,
    ProbeMeasurement,
    probe_from_dict,
    probe_to_dict,
)
from deploy_guard.probes.aggregate import MAX_SAMPLES, Aggregator, merge, pick_samples

CAUSES = ("close_code", "timeout", "missing_event", "isolation_breach", "connect_error")


@st.composite
def attempts(draw: st.DrawFn) -> tuple[float, Attempt]:
    """(seconds since the start, a finished session) with a unique session id."""
    ok = draw(st.booleans())
    phases = draw(st.sampled_from([("total",), ("handshake", "total"), ()]))
    durations = {p: draw(st.floats(min_value=0, max_value=120)) for p in phases}
    attempt = Attempt(
        ok=ok,
        cause=None if ok else draw(st.sampled_from(CAUSES)),
        detail="" if ok else draw(st.sampled_from(["a", "b"])),
        close_code=draw(st.sampled_from([None, 1000, 1011, 1006])),
        durations=durations,
        user=f"user-{draw(st.integers(1, 9))}",
        session=draw(st.uuids()).hex[:16],
    )
    return draw(st.floats(min_value=0, max_value=60)), attempt


def run(parts: list[tuple[float, Attempt]], planned: int) -> ProbeMeasurement:
    """What one aggregator says after these attempts, fed in the order they ended."""
    agg = Aggregator("chat", "websocket", planned)
    for elapsed, attempt in sorted(parts, key=lambda p: p[0]):
        agg.add(attempt, elapsed)
    return agg.snapshot(complete=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(attempts(), max_size=60), st.integers(1, 5), st.data())
def test_merged_shards_equal_one_run_of_all_their_attempts(
    done: list[tuple[float, Attempt]], n: int, data: st.DataObject
) -> None:
    shard_of = [data.draw(st.integers(0, n - 1)) for _ in done]
    shards = [run([a for a, k in zip(done, shard_of, strict=True) if k == i], 0) for i in range(n)]
    merged = merge(shards, planned=len(done))
    whole = run(done, len(done))
    assert merged == whole  # counts, close codes, histograms, percentiles, samples, first failure
    assert len(merged.samples) <= MAX_SAMPLES


@given(st.lists(attempts(), max_size=40), st.lists(attempts(), max_size=40))
def test_the_sample_pick_depends_only_on_the_set(
    a: list[tuple[float, Attempt]], b: list[tuple[float, Attempt]]
) -> None:
    failed = [replace(attempt, after=round(t, 3)) for t, attempt in a + b if not attempt.ok]
    left, right = failed[: len(a)], failed[len(a) :]
    assert pick_samples([*pick_samples(left), *pick_samples(right)]) == pick_samples(failed)


def test_samples_keep_variety_and_come_in_time_order() -> None:
    agg = Aggregator("chat", "websocket", planned=100, max_samples=3)
    for i in range(5):
        agg.add(Attempt(ok=False, cause="timeout", detail=f"t{i}", session=f"s{i}"), float(i))
    agg.add(Attempt(ok=False, cause="close_code", close_code=1011, session="x"), 6.0)
    agg.add(Attempt(ok=False, cause="isolation_breach", session="y"), 7.0)
    m = agg.snapshot()
    assert [(s.cause, s.after) for s in m.samples] == [
        ("timeout", 0.0),
        ("close_code", 6.0),
        ("isolation_breach", 7.0),
    ]
    assert m.first_failure_after == 0.0


def test_a_measurement_round_trips_through_json() -> None:
    done = [(0.5 * i, a) for i, a in enumerate(_mixed(40))]
    m = run(done, 50)
    back = probe_from_dict(probe_to_dict(m))
    assert back == m
    assert back.latencies == m.latencies


def test_an_aggregator_holds_10000_sessions_in_bounded_memory() -> None:
    """Counts, histograms and five samples: the size does not grow with the sessions."""
    agg = Aggregator("chat", "websocket", planned=20_000)
    attempts_ = _mixed(20_000)
    for i, attempt in enumerate(attempts_[:1_000]):
        agg.add(attempt, i * 0.01)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i, attempt in enumerate(attempts_[1_000:], start=1_000):
            agg.add(attempt, i * 0.01)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    m = agg.snapshot()
    assert m.done == 20_000
    assert len(m.samples) == MAX_SAMPLES
    assert grown < 64 * 1024, f"19,000 more sessions grew the aggregator by {grown} bytes"


def _mixed(n: int) -> list[Attempt]:
    """Sessions of a few latencies; every seventh closes with 1011, every 13th times out."""
    out = []
    for i in range(n):
        total = 0.01 * (1 + i % 50)
        durations = {"handshake": total / 10, "total": total}
        if i % 7 == 3:
            out.append(Attempt(False, "close_code", f"1011 #{i}", 1011, 101, durations))
        elif i % 13 == 5:
            out.append(Attempt(False, "timeout", f"timeout #{i}", 1000, 101, durations))
        else:
            out.append(Attempt(True, close_code=1000, status=101, durations=durations))
    return out
