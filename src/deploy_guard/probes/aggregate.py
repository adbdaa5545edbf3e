"""Attempts in, cumulative :class:`ProbeMeasurement` snapshots out (pure).

The runner feeds every finished attempt to an :class:`Aggregator` and asks it
for a snapshot whenever it wants to tell the judge something. Nothing here
does I/O or reads a clock: the caller passes the elapsed time, so the numbers
are easy to test and cheap to recompute (a snapshot over 1,000 attempts costs
well under a millisecond).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from deploy_guard.measurements import Attempt, ProbeMeasurement

#: Percentiles every latency phase reports.
PERCENTILES = (50, 95, 99)
#: Failed attempts kept as evidence (each with its transcript).
MAX_SAMPLES = 5


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile of already sorted values (as numpy's default)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = (len(sorted_values) - 1) * pct / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    if lo == hi:
        return sorted_values[lo]
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def summarize(values: Iterable[float]) -> dict[str, float]:
    """``{"p50": .., "p95": .., "p99": .., "max": ..}`` of the values, or {} for none."""
    ordered = sorted(values)
    if not ordered:
        return {}
    out = {f"p{p}": round(percentile(ordered, p), 6) for p in PERCENTILES}
    out["max"] = round(ordered[-1], 6)
    return out


class Aggregator:
    """Accumulates one rule's attempts; :meth:`snapshot` is the cumulative view.

    Samples favour variety: the first failure of each cause is kept, and once
    the sample list is full a new cause replaces a second sample of a cause
    already shown, so a run with 90 timeouts and one 1011 still shows the 1011.
    """

    def __init__(self, rule: str, kind: str, planned: int, max_samples: int = MAX_SAMPLES) -> None:
        self.rule = rule
        self.kind = kind
        self.planned = planned
        self.max_samples = max_samples
        self.done = 0
        self.succeeded = 0
        self.causes: Counter[str] = Counter()
        self.close_codes: Counter[int] = Counter()
        self.durations: dict[str, list[float]] = {}
        self.samples: list[Attempt] = []
        self.first_failure_after: float | None = None

    def add(self, attempt: Attempt, elapsed: float) -> None:
        """Count one finished attempt; ``elapsed`` is seconds since the probe started."""
        self.done += 1
        if attempt.close_code is not None:
            self.close_codes[attempt.close_code] += 1
        for phase, seconds in attempt.durations.items():
            self.durations.setdefault(phase, []).append(seconds)
        if attempt.ok:
            self.succeeded += 1
            return
        cause = attempt.cause or "error"
        self.causes[cause] += 1
        if self.first_failure_after is None:
            self.first_failure_after = round(elapsed, 3)
        self._keep_sample(attempt, cause)

    def _keep_sample(self, attempt: Attempt, cause: str) -> None:
        if len(self.samples) < self.max_samples:
            self.samples.append(attempt)
            return
        shown = Counter(s.cause or "error" for s in self.samples)
        if cause in shown:
            return
        repeated = [i for i, s in enumerate(self.samples) if shown[s.cause or "error"] > 1]
        if repeated:
            self.samples[repeated[-1]] = attempt

    def snapshot(self, *, complete: bool = False, error: str | None = None) -> ProbeMeasurement:
        """The cumulative measurement so far (``complete`` on the last one)."""
        return ProbeMeasurement(
            rule=self.rule,
            kind=self.kind,
            planned=self.planned,
            done=self.done,
            succeeded=self.succeeded,
            failures_by_cause=dict(self.causes),
            close_codes=dict(sorted(self.close_codes.items())),
            latencies={k: summarize(v) for k, v in self.durations.items() if v},
            samples=tuple(self.samples),
            complete=complete,
            error=error,
            first_failure_after=self.first_failure_after,
        )
