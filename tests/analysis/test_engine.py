"""The analysis engine runs one analysis, and runs again with a new window, from plain data.

The probe source stands in at the seam production has (the engine's
:data:`~deploy_guard.analysis.sources.SourceFactory`); logs and metrics are the
production no-op sources a policy without such rules gets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from deploy_guard.analysis.engine import Analysis, Engine, judges_for
from deploy_guard.analysis.sources import Scope, Sources
from deploy_guard.gcp.logs import NoLogs
from deploy_guard.gcp.metrics import NoMetrics
from deploy_guard.measurements import Measurement, ProbeMeasurement
from deploy_guard.policy import HttpSpec, Policy, Rule
from deploy_guard.probes.target import Target
from deploy_guard.report.model import CheckReport
from deploy_guard.report.recorder import Recorder

RULE = Rule(name="health", kind="http", http=HttpSpec(path="/health", requests=4))
POLICY = Policy(name="p", services=["svc"], rules=[RULE])


class ScriptedProbes:
    """Answers each window with the next scripted outcome: (succeeded, failed) of 4."""

    def __init__(self, windows: list[tuple[int, int]]) -> None:
        self.windows = windows

    async def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]:
        ok, bad = self.windows.pop(0)
        for rule in rules:
            yield ProbeMeasurement(
                rule=rule.name,
                kind="http",
                planned=ok + bad,
                done=ok + bad,
                succeeded=ok,
                failures_by_cause={"status": bad} if bad else {},
                complete=True,
            )


def _analysis(since: datetime) -> Analysis:
    judges = judges_for([POLICY])
    scope = Scope("proj", "svc", "svc-2", ("svc-1",), since, tuple(judges.rules()))
    return Analysis(judges, scope, Target(base_url="http://127.0.0.1:9"), bound=30.0)


async def test_an_analysis_runs_again_with_a_new_window_and_its_own_verdict() -> None:
    probes = ScriptedProbes([(2, 2), (4, 0)])
    scopes: list[Scope] = []

    def sources(scope: Scope) -> Sources:
        scopes.append(scope)
        return Sources(probes=probes, logs=NoLogs(), metrics=NoMetrics())

    report = CheckReport(revision="svc-2")
    recorder = Recorder(report, fields=dict, calls=dict, changed=lambda _r: None)
    engine = Engine(sources, recorder)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = await engine.run(_analysis(start))
    second = await engine.run(_analysis(start + timedelta(minutes=2)))
    assert first.verdict.status == "fail"
    assert first.verdict.deciding == ("health",)
    assert second.verdict.status == "pass"  # the first window's failures are not carried over
    assert [s.since for s in scopes] == [start, start + timedelta(minutes=2)]
    assert [e.event for e in report.timeline.events].count("evidence_started") == 2
