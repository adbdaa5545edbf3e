"""The emulator's Cloud Monitoring data: Cloud Run's request metrics, and their arithmetic.

Cloud Run reports, per revision, ``run.googleapis.com/request_count`` (DELTA,
INT64) and ``run.googleapis.com/request_latencies`` (DELTA, DISTRIBUTION, in
milliseconds), both labelled ``response_code`` and ``response_code_class``, on
the ``cloud_run_revision`` resource. A request counts when it *ends* (a
WebSocket when it closes), so events are keyed by ``record.end_time``.

The store keeps raw events (one per finished request), not points: points
are built per query, so every aligner and reducer works from exact data.

- Raw points (``ALIGN_NONE``) are built per sampling period (60 s by default,
  like Cloud Run; ``sample_period_s`` makes it finer for tests), aligned to
  the epoch, newest first. Periods with no requests have no point.
- Events are selected by end time within the query interval
  (``start < end_time <= end``; with no start, the sampling period that holds
  ``end``), and only once visible: ``delay_s`` holds each event back for
  that many seconds after it happened. With ``report_lag_s`` (the emulator's
  ``--realistic`` profile) visibility is per sampling period, as on Cloud
  Monitoring ("Sampled every 60 seconds. After sampling, data is not visible
  for up to 180 seconds"): nothing of a period shows before the period has
  closed, and then only after a lag between ``min_report_lag_s`` and
  ``report_lag_s`` drawn per period and series from ``seed`` (reproducible
  run to run).
- Aligned points: windows of ``alignment_period`` (at least 60 s, as in the
  real API) ending at the interval's end, going back while they overlap the
  interval; empty windows are omitted. Windows are half-open like every
  ``TimeInterval``, ``(start, end]``: an event exactly on a boundary belongs
  to the earlier window.
- Percentiles (``ALIGN_PERCENTILE_*``, ``REDUCE_PERCENTILE_*``) are computed
  from the raw latencies (nearest-rank), not interpolated from buckets as
  Cloud Monitoring does: close to the real figure, and exact for tests.
- Distributions carry ``count``, ``mean``, ``sum_of_squared_deviation``,
  exponential ``bucket_options`` like Cloud Run's (100 finite buckets,
  growth 1.4, scale 1 ms) and ``bucket_counts`` (trailing zeros trimmed).

Everything here is pure data work with no gRPC: :mod:`monitoring_api` maps
requests onto :meth:`MetricStore.query` and its results onto protos.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from deploy_guard.emulator.contracts import RequestRecord
from deploy_guard.errors import EmulatorError

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
METRIC_TYPES = (REQUEST_COUNT, REQUEST_LATENCIES)
RESOURCE_TYPE = "cloud_run_revision"
#: ``Aggregation.alignment_period`` "must be at least 60 seconds" (with an aligner).
MIN_ALIGNMENT_PERIOD_S = 60

#: Cloud Run's request_latencies buckets: exponential, 100 finite, x1.4 from 1 ms.
BUCKETS = {"num_finite_buckets": 100, "growth_factor": 1.4, "scale": 1.0}

ValueType = Literal["INT64", "DOUBLE", "DISTRIBUTION"]
Labels = tuple[tuple[str, str], ...]

ALIGNERS = {
    "ALIGN_NONE",
    "ALIGN_DELTA",
    "ALIGN_RATE",
    "ALIGN_SUM",
    "ALIGN_MEAN",
    "ALIGN_COUNT",
    "ALIGN_MIN",
    "ALIGN_MAX",
    "ALIGN_PERCENTILE_05",
    "ALIGN_PERCENTILE_50",
    "ALIGN_PERCENTILE_95",
    "ALIGN_PERCENTILE_99",
}
REDUCERS = {
    "REDUCE_NONE",
    "REDUCE_SUM",
    "REDUCE_MEAN",
    "REDUCE_COUNT",
    "REDUCE_MIN",
    "REDUCE_MAX",
    "REDUCE_PERCENTILE_05",
    "REDUCE_PERCENTILE_50",
    "REDUCE_PERCENTILE_95",
    "REDUCE_PERCENTILE_99",
}


def _invalid(message: str) -> EmulatorError:
    return EmulatorError("INVALID_ARGUMENT", message)


@dataclass(frozen=True)
class Event:
    """One finished request, as the metrics see it."""

    end_time: datetime
    end_s: float  # end_time as epoch seconds: the arithmetic runs on this
    resource: Labels  # sorted (key, value) pairs of the cloud_run_revision labels
    response_code: int
    latency_ms: float

    @property
    def metric_labels(self) -> Labels:
        return _code_labels(self.response_code)


@functools.lru_cache(maxsize=1024)
def _code_labels(code: int) -> Labels:
    return (("response_code", str(code)), ("response_code_class", f"{code // 100}xx"))


@dataclass
class Point:
    """One output point: a window and its value (int, float, or raw latencies)."""

    start: datetime
    end: datetime
    value: int | float | list[float]


@dataclass
class Series:
    """One output time series."""

    metric_type: str
    metric_labels: dict[str, str]
    resource_labels: dict[str, str]
    metric_kind: Literal["DELTA", "GAUGE"]
    value_type: ValueType
    points: list[Point] = field(default_factory=list)


@dataclass(frozen=True)
class Query:
    """What ``ListTimeSeries`` asks, with the filter already reduced to a predicate."""

    metric_type: str
    matches: Callable[[dict[str, str], dict[str, str]], bool]  # (metric, resource labels)
    start: datetime | None
    end: datetime
    aligner: str = "ALIGN_NONE"
    alignment_period_s: float = 0.0
    reducer: str = "REDUCE_NONE"
    group_by: tuple[str, ...] = ()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def distribution(values: list[float]) -> dict[str, Any]:
    """``google.api.Distribution`` fields for raw values (exponential buckets)."""
    count = len(values)
    mean = sum(values) / count if count else 0.0
    ssd = sum((v - mean) ** 2 for v in values)
    n, growth, scale = BUCKETS["num_finite_buckets"], BUCKETS["growth_factor"], BUCKETS["scale"]
    counts = [0] * (int(n) + 2)
    for v in values:
        if v < scale:
            index = 0
        else:
            index = min(int(n) + 1, 1 + math.floor(math.log(v / scale, growth) + 1e-12))
        counts[index] += 1
    while counts and counts[-1] == 0:
        counts.pop()
    return {
        "count": count,
        "mean": mean,
        "sum_of_squared_deviation": ssd,
        "bucket_options": {"exponential_buckets": dict(BUCKETS)},
        "bucket_counts": counts,
    }


class MetricStore:
    """Raw request events per revision (a :class:`MetricSink`), queried into series."""

    def __init__(
        self,
        delay_s: float = 0.0,
        *,
        sample_period_s: float = 60.0,
        max_events: int = 500_000,
        clock: Callable[[], datetime] | None = None,
        report_lag_s: float | None = None,
        min_report_lag_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        if sample_period_s <= 0:
            raise ValueError("sample_period_s must be positive")
        if report_lag_s is not None and not 0 <= min_report_lag_s <= report_lag_s:
            raise ValueError("need 0 <= min_report_lag_s <= report_lag_s")
        self.delay_s = delay_s
        self.sample_period_s = sample_period_s
        #: None: an event is visible once it ended (and ``delay_s`` passed). A number:
        #: a sampling period's events become visible together, after the period
        #: closed plus a per-period lag of up to this many seconds.
        self.report_lag_s = report_lag_s
        self.min_report_lag_s = min_report_lag_s
        self.seed = seed
        self._lags: dict[tuple[int, Labels], float] = {}
        self.max_events = max_events
        self._clock = clock or (lambda: datetime.now(UTC))
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._clock()

    # ------------------------------------------------------------ MetricSink
    def request(self, record: RequestRecord) -> None:
        """Count a finished request (at its end time) for its revision."""
        ref = record.ref
        resource = (
            ("configuration_name", ref.configuration),
            ("location", ref.location),
            ("project_id", ref.project),
            ("revision_name", ref.revision),
            ("service_name", ref.service),
        )
        event = Event(
            record.end_time,
            record.end_time.timestamp(),
            resource,
            record.status,
            max(record.latency_s, 0.0) * 1000,
        )
        with self._lock:
            self._events.append(event)
            if len(self._events) > self.max_events + self.max_events // 10:
                del self._events[: len(self._events) - self.max_events]

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    # ------------------------------------------------------------ querying
    def lag_s(self, period: int, resource: Labels) -> float:
        """The reporting lag of one series' sampling period (seconds, from ``seed``)."""
        key = (period, resource)
        lag = self._lags.get(key)
        if lag is None:
            digest = hashlib.blake2b(repr((self.seed, key)).encode(), digest_size=8).digest()
            spread = (self.report_lag_s or 0.0) - self.min_report_lag_s
            lag = self.min_report_lag_s + spread * int.from_bytes(digest, "big") / 2**64
            if len(self._lags) > 100_000:
                self._lags.clear()
            self._lags[key] = lag
        return lag

    def visible_at(self, event: Event) -> float:
        """When ``event`` can be listed (epoch seconds)."""
        if self.report_lag_s is None:
            return event.end_s + self.delay_s
        step = self.sample_period_s
        period = math.ceil(event.end_s / step) - 1
        closed = (period + 1) * step
        return max(closed + self.lag_s(period, event.resource), event.end_s + self.delay_s)

    def _visible(self, query: Query) -> list[Event]:
        now = self._clock()
        cutoff = now - timedelta(seconds=self.delay_s)
        end = min(query.end, cutoff)
        start = query.start
        with self._lock:
            events = list(self._events)
        if start is None:  # an instant: the sampling period that holds ``end``
            step = self.sample_period_s
            lo = (math.ceil(query.end.timestamp() / step) - 1) * step
        else:
            lo = start.timestamp()
        hi = end.timestamp()
        chosen = [e for e in events if lo < e.end_s <= hi]
        if self.report_lag_s is None:
            return chosen
        now_s = now.timestamp()
        with self._lock:
            return [e for e in chosen if self.visible_at(e) <= now_s]

    def query(self, query: Query) -> list[Series]:
        """The series ``query`` asks for, points newest first (pure: no side effects)."""
        if query.metric_type not in METRIC_TYPES:
            return []
        _check_combination(query)
        distribution_metric = query.metric_type == REQUEST_LATENCIES
        groups: dict[tuple[Labels, Labels], list[Event]] = {}
        for event in self._visible(query):
            groups.setdefault((event.metric_labels, event.resource), []).append(event)
        groups = {  # the filter sees each series' labels once, not each event's
            key: events
            for key, events in groups.items()
            if query.matches(dict(key[0]), dict(key[1]))
        }
        series = [
            self._series(query, metric, resource, events, distribution_metric)
            for (metric, resource), events in sorted(groups.items())
        ]
        series = [s for s in series if s.points]
        if query.reducer != "REDUCE_NONE":
            series = _reduce(query, series)
        return series

    def _raw_points(self, events: list[Event], distribution_metric: bool) -> list[Point]:
        """One point per sampling period with events, newest first."""
        step = self.sample_period_s
        periods: dict[int, list[Event]] = {}
        for event in events:
            # period n holds (n*p, (n+1)*p]: an event exactly on a boundary closes it
            periods.setdefault(math.ceil(event.end_s / step) - 1, []).append(event)
        return [
            Point(
                datetime.fromtimestamp(n * step, UTC),
                datetime.fromtimestamp((n + 1) * step, UTC),
                [e.latency_ms for e in evs] if distribution_metric else len(evs),
            )
            for n, evs in sorted(periods.items(), reverse=True)
        ]

    def _series(
        self,
        query: Query,
        metric: Labels,
        resource: Labels,
        events: list[Event],
        distribution_metric: bool,
    ) -> Series:
        value_type: ValueType = "DISTRIBUTION" if distribution_metric else "INT64"
        out = Series(query.metric_type, dict(metric), dict(resource), "DELTA", value_type)
        if query.aligner == "ALIGN_NONE":
            out.points = self._raw_points(events, distribution_metric)
            return out
        period_s = query.alignment_period_s
        # in whole microseconds, so an event exactly on a boundary is not a float away from it
        period_us = round(period_s * 1_000_000)
        end_us = round(query.end.timestamp() * 1_000_000)
        windows: dict[int, list[Event]] = {}
        for event in events:
            # window k holds (end - (k+1)p, end - kp], half-open like every TimeInterval:
            # an event exactly at end - kp closes window k, it does not open window k-1
            k = max(0, (end_us - round(event.end_s * 1_000_000)) // period_us)
            windows.setdefault(k, []).append(event)
        needs_samples = query.aligner in ("ALIGN_COUNT", "ALIGN_MEAN", "ALIGN_MIN", "ALIGN_MAX")
        for k, inside in sorted(windows.items()):
            window_end = query.end - timedelta(seconds=k * period_s)
            samples = self._raw_points(inside, distribution_metric) if needs_samples else []
            value, kind, vtype = _align(query, inside, samples, distribution_metric)
            out.points.append(Point(window_end - timedelta(seconds=period_s), window_end, value))
            out.metric_kind, out.value_type = kind, vtype
        return out


def _check_combination(query: Query) -> None:
    if query.aligner not in ALIGNERS:
        raise _invalid(
            f"aligner {query.aligner} is not supported by the emulator; "
            f"use one of {', '.join(sorted(ALIGNERS))}"
        )
    if query.reducer not in REDUCERS:
        raise _invalid(
            f"reducer {query.reducer} is not supported by the emulator; "
            f"use one of {', '.join(sorted(REDUCERS))}"
        )
    for name in query.group_by:
        scope, _, label = name.replace(".label.", ".labels.").partition(".labels.")
        if scope not in ("metric", "resource") or not label:
            raise _invalid(
                f"group_by_fields entry {name!r} is not supported: "
                "use metric.labels.KEY or resource.labels.KEY"
            )
    if query.aligner != "ALIGN_NONE" and query.alignment_period_s <= 0:
        raise _invalid(f"{query.aligner} needs an alignment_period (at least 60 seconds)")
    if query.aligner != "ALIGN_NONE" and query.alignment_period_s < MIN_ALIGNMENT_PERIOD_S:
        raise _invalid(
            f"alignment_period {query.alignment_period_s:g}s is too short: "
            f"it must be at least {MIN_ALIGNMENT_PERIOD_S} seconds"
        )
    if query.reducer != "REDUCE_NONE" and query.aligner == "ALIGN_NONE":
        raise _invalid(f"{query.reducer} needs a per_series_aligner other than ALIGN_NONE")
    is_dist = query.metric_type == REQUEST_LATENCIES
    if query.aligner.startswith("ALIGN_PERCENTILE") and not is_dist:
        raise _invalid(
            f"{query.aligner} applies to DISTRIBUTION metrics; {query.metric_type} is INT64"
        )
    if is_dist and query.aligner in ("ALIGN_RATE", "ALIGN_MIN", "ALIGN_MAX"):
        raise _invalid(f"{query.aligner} is not supported for DISTRIBUTION metrics")


def _align(
    query: Query, events: list[Event], samples: list[Point], is_dist: bool
) -> tuple[int | float | list[float], Literal["DELTA", "GAUGE"], ValueType]:
    """One aligned value for a window: (value, metric kind, value type)."""
    aligner = query.aligner
    latencies = [e.latency_ms for e in events]
    if aligner in ("ALIGN_DELTA", "ALIGN_SUM"):
        return (
            (latencies if is_dist else len(events)),
            "DELTA",
            ("DISTRIBUTION" if is_dist else "INT64"),
        )
    if aligner == "ALIGN_RATE":
        return len(events) / query.alignment_period_s, "GAUGE", "DOUBLE"
    if aligner == "ALIGN_COUNT":
        return len(samples), "GAUGE", "INT64"
    if aligner.startswith("ALIGN_PERCENTILE"):
        return percentile(latencies, float(aligner.rsplit("_", 1)[1])), "GAUGE", "DOUBLE"
    if aligner == "ALIGN_MEAN":
        if is_dist:
            return sum(latencies) / len(latencies), "GAUGE", "DOUBLE"
        values = [float(p.value) for p in samples if isinstance(p.value, int)]
        return sum(values) / len(values), "GAUGE", "DOUBLE"
    counts = [int(p.value) for p in samples if isinstance(p.value, int)]
    return (min(counts) if aligner == "ALIGN_MIN" else max(counts)), "GAUGE", "INT64"


def _group_key(series: Series, fields: Iterable[str]) -> tuple[tuple[str, str], ...]:
    key = []
    for name in fields:
        scope, _, label = name.partition(".labels.")
        if not label:
            scope, _, label = name.partition(".label.")
        source = series.metric_labels if scope == "metric" else series.resource_labels
        if scope not in ("metric", "resource") or not label:
            raise _invalid(
                f"group_by_fields entry {name!r} is not supported: "
                "use metric.labels.KEY or resource.labels.KEY"
            )
        key.append((name, source.get(label, "")))
    return tuple(key)


def _reduce(query: Query, series: list[Series]) -> list[Series]:
    """Cross-series reduction: one series per group, one point per aligned window."""
    groups: dict[tuple[tuple[str, str], ...], list[Series]] = {}
    for s in series:
        groups.setdefault(_group_key(s, query.group_by), []).append(s)
    out = []
    for key, members in sorted(groups.items()):
        metric = {n.split(".", 2)[-1]: v for n, v in key if n.startswith("metric.")}
        resource = {n.split(".", 2)[-1]: v for n, v in key if n.startswith("resource.")}
        windows: dict[tuple[datetime, datetime], list[Point]] = {}
        for s in members:
            for p in s.points:
                windows.setdefault((p.start, p.end), []).append(p)
        first = members[0]
        reduced = Series(query.metric_type, metric, resource, first.metric_kind, first.value_type)
        for (start, end), points in sorted(windows.items(), reverse=True):
            value, vtype = _reduce_values(query.reducer, [p.value for p in points])
            reduced.points.append(Point(start, end, value))
            reduced.value_type = vtype
            if vtype != "DISTRIBUTION" and query.reducer != "REDUCE_SUM":
                reduced.metric_kind = "GAUGE"
        out.append(reduced)
    return out


def _reduce_values(
    reducer: str, values: list[int | float | list[float]]
) -> tuple[int | float | list[float], ValueType]:
    if reducer == "REDUCE_COUNT":
        return len(values), "INT64"
    if values and isinstance(values[0], list):  # distributions: pool the raw values
        pooled = [v for value in values if isinstance(value, list) for v in value]
        if reducer == "REDUCE_SUM":
            return pooled, "DISTRIBUTION"
        if reducer == "REDUCE_MEAN":
            return sum(pooled) / len(pooled), "DOUBLE"
        if reducer.startswith("REDUCE_PERCENTILE"):
            return percentile(pooled, float(reducer.rsplit("_", 1)[1])), "DOUBLE"
        return (min(pooled) if reducer == "REDUCE_MIN" else max(pooled)), "DOUBLE"
    numbers = [float(v) for v in values if not isinstance(v, list)]
    all_int = all(isinstance(v, int) for v in values)
    if reducer == "REDUCE_SUM":
        total = sum(numbers)
        return (int(total), "INT64") if all_int else (total, "DOUBLE")
    if reducer == "REDUCE_MEAN":
        return sum(numbers) / len(numbers), "DOUBLE"
    if reducer.startswith("REDUCE_PERCENTILE"):
        return percentile(numbers, float(reducer.rsplit("_", 1)[1])), "DOUBLE"
    chosen = min(numbers) if reducer == "REDUCE_MIN" else max(numbers)
    return (int(chosen), "INT64") if all_int else (chosen, "DOUBLE")
