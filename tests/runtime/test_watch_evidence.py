"""The watch's evidence judged look after look, its sources swapped at the factory seam."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from deploy_guard.analysis.sources import RunnerProbes, Scope, Sources
from deploy_guard.gcp.logs import NoLogs
from deploy_guard.measurements import MetricMeasurement
from deploy_guard.policy.load import parse_policy
from deploy_guard.policy.watch import watch_plan
from deploy_guard.probes.target import Target
from deploy_guard.runtime.watch_evidence import Watched, WatchEvidence
from waiting import eventually

POLICY = """
version: 1
name: rate
services: ["chat"]
watch: {{window: 5m, probe_interval: off, canary: off, metric_interval: 1s}}
rules:
  - name: error-rate
    kind: metric
    failure_limit: {limit}
    missing_data: {missing}
    metric: {{type: error_rate, window: 1m, min_requests: 5, max: 5%}}
"""


class Monitoring:
    """Every read says ``rate`` (or fails with ``error``), a new interval each time."""

    def __init__(self, rate: float, error: str | None = None) -> None:
        self.rate, self.error, self.reads = rate, error, 0

    def sources(self, scope: Scope) -> Sources:
        return Sources(RunnerProbes(), NoLogs(), self)  # type: ignore[arg-type]

    async def measure(self, *, complete: bool, deadline: float | None = None) -> list[Any]:
        self.reads += 1
        if self.error is not None:
            raise RuntimeError(self.error)
        end = datetime.now(UTC)
        return [
            MetricMeasurement(
                rule="error-rate",
                metric="error_rate",
                value=self.rate,
                requests=100,
                window_seconds=60.0,
                complete=True,
                start=end - timedelta(minutes=1),
                end=end,
            )
        ]


def evidence(monitoring: Monitoring, *, limit: int = 0, missing: str = "inconclusive") -> Any:
    policy = parse_policy(POLICY.format(limit=limit, missing=missing))
    return WatchEvidence(
        [policy],
        watch_plan([policy]),
        monitoring.sources,
        log_interval=1.0,
        metric_lag=0.0,
        wake=lambda: None,
    )


def watched() -> Watched:
    now = datetime.now(UTC)
    return Watched("p", "chat", "chat-00002-bbb", (), Target("http://127.0.0.1:9"), now, now)


async def test_failure_limit_tolerates_one_failing_read_and_fails_on_the_second() -> None:
    """Judged afresh every second, a rule with failure_limit 1 used to be tolerated for ever."""
    monitoring = Monitoring(rate=0.5)
    source = evidence(monitoring, limit=1)
    await source.start(watched())
    try:
        await eventually(lambda: source.judge().verdict.status == "fail", within=15, what="a fail")
    finally:
        await source.stop()
    assert source.metric_reads >= 2  # never on the first failing read


async def test_missing_data_fail_is_a_degraded_watch_never_a_fail() -> None:
    monitoring = Monitoring(rate=0.0, error="Monitoring is down")
    source = evidence(monitoring, missing="fail")
    await source.start(watched())
    try:
        await eventually(lambda: source.metric_reads >= 1, within=15, what="a read")
        judgement = source.judge()
    finally:
        await source.stop()
    assert judgement.verdict.status == "inconclusive"
    assert judgement.errors[0].startswith("Cloud Monitoring: ")
