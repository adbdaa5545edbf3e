"""Attempts in, cumulative :class:`ProbeMeasurement` snapshots out (pure), and merges of them.

The runner feeds every finished attempt to an :class:`Aggregator` and asks it
for a snapshot whenever it wants to tell the judge something. Nothing here
does I/O or reads a clock: the caller passes the elapsed time, so the numbers
are easy to test and cheap to recompute.

An aggregator keeps what the judge needs and no more, whatever the number of
sessions: counts by outcome, cause and close code; one latency
:class:`~deploy_guard.histogram.Histogram` per phase (percentiles within
0.78 %, the maximum exact); and a few failed attempts as samples. Each of the
three merges exactly, so :func:`merge` of N shards' last snapshots is the
snapshot one process running all their attempts would have given: the same
counts, the same percentiles (the same histogram), the same samples when the
attempts carry the same times.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace

from deploy_guard.histogram import PERCENTILES, Histogram
from deploy_guard.measurements import Attempt, ProbeMeasurement

__all__ = [
    "MAX_SAMPLES",
    "PERCENTILES",
    "Aggregator",
    "merge",
    "percentile",
    "pick_samples",
    "summarize",
]

#: Failed attempts kept as evidence (each with its transcript).
MAX_SAMPLES = 5


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Exact linear-interpolated percentile of sorted values (numpy's default): the reference
    the histogram's percentiles are held to in the tests."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = (len(sorted_values) - 1) * pct / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def summarize(values: Iterable[float]) -> dict[str, float]:
    """``{"p50": .., "p95": .., "p99": .., "max": ..}`` of the values, or {} for none, read
    from a histogram as every snapshot reads them (within 0.78 %; the max is exact)."""
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    return histogram.summary(PERCENTILES)


def _order(a: Attempt) -> tuple[float, str, str, str, str]:
    """When a failure ended, then who it was: a total order, the same in every process."""
    return (
        a.after if a.after is not None else math.inf,
        a.session or "",
        a.user or "",
        a.cause or "error",
        a.detail,
    )


def pick_samples(failures: Iterable[Attempt], limit: int = MAX_SAMPLES) -> tuple[Attempt, ...]:
    """The samples to show of ``failures``, in time order: variety first.

    The first failure of each cause (up to ``limit`` causes, earliest first), then the
    earliest of the others until ``limit``. So a run with 90 timeouts and one 1011 still
    shows the 1011. The choice depends only on the set: picking from the union of two
    picks gives the pick of the union of everything, which is what lets an aggregator keep
    ``limit`` attempts and shards merge exactly.
    """
    ordered = sorted(failures, key=_order)
    firsts: list[Attempt] = []
    seen: set[str] = set()
    for a in ordered:
        cause = a.cause or "error"
        if cause not in seen:
            seen.add(cause)
            firsts.append(a)
    chosen = firsts[:limit]
    if len(chosen) < limit:
        ids = {id(a) for a in chosen}
        chosen += [a for a in ordered if id(a) not in ids][: limit - len(chosen)]
    return tuple(sorted(chosen, key=_order))


class Aggregator:
    """Accumulates one rule's attempts; :meth:`snapshot` is the cumulative view."""

    def __init__(self, rule: str, kind: str, planned: int, max_samples: int = MAX_SAMPLES) -> None:
        self.rule = rule
        self.kind = kind
        self.planned = planned
        self.max_samples = max_samples
        self.done = 0
        self.succeeded = 0
        self.causes: Counter[str] = Counter()
        self.close_codes: Counter[int] = Counter()
        self.histograms: dict[str, Histogram] = {}
        self.samples: tuple[Attempt, ...] = ()
        self.first_failure_after: float | None = None

    def add(self, attempt: Attempt, elapsed: float) -> None:
        """Count one finished attempt; ``elapsed`` is seconds since the probe started."""
        self.done += 1
        if attempt.close_code is not None:
            self.close_codes[attempt.close_code] += 1
        for phase, seconds in attempt.durations.items():
            histogram = self.histograms.get(phase)
            if histogram is None:
                histogram = self.histograms[phase] = Histogram()
            histogram.add(seconds)
        if attempt.ok:
            self.succeeded += 1
            return
        self.causes[attempt.cause or "error"] += 1
        after = round(elapsed, 3)
        if self.first_failure_after is None or after < self.first_failure_after:
            self.first_failure_after = after
        self.samples = pick_samples(
            (*self.samples, replace(attempt, after=after)), self.max_samples
        )

    def snapshot(self, *, complete: bool = False, error: str | None = None) -> ProbeMeasurement:
        """The cumulative measurement so far (``complete`` on the last one)."""
        histograms = {k: h.copy() for k, h in self.histograms.items() if h.count}
        return ProbeMeasurement(
            rule=self.rule,
            kind=self.kind,
            planned=self.planned,
            done=self.done,
            succeeded=self.succeeded,
            failures_by_cause=dict(self.causes),
            close_codes=dict(sorted(self.close_codes.items())),
            latencies={k: h.summary(PERCENTILES) for k, h in histograms.items()},
            samples=self.samples,
            complete=complete,
            error=error,
            first_failure_after=self.first_failure_after,
            histograms=histograms,
        )


def merge(
    parts: Sequence[ProbeMeasurement],
    *,
    planned: int | None = None,
    complete: bool | None = None,
    max_samples: int = MAX_SAMPLES,
) -> ProbeMeasurement:
    """One rule's snapshots from several shards as the snapshot of one run of all their attempts.

    Counts add; histograms add bucket by bucket (percentiles re-read from the sum); samples
    are re-picked from the union (:func:`pick_samples`); the first failure is the earliest.
    ``planned`` defaults to the sum of the parts', ``complete`` to all of them being complete;
    the first error (in the order given) is the merged one. ValueError for no parts or parts
    of different rules or kinds.
    """
    if not parts:
        raise ValueError("nothing to merge")
    rule, kind = parts[0].rule, parts[0].kind
    if any(p.rule != rule or p.kind != kind for p in parts):
        raise ValueError(f"cannot merge measurements of different rules into {rule}")
    causes: Counter[str] = Counter()
    codes: Counter[int] = Counter()
    histograms: dict[str, Histogram] = {}
    for part in parts:
        causes.update(part.failures_by_cause)
        codes.update(part.close_codes)
        for phase, h in part.histograms.items():
            histograms.setdefault(phase, Histogram()).merge(h)
    firsts = [p.first_failure_after for p in parts if p.first_failure_after is not None]
    return ProbeMeasurement(
        rule=rule,
        kind=kind,
        planned=sum(p.planned for p in parts) if planned is None else planned,
        done=sum(p.done for p in parts),
        succeeded=sum(p.succeeded for p in parts),
        failures_by_cause={c: n for c, n in causes.items() if n},
        close_codes=dict(sorted(codes.items())),
        latencies={k: h.summary(PERCENTILES) for k, h in histograms.items() if h.count},
        samples=pick_samples((s for p in parts for s in p.samples), max_samples),
        complete=all(p.complete for p in parts) if complete is None else complete,
        error=next((p.error for p in parts if p.error is not None), None),
        first_failure_after=min(firsts) if firsts else None,
        histograms={k: h for k, h in histograms.items() if h.count},
    )
