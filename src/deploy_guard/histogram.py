"""Latency histograms that merge exactly: fixed log-linear buckets, percentiles from buckets.

A probe of 10,000 sessions cannot keep every duration of every phase, and N shards of one probe
must give the same percentiles as one process running all the sessions. Both follow from one
fixed bucket scheme, the same in every process (the idea of HdrHistogram and DDSketch):

- a positive value ``v = m * 2**e`` (``math.frexp``: ``0.5 <= m < 1``) falls in bucket
  ``e * 64 + floor((m - 0.5) * 128)``: 64 equal-width buckets per power of two. ``frexp`` and
  the multiplication by 128 are exact in binary floating point, so a value lands in the same
  bucket on every machine and Python version;
- zero (and anything not positive) is counted apart, as 0;
- the exact minimum and maximum are kept beside the buckets.

Merging histograms is adding counts bucket by bucket, so a merged histogram *is* the histogram
of all the values, and its percentiles are identical to a single run's over the same values.

A percentile is numpy's default (linear interpolation between the two nearest ranks) over the
values with each replaced by its bucket's middle, then clamped to the exact minimum and maximum.
A bucket's middle is within 1/128 (0.78 %) of every value in it; a linear interpolation of values
each within 1/128 is within 1/128 of the interpolation of the true values; clamping only moves
toward the truth. So every percentile is within **0.78 %** of the exact one over the same values,
the maximum is exact, and memory is at most 64 counters per power of two that the values span
(a few hundred for latencies from a millisecond to a minute), whatever the number of values.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Percentiles every latency phase reports.
PERCENTILES = (50, 95, 99)
#: Buckets per power of two; a bucket's middle is within 1 / (2 * SUB_BUCKETS) of its values.
SUB_BUCKETS = 64
#: The largest relative error of a percentile (before rounding to the microsecond).
RELATIVE_ERROR = 1 / (2 * SUB_BUCKETS)
#: Names the bucket scheme in serialised histograms: another scheme is refused, never mixed.
SCHEME = f"log2x{SUB_BUCKETS}"
_SCALE = 2 * SUB_BUCKETS


def bucket_of(value: float) -> int:
    """The bucket index of a positive, finite ``value`` (exact: the same on every machine)."""
    mantissa, exponent = math.frexp(value)
    return exponent * SUB_BUCKETS + int((mantissa - 0.5) * _SCALE)


def middle_of(index: int) -> float:
    """The value a bucket stands for: the middle of its range."""
    exponent, sub = divmod(index, SUB_BUCKETS)
    return math.ldexp(0.5 + (sub + 0.5) / _SCALE, exponent)


class Histogram:
    """Counts of values by bucket, plus the exact count, minimum and maximum.

    Mutable while an aggregator feeds it; :meth:`copy` freezes a view for a snapshot.
    """

    __slots__ = ("_keys", "buckets", "count", "high", "low", "zeros")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self._keys: list[int] = []  # sorted bucket indices, kept as buckets appear
        self.zeros = 0
        self.count = 0
        self.low = math.inf
        self.high = -math.inf

    def add(self, value: float) -> None:
        """Count one value; a NaN or infinity is ignored (it is no duration)."""
        if not math.isfinite(value):
            return
        self.count += 1
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value
        if value <= 0:
            self.zeros += 1
            return
        # bucket_of() and _bump(), inline: this runs four times per probe session
        mantissa, exponent = math.frexp(value)
        index = exponent * SUB_BUCKETS + int((mantissa - 0.5) * _SCALE)
        before = self.buckets.get(index)
        if before is None:
            insort(self._keys, index)
            self.buckets[index] = 1
        else:
            self.buckets[index] = before + 1

    def _bump(self, index: int, n: int) -> None:
        before = self.buckets.get(index)
        if before is None:
            insort(self._keys, index)
            self.buckets[index] = n
        else:
            self.buckets[index] = before + n

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to this one (the histogram of both sets of values)."""
        for index, n in other.buckets.items():
            self._bump(index, n)
        self.zeros += other.zeros
        self.count += other.count
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def copy(self) -> Histogram:
        twin = Histogram()
        twin.buckets = dict(self.buckets)
        twin._keys = list(self._keys)
        twin.zeros, twin.count, twin.low, twin.high = self.zeros, self.count, self.low, self.high
        return twin

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Histogram(count={self.count}, min={self.low}, max={self.high})"

    # -- reading -----------------------------------------------------------------------------
    def _values_at(self, ranks: Sequence[int]) -> list[float]:
        """The bucket middle of the value at each 0-based rank (``ranks`` ascending)."""
        out: list[float] = []
        it = iter(ranks)
        want = next(it, None)
        seen = self.zeros
        while want is not None and want < seen:
            out.append(0.0)
            want = next(it, None)
        for index in self._keys:
            if want is None:
                break
            seen += self.buckets[index]
            middle = middle_of(index)
            while want is not None and want < seen:
                out.append(middle)
                want = next(it, None)
        return out

    def percentiles(self, pcts: Iterable[float]) -> dict[float, float]:
        """Each percentile (0..100), numpy-interpolated over bucket middles, within min..max."""
        if self.count == 0:
            raise ValueError("percentile of no values")
        spots: dict[float, tuple[int, int, float]] = {}
        for pct in pcts:
            rank = (self.count - 1) * pct / 100
            lo, hi = math.floor(rank), math.ceil(rank)
            spots[pct] = (lo, hi, rank - lo)
        ranks = sorted({r for lo, hi, _ in spots.values() for r in (lo, hi)})
        value = dict(zip(ranks, self._values_at(ranks), strict=True))
        out: dict[float, float] = {}
        for pct, (lo, hi, frac) in spots.items():
            v = value[lo] if lo == hi else value[lo] + (value[hi] - value[lo]) * frac
            out[pct] = min(self.high, max(self.low, v))
        return out

    def summary(self, pcts: Sequence[int] = PERCENTILES) -> dict[str, float]:
        """``{"p50": .., "p95": .., "p99": .., "max": ..}`` to the microsecond; {} if empty."""
        if self.count == 0:
            return {}
        found = self.percentiles(pcts)
        out = {f"p{p}": round(found[p], 6) for p in pcts}
        out["max"] = round(self.high, 6)
        return out

    # -- serialising -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the scheme, the exact count/min/max and ``[index, count]`` pairs."""
        return {
            "scheme": SCHEME,
            "count": self.count,
            "zeros": self.zeros,
            "min": self.low if self.count else None,
            "max": self.high if self.count else None,
            "buckets": [[i, self.buckets[i]] for i in self._keys],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        """Read :meth:`to_dict`'s output back; ValueError naming what is wrong."""
        if data.get("scheme") != SCHEME:
            raise ValueError(
                f"histogram scheme {data.get('scheme')!r} is not {SCHEME!r} (another "
                "deploy-guard version wrote it): run every shard with the same version"
            )
        out = cls()
        for pair in _list(data.get("buckets"), "buckets"):
            if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(x) for x in pair)):
                raise ValueError(f"histogram bucket {pair!r} is not [index, count]")
            if pair[1] <= 0 or pair[0] in out.buckets:
                raise ValueError(f"histogram bucket {pair!r} is repeated or not positive")
            out._bump(pair[0], pair[1])
        out.zeros = _count(data.get("zeros"), "zeros")
        out.count = _count(data.get("count"), "count")
        if out.count != out.zeros + sum(out.buckets.values()):
            raise ValueError("histogram count is not the sum of its buckets")
        if out.count:
            out.low, out.high = _number(data.get("min")), _number(data.get("max"))
            if not out.low <= out.high:
                raise ValueError("histogram min is above its max")
        return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _count(x: Any, what: str) -> int:
    if not _is_int(x) or x < 0:
        raise ValueError(f"histogram {what} {x!r} is not a count")
    return int(x)


def _number(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError(f"histogram bound {x!r} is not a number")
    return float(x)


def _list(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        raise ValueError(f"histogram {what} is not a list")
    return x
