"""The evidence sources an analysis reads, behind one small interface each.

Probes stream cumulative measurements while they run; Cloud Logging and Cloud
Monitoring are read in passes (``measure(complete=...)``), because each read
costs quota and points arrive late. Each has a no-op stand-in
(:class:`~deploy_guard.gcp.logs.NoLogs`, :class:`~deploy_guard.gcp.metrics.NoMetrics`)
when a policy has no rules of its kind, so the engine never asks "is there a
source?". Tests swap a source by wrapping the :data:`SourceFactory`, the same
seam production uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.logs import LogSource
    from deploy_guard.gcp.metrics import MetricSource
    from deploy_guard.gcp.tail import LiveLogs
    from deploy_guard.measurements import Measurement
    from deploy_guard.policy.model import Rule
    from deploy_guard.probes.target import Target


class ProbeSource(Protocol):
    """Runs probe rules against a target, streaming cumulative measurements."""

    def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]: ...


class RunnerProbes:
    """:class:`ProbeSource` over :func:`deploy_guard.probes.runner.run_rules`."""

    def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]:
        from deploy_guard.probes.runner import run_rules

        return run_rules(rules, target)


@dataclass(frozen=True)
class Scope:
    """What the evidence sources need to know about the candidate (and its window)."""

    project: str
    service: str
    revision: str
    baseline: tuple[str, ...]
    since: datetime
    rules: tuple[Rule, ...]
    #: Seconds a Cloud Monitoring point must be old to count (a rollout step counts
    #: only complete data; 0: everything up to now, as a check reads).
    metric_lag: float = 0.0


@dataclass
class Sources:
    probes: ProbeSource
    logs: LogSource
    metrics: MetricSource
    #: The watch's live logs source (one TailLogEntries stream, a sliding window of
    #: ``window`` s, polling at most every ``interval`` s as fallback); None when the
    #: scope has no logs rules.
    live_logs: Callable[[float, float], LiveLogs] | None = None


SourceFactory = Callable[[Scope], Sources]


def cloud_sources(clients: Any, calls: Any, *, retry_deadline: float = 30.0) -> SourceFactory:
    """The production sources: the probe runner, Cloud Logging and Cloud Monitoring."""

    def build(scope: Scope) -> Sources:
        from deploy_guard.gcp.logs import CloudLogging, NoLogs
        from deploy_guard.gcp.metrics import CloudMonitoring, NoMetrics

        common: dict[str, Any] = {
            "project": scope.project,
            "service": scope.service,
            "revision": scope.revision,
            "rules": scope.rules,
            "since": scope.since,
            "baseline": scope.baseline,
            "calls": calls,
            "retry_deadline": retry_deadline,
        }
        has_logs = any(r.kind == "logs" for r in scope.rules)
        has_metrics = any(r.kind == "metric" for r in scope.rules)

        def live_logs(window: float, interval: float) -> LiveLogs:
            from deploy_guard.gcp.tail import LiveLogs

            return LiveLogs(clients, window=window, interval=interval, **common)

        return Sources(
            probes=RunnerProbes(),
            logs=CloudLogging(clients, **common) if has_logs else NoLogs(),
            metrics=(
                CloudMonitoring(clients, metric_lag=scope.metric_lag, **common)
                if has_metrics
                else NoMetrics()
            ),
            live_logs=live_logs if has_logs else None,
        )

    return build
