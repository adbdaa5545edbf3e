"""Cloud Monitoring evidence: error rate, latency and request count per revision.

Each ``metric`` rule becomes one or two ``ListTimeSeries`` queries per revision
(the candidate, and the baseline when the rule compares against it), with the
aggregation done server-side so one number comes back:

- ``error_rate``: ``request_count`` with ``ALIGN_DELTA`` + ``REDUCE_SUM`` grouped
  by ``metric.labels.response_code_class``; 5xx over all requests;
- ``latency``: ``request_latencies`` with ``ALIGN_PERCENTILE_xx`` and the
  matching percentile reducer across series (milliseconds, reported in
  seconds), plus the request count for the rule's minimum sample size;
- ``request_count``: ``request_count`` summed.

Cloud Monitoring samples every 60 s and shows points up to 180 s late, and a
WebSocket is counted only when it closes: a short check often sees no points.
That is ``value=None`` (no data), never zero and never a pass.

A rollout step judges real traffic, where a window read too early is not just
empty but *partial* (some of the last minutes' points, not all), which could
pass or fail a comparison on half the data. So a step's source has a
``metric_lag``: it reads ``[max(since, end - window), end]`` with
``end = now - metric_lag``, candidate and baseline over that same interval, and
until ``end`` is past the step's start there is nothing complete to read: the
rule gets ``value=None`` with a note saying so, and no query is spent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from deploy_guard import traces
from deploy_guard.errors import GuardError
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.errors import call
from deploy_guard.gcp.source import RevisionSource
from deploy_guard.measurements import MetricMeasurement

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
#: The real API's smallest useful alignment period.
MIN_ALIGNMENT = 60


class MetricSource(Protocol):
    """Gives the judge one snapshot per metric rule per pass.

    ``deadline`` bounds a pass's API calls, retries included (None: the
    source's own bound).
    """

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[MetricMeasurement]: ...


class NoMetrics:
    """Stands in when a policy has no metric rules."""

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[MetricMeasurement]:
        return []


def series_filter(metric_type: str, service: str, revision: str) -> str:
    return (
        f'metric.type="{metric_type}" AND resource.type="cloud_run_revision" '
        f'AND resource.labels.service_name="{service}" '
        f'AND resource.labels.revision_name="{revision}"'
    )


@dataclass(frozen=True)
class Figure:
    """One revision's number for a rule, and the requests behind it."""

    value: float | None
    requests: int


def _point_value(point: Any) -> float:
    v = point.value
    which = type(v).pb(v).WhichOneof("value")
    if which == "int64_value":
        return float(v.int64_value)
    if which == "double_value":
        return float(v.double_value)
    if which == "distribution_value":
        return float(v.distribution_value.mean)
    return 0.0


class CloudMonitoring(RevisionSource):
    """:class:`MetricSource` over ``MetricServiceClient.list_time_series``.

    Takes :class:`RevisionSource`'s arguments, plus ``metric_lag``: seconds a
    point must be old to count (0, a check's: everything up to now).
    """

    spec_field = "metric"

    def __init__(self, clients: Clients, *, metric_lag: float = 0.0, **scope: Any) -> None:
        super().__init__(clients, **scope)
        if metric_lag < 0:
            raise ValueError("metric_lag must not be negative")
        self.metric_lag = metric_lag

    def interval(self, rule: Rule) -> tuple[datetime, datetime] | None:
        """The interval a pass reads for ``rule`` now; None when nothing complete exists yet.

        ``[max(since, end - window), end]`` with ``end = now - metric_lag``.
        """
        spec = rule.metric
        assert spec is not None
        end = self.now() - timedelta(seconds=self.metric_lag)
        if self.metric_lag > 0 and end <= self.since:
            return None
        return max(self.since, end - timedelta(seconds=spec.window)), end

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[MetricMeasurement]:
        """One pass: every rule's queries at once (the last pass delays the verdict)."""
        measured = list(
            await asyncio.gather(
                *(
                    asyncio.to_thread(self._measure_rule, rule, complete, deadline)
                    for rule in self.rules
                )
            )
        )
        for m in measured:  # on the loop's thread: the report's picture is not thread-safe
            traces.metric_point(m)
        return measured

    def _measure_rule(
        self, rule: Rule, complete: bool, deadline: float | None = None
    ) -> MetricMeasurement:
        spec = rule.metric
        assert spec is not None
        read = self.interval(rule)
        if read is None:
            return MetricMeasurement(
                rule=rule.name,
                metric=spec.type,
                value=None,
                complete=complete,
                revision=self.revision,
                note=(
                    "no complete Monitoring data yet: points younger than metric_lag "
                    f"({self.metric_lag:g} s) are not counted, and this window began less "
                    "than that long ago"
                ),
            )
        start, end = read
        window = max(0.0, (end - start).total_seconds())
        try:
            cand = self._figure(rule, self.revision, start, end, deadline)
            base = Figure(None, 0)
            if spec.baseline is not None and self.baseline:
                # the same interval as the candidate's: a comparison of like with like
                base = self._combined_baseline(rule, start, end, deadline)
        except GuardError as exc:
            return MetricMeasurement(
                rule=rule.name,
                metric=spec.type,
                value=None,
                window_seconds=window,
                complete=complete,
                error=str(exc),
                revision=self.revision,
                start=start,
                end=end,
            )
        return MetricMeasurement(
            rule=rule.name,
            metric=spec.type,
            value=cand.value,
            requests=cand.requests,
            baseline_value=base.value,
            baseline_requests=base.requests,
            window_seconds=window,
            complete=complete,
            revision=self.revision,
            start=start,
            end=end,
        )

    def _combined_baseline(
        self, rule: Rule, start: datetime, end: datetime, deadline: float | None
    ) -> Figure:
        """The baseline revisions' figure, weighted by their requests."""
        figures = [self._figure(rule, rev, start, end, deadline) for rev in self.baseline]
        known = [f for f in figures if f.value is not None]
        requests = sum(f.requests for f in figures)
        if not known:
            return Figure(None, requests)
        weight = sum(f.requests for f in known)
        if weight == 0:
            return Figure(max(f.value for f in known if f.value is not None), requests)
        value = sum((f.value or 0.0) * f.requests for f in known) / weight
        return Figure(value, requests)

    def _figure(
        self, rule: Rule, revision: str, start: datetime, end: datetime, deadline: float | None
    ) -> Figure:
        spec = rule.metric
        assert spec is not None
        by_class = self._query(
            REQUEST_COUNT,
            revision,
            start,
            end,
            aligner="ALIGN_DELTA",
            reducer="REDUCE_SUM",
            group_by=["metric.labels.response_code_class"],
            deadline=deadline,
        )
        requests = int(sum(by_class.values()))
        if spec.type == "request_count":
            return Figure(float(requests) if by_class else None, requests)
        if spec.type == "error_rate":
            if requests == 0:
                return Figure(None, 0)
            return Figure(by_class.get("5xx", 0.0) / requests, requests)
        pct = spec.percentile or 99
        lat = self._query(
            REQUEST_LATENCIES,
            revision,
            start,
            end,
            aligner=f"ALIGN_PERCENTILE_{pct}",
            reducer=f"REDUCE_PERCENTILE_{pct}",
            group_by=[],
            combine=max,
            deadline=deadline,
        )
        if not lat:
            return Figure(None, requests)
        return Figure(max(lat.values()) / 1000.0, requests)

    def _query(
        self,
        metric_type: str,
        revision: str,
        start: datetime,
        end: datetime,
        *,
        aligner: str,
        reducer: str,
        group_by: list[str],
        combine: Callable[[list[float]], float] = sum,
        deadline: float | None = None,
    ) -> dict[str, float]:
        """Each group's points combined (summed counts; the worst percentile)."""
        client = self.clients.metrics()  # first: built (and imported) under the clients' lock
        from google.cloud import monitoring_v3

        period = max(MIN_ALIGNMENT, int((end - start).total_seconds()) + 1)
        agg = monitoring_v3.Aggregation(
            alignment_period={"seconds": period},
            per_series_aligner=getattr(monitoring_v3.Aggregation.Aligner, aligner),
            cross_series_reducer=getattr(monitoring_v3.Aggregation.Reducer, reducer),
            group_by_fields=group_by,
        )
        request = {
            "name": f"projects/{self.project}",
            "filter": series_filter(metric_type, self.service, revision),
            "interval": monitoring_v3.TimeInterval(start_time=start, end_time=end),
            "aggregation": agg,
            "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        }
        bound = self.bound(deadline)

        def fetch(retry: Any) -> dict[str, float]:
            out: dict[str, float] = {}
            for ts in client.list_time_series(request=request, retry=retry, timeout=bound):
                key = ",".join(ts.metric.labels.get(g.rsplit(".", 1)[-1], "") for g in group_by)
                values = [_point_value(p) for p in ts.points]
                if values:
                    out[key] = combine([out[key], *values] if key in out else values)
            return out

        return call(
            fetch,
            api="monitoring",
            what=f"reading {metric_type.rsplit('/', 1)[-1]} of {revision}",
            calls=self.calls,
            method="ListTimeSeries",
            deadline=bound,
        )
