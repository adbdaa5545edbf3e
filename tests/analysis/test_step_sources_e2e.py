"""A rollout step's Cloud Logging and Cloud Monitoring reads, against the emulator.

The production sources (:func:`~deploy_guard.analysis.sources.cloud_sources`)
read the emulator over gRPC; only the probes stand in, at the engine's seam,
so that they end at once (the case where a poller could spin). Monitoring
data is fed to the emulator's metric store as the router would (one
RequestRecord per finished request, at chosen end times), so windows are exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploy_guard.analysis.engine import Analysis, Engine, step_judges
from deploy_guard.analysis.sources import Scope, Sources, cloud_sources
from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.gcp.metrics import CloudMonitoring
from deploy_guard.measurements import Measurement, MetricMeasurement, ProbeMeasurement
from deploy_guard.policy import Policy, Rule
from deploy_guard.probes.target import Target
from deploy_guard.report.model import CheckReport
from deploy_guard.report.recorder import Recorder

CAND, BASE = "chat-00002-new", "chat-00001-old"


class EndAtOnce:
    """Probes that pass and end at once."""

    async def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]:
        for rule in rules:
            yield ProbeMeasurement(
                rule=rule.name, kind="http", planned=1, done=1, succeeded=1, complete=True
            )


async def test_a_step_reads_logs_once_per_interval_however_early_its_probes_end(
    emulator: Any, gcp_clients: Any
) -> None:
    rules = [
        Rule.model_validate({"name": "health", "kind": "http", "http": {"path": "/"}}),
        Rule.model_validate(
            {"name": "no-1011", "kind": "logs", "logs": {"patterns": ["1011"], "max_count": 0}}
        ),
        Rule.model_validate(
            {"name": "no-errors", "kind": "logs", "logs": {"filter": "severity>=ERROR"}}
        ),
    ]
    judges = step_judges([Policy(name="p", services=["chat"], rules=rules)])
    production = cloud_sources(gcp_clients, ApiCalls())

    def sources(scope: Scope) -> Sources:
        built = production(scope)
        return Sources(probes=EndAtOnce(), logs=built.logs, metrics=built.metrics)

    report = CheckReport(revision=CAND)
    recorder = Recorder(report, fields=dict, calls=dict, changed=lambda _r: None)
    scope = Scope(emulator.project, "chat", CAND, (BASE,), datetime.now(UTC), tuple(judges.rules()))
    duration, interval = 4.0, 1.0
    emulator.faults.reset_counts()
    analysis = Analysis(
        judges,
        scope,
        Target(base_url="http://127.0.0.1:9"),
        bound=60.0,
        log_interval=interval,
        duration=duration,
    )
    result = await Engine(sources, recorder).run(analysis)
    assert result.verdict.status == "pass", result.verdict.reasons
    reads = emulator.faults.count("ListLogEntries")
    # one query per pass for both logs rules: a pass every interval through the
    # window, and the last complete one
    implied = int(duration / interval) + 1
    assert implied - 1 <= reads <= implied + 1, reads
    assert report.evidence_passes["logs"] == reads


def at(ref: str, status: int, end: datetime, emulator: Any) -> RequestRecord:
    return RequestRecord(
        ref=RevisionRef(emulator.project, emulator.region, "chat", ref, "chat"),
        method="GET",
        url="http://chat/",
        protocol="HTTP/1.1",
        status=status,
        latency_s=0.01,
        start_time=end - timedelta(seconds=0.01),
        end_time=end,
    )


def error_rate(**extra: Any) -> Rule:
    return Rule.model_validate(
        {
            "name": "errors",
            "kind": "metric",
            "metric": {
                "type": "error_rate",
                "max": 0.05,
                "baseline": {"factor": 1.0},
                "min_requests": 1,
                "window": "10m",
                **extra,
            },
        }
    )


def monitoring(
    emulator: Any, clients: Any, *, since: datetime, now: datetime, lag: float, rule: Rule
) -> CloudMonitoring:
    return CloudMonitoring(
        clients,
        project=emulator.project,
        service="chat",
        revision=CAND,
        rules=[rule],
        since=since,
        baseline=[BASE],
        metric_lag=lag,
        now=lambda: now,
    )


@pytest.mark.parametrize(
    "emulator", [{"metrics_delay": 0.0}, {"metrics_delay": 120.0}], indirect=True
)
@pytest.mark.fault(
    "metrics",
    "Monitoring shows a step's last minutes late (delay)",
    "a step counts only points older than metric_lag: same figures at any delay up to it",
)
async def test_a_step_counts_only_points_older_than_metric_lag_for_both_sides(
    emulator: Any, gcp_clients: Any
) -> None:
    now = datetime.now(UTC)
    since = now - timedelta(minutes=10)
    store = emulator.metrics
    for i in range(10):  # complete data: 400 s old, all fine on both sides
        store.request(at(CAND, 200, now - timedelta(seconds=400 + i), emulator))
        store.request(at(BASE, 200, now - timedelta(seconds=400 + i), emulator))
    for i in range(10):  # the last minute, not complete yet: the candidate's half fails
        store.request(at(CAND, 500, now - timedelta(seconds=60 + i), emulator))
        store.request(at(BASE, 200 if i % 2 else 500, now - timedelta(seconds=60 + i), emulator))
    source = monitoring(emulator, gcp_clients, since=since, now=now, lag=180, rule=error_rate())
    [m] = await source.measure(complete=True)
    assert m.error is None, m.error
    assert (m.value, m.requests) == (0.0, 10)  # the young 500s are not counted...
    assert (m.baseline_value, m.baseline_requests) == (0.0, 10)  # ...on either side
    assert (m.start, m.end) == (since, now - timedelta(seconds=180))
    assert m.window_seconds == 420
    assert m.note == ""


@pytest.mark.parametrize("emulator", [{"metrics_delay": 0.0}], indirect=True)
async def test_a_metric_window_shorter_than_the_step_ends_metric_lag_ago(
    emulator: Any, gcp_clients: Any
) -> None:
    now = datetime.now(UTC)
    store = emulator.metrics
    store.request(at(CAND, 500, now - timedelta(seconds=500), emulator))  # before the window
    for i in range(4):
        store.request(at(CAND, 200, now - timedelta(seconds=200 + i), emulator))
        store.request(at(BASE, 200, now - timedelta(seconds=200 + i), emulator))
    rule = error_rate(window="2m")
    source = monitoring(
        emulator, gcp_clients, since=now - timedelta(minutes=30), now=now, lag=180, rule=rule
    )
    [m] = await source.measure(complete=False)
    assert (m.value, m.requests, m.baseline_requests) == (0.0, 4, 4)
    assert m.start == now - timedelta(seconds=300)
    assert m.end == now - timedelta(seconds=180)
    assert m.window_seconds == 120
    # a check (no lag) reads up to now, as it always did
    check = monitoring(
        emulator, gcp_clients, since=now - timedelta(minutes=30), now=now, lag=0, rule=rule
    )
    [c] = await check.measure(complete=False)
    assert c.end == now
    assert c.requests == 0  # nothing ended in the last two minutes


async def test_before_any_complete_data_a_step_reads_nothing_and_says_why(
    emulator: Any, gcp_clients: Any
) -> None:
    rule = error_rate()
    judges = step_judges([Policy(name="p", services=["chat"], rules=[rule])])
    scope = Scope(
        emulator.project,
        "chat",
        CAND,
        (BASE,),
        datetime.now(UTC) - timedelta(seconds=30),  # the step began 30 s ago
        (rule,),
        metric_lag=180.0,
    )
    source = cloud_sources(gcp_clients, ApiCalls())(scope).metrics
    emulator.faults.reset_counts()
    [m] = await source.measure(complete=True)
    assert isinstance(m, MetricMeasurement)
    assert m.value is None
    assert m.start is None
    assert m.end is None
    assert m.note.startswith("no complete Monitoring data yet")
    assert "points younger than metric_lag (180 s) are not counted" in m.note
    assert emulator.faults.count("ListTimeSeries") == 0  # no query for nothing
    result = judges.observe(m)
    assert result is not None
    assert result.status == "no_data"
    assert "points younger than metric_lag" in result.message


async def test_logs_relative_to_baseline_count_both_sides_over_the_same_window_once(
    emulator: Any, gcp_clients: Any
) -> None:
    now = datetime.now(UTC)
    since = now - timedelta(minutes=5)

    def logged(revision: str, seconds_ago: float, n: int) -> None:
        ref = RevisionRef(emulator.project, emulator.region, "chat", revision, "chat")
        for i in range(n):
            line = '{"severity": "ERROR", "message": "close code 1011"}'
            emulator.logs.revision_output(
                ref, "stderr", line, now - timedelta(seconds=seconds_ago + i)
            )

    logged(BASE, 600, 5)  # before the step: not in its window
    logged(BASE, 100, 6)
    logged(CAND, 120, 3)
    rule = Rule.model_validate(
        {
            "name": "no-more-1011",
            "kind": "logs",
            "logs": {"patterns": ["1011"], "relative_to_baseline": 1.0},
        }
    )
    judges = step_judges([Policy(name="p", services=["chat"], rules=[rule])])
    scope = Scope(emulator.project, "chat", CAND, (BASE,), since, (rule,))
    source = cloud_sources(gcp_clients, ApiCalls())(scope).logs
    [first] = await source.measure(complete=False)
    [again] = await source.measure(complete=False)  # re-reads the last minute: no double count
    for m in (first, again):
        assert m.error is None, m.error
        assert m.matches == {"1011": 3}
        assert m.baseline_matches == {"1011": 6}
        assert m.window_seconds == m.baseline_window_seconds
    assert judges.observe(again) is not None
    logged(CAND, 30, 5)  # now 8 against 6: over 1.0 x baseline
    [last] = await source.measure(complete=True)
    assert last.matches == {"1011": 8}
    assert last.baseline_matches == {"1011": 6}
    result = judges.observe(last)
    assert result is not None
    assert result.status == "fail", result
