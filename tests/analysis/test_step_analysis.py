"""A rollout step's analysis from plain data: its window, fail-fast, its judges, its bound.

Every source stands in at the engine's seam (the
:data:`~deploy_guard.analysis.sources.SourceFactory`): scripted probes end at
once, a scripted log source answers each pass and notes when it was asked, on
the event loop's clock. Times are only compared with the step's window (a
lower bound the engine guarantees), never with how long something took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from deploy_guard.analysis.engine import (
    Analysis,
    AnalysisResult,
    Engine,
    judges_for,
    on_every_step,
    step_judges,
)
from deploy_guard.analysis.sources import Scope, Sources
from deploy_guard.gcp.metrics import NoMetrics
from deploy_guard.judge.combine import Judges
from deploy_guard.measurements import LogMeasurement, Measurement, ProbeMeasurement
from deploy_guard.policy import Policy, Rule
from deploy_guard.probes.target import Target
from deploy_guard.report.model import CheckReport
from deploy_guard.report.recorder import Recorder

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
#: asyncio may run a timer up to its clock's resolution early: lower bounds allow that.
EARLY = 1e-3


def http(name: str, **extra: Any) -> Rule:
    return Rule.model_validate(
        {"name": name, "kind": "http", "http": {"path": "/health", "requests": 2}, **extra}
    )


def logs(name: str) -> Rule:
    return Rule.model_validate(
        {"name": name, "kind": "logs", "logs": {"patterns": ["1011"], "max_count": 0}}
    )


def policy(*rules: Rule, fail_fast: bool = True) -> Policy:
    return Policy(name="p", services=["svc"], rules=list(rules), fail_fast=fail_fast)


@dataclass
class Probes:
    """Every probe rule ends at once: all passed, or all ``failed``."""

    failed: bool = False
    asked: list[str] = field(default_factory=list)

    async def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]:
        for rule in rules:
            self.asked.append(rule.name)
            bad = 2 if self.failed else 0
            yield ProbeMeasurement(
                rule=rule.name,
                kind="http",
                planned=2,
                done=2,
                succeeded=2 - bad,
                failures_by_cause={"status": bad} if bad else {},
                complete=True,
            )


@dataclass
class Logs:
    """Each pass: the matches the script says (the last number repeats); notes when asked."""

    rules: Sequence[Rule]
    script: list[int] = field(default_factory=lambda: [0])
    passes: list[tuple[float, bool]] = field(default_factory=list)  # (loop time, complete)

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[LogMeasurement]:
        self.passes.append((asyncio.get_running_loop().time(), complete))
        n = self.script[min(len(self.passes), len(self.script)) - 1]
        return [
            LogMeasurement(rule=r.name, entries_scanned=n, matches={"1011": n}, complete=complete)
            for r in self.rules
            if r.kind == "logs"
        ]


@dataclass
class Step:
    """One engine, one analysis, and the sources it was given."""

    judges: Judges
    probes: Probes = field(default_factory=Probes)
    script: list[int] = field(default_factory=lambda: [0])
    scopes: list[Scope] = field(default_factory=list)
    logs: Logs | None = None
    report: CheckReport = field(default_factory=lambda: CheckReport(revision="svc-2"))

    def sources(self, scope: Scope) -> Sources:
        self.scopes.append(scope)
        self.logs = Logs(scope.rules, self.script)
        return Sources(probes=self.probes, logs=self.logs, metrics=NoMetrics())

    async def run(
        self,
        *,
        duration: float | None,
        bound: float = 30.0,
        rules: Sequence[Rule] | None = None,
        paced: bool = False,
    ) -> tuple[AnalysisResult, float]:
        """The result, and the loop time it came at, counted from the analysis' start."""
        recorder = Recorder(self.report, fields=dict, calls=dict, changed=lambda _r: None)
        scope = Scope(
            "proj",
            "svc",
            "svc-2",
            ("svc-1",),
            SINCE,
            tuple(rules if rules is not None else self.judges.rules()),
        )
        analysis = Analysis(
            self.judges,
            scope,
            Target(base_url="http://127.0.0.1:9"),
            bound=bound,
            log_interval=0.05,
            metric_interval=0.05,
            duration=duration,
            paced=paced,
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await Engine(self.sources, recorder).run(analysis)
        return result, loop.time() - start


async def test_a_step_whose_probes_end_at_once_passes_only_after_its_duration() -> None:
    step = Step(judges_for([policy(http("health"))]))
    result, after = await step.run(duration=0.4)
    assert result.verdict.status == "pass"
    assert after >= 0.4 - EARLY
    assert not result.timed_out


async def test_log_passes_go_on_until_the_window_is_over_then_one_complete_pass() -> None:
    step = Step(judges_for([policy(http("health"), logs("no-1011"))]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    result, _ = await step.run(duration=0.4)
    finished = loop.time()
    assert result.verdict.status == "pass"
    assert step.logs is not None
    passes = step.logs.passes
    assert [complete for _, complete in passes] == [False] * (len(passes) - 1) + [True]
    last_at = passes[-1][0] - start
    assert last_at >= 0.4 - EARLY  # the complete pass comes after the window...
    # ...and the verdict after it (one clock: run()'s own start is read after ours)
    assert finished >= passes[-1][0]
    # never more often than the interval (0.05 s) while the window lasts
    regular = [at for at, complete in passes if not complete]
    assert all(b - a >= 0.05 - EARLY for a, b in pairwise(regular))


async def test_fail_fast_ends_a_step_at_once_before_its_window() -> None:
    step = Step(judges_for([policy(http("health"), logs("no-1011"))]), script=[0, 3])
    result, _after = await step.run(duration=60.0, bound=120.0)
    assert result.verdict.status == "fail"
    assert result.verdict.deciding == ("no-1011",)
    assert step.logs is not None
    assert not any(complete for _, complete in step.logs.passes)  # no wait for the window
    events = [e.event for e in step.report.timeline.events]
    assert "fail_fast" in events


async def test_without_fail_fast_a_failure_waits_for_the_window_like_a_pass() -> None:
    step = Step(judges_for([policy(http("health"), fail_fast=False)]), Probes(failed=True))
    result, after = await step.run(duration=0.3)
    assert result.verdict.status == "fail"
    assert after >= 0.3 - EARLY


async def test_the_bound_still_bounds_a_step() -> None:
    step = Step(judges_for([policy(http("health"), logs("no-1011"))]))
    result, _after = await step.run(duration=30.0, bound=0.3)
    assert result.timed_out
    assert "timed out after 0.3 s" in result.verdict.reasons[-1]


async def test_a_check_analysis_still_ends_when_its_probes_end() -> None:
    step = Step(judges_for([policy(http("health"), logs("no-1011"))]))
    result, _after = await step.run(duration=None, bound=30.0)
    assert result.verdict.status == "pass"
    assert step.logs is not None
    assert step.logs.passes[-1][1]  # the last pass was the complete one, as a check's


def test_step_judges_leave_out_probe_rules_that_run_only_before_the_first_step() -> None:
    tag_only = http("deep-session", every_step=False)
    rules = [http("health"), tag_only, logs("no-1011")]
    judges = step_judges([policy(*rules)])
    assert [r.name for r in judges.rules()] == ["health", "no-1011"]
    assert [r.rule for r in judges.results()] == ["health", "no-1011"]  # not even pending
    assert judges.final().status != "fail"
    assert not on_every_step(tag_only)
    assert on_every_step(logs("x"))
    # the tag analysis (and a check) keeps every rule
    assert [r.name for r in judges_for([policy(*rules)]).rules()] == [r.name for r in rules]


async def test_a_rule_left_out_of_a_step_is_neither_probed_nor_reported() -> None:
    tag_only = http("deep-session", every_step=False)
    rules = [http("health"), tag_only]
    step = Step(step_judges([policy(*rules)]))
    result, _after = await step.run(duration=0.1, rules=rules)  # the scope names it anyway
    assert result.verdict.status == "pass"
    assert step.probes.asked == ["health"]
    assert [r.name for r in step.scopes[0].rules] == ["health"]
    assert [r.rule for r in result.verdict.rules] == ["health"]
    assert [r["rule"] for r in step.report.to_dict()["rules"]] == ["health"]


def test_a_policy_left_with_no_rule_for_a_step_still_judges() -> None:
    judges = step_judges([policy(http("deep-session", every_step=False))])
    assert judges.rules() == []
    assert judges.final().status == "pass"


@pytest.mark.parametrize("duration", [0.0, 0.2])
async def test_a_step_with_nothing_to_measure_ends_with_its_window(duration: float) -> None:
    step = Step(step_judges([policy(http("deep-session", every_step=False))]))
    result, after = await step.run(duration=duration)
    assert result.verdict.status == "pass"
    assert after >= duration - EARLY


async def test_a_paced_step_reads_once_per_interval_from_its_start_to_its_complete_pass() -> None:
    """A rollout's quota: the first pass one interval in (the previous stage read just
    before), the passes aligned on the window's end, the complete one an interval after."""
    step = Step(judges_for([policy(http("health"), logs("no-1011"))]))
    loop = asyncio.get_running_loop()
    start = loop.time()
    result, _after = await step.run(duration=0.27, paced=True)
    assert result.verdict.status == "pass"
    assert step.logs is not None
    times = [at - start for at, _ in step.logs.passes]
    kinds = [complete for _, complete in step.logs.passes]
    assert kinds[-1]
    assert not any(kinds[:-1])
    assert 2 <= len(times) <= 5  # 4 regular passes on time; a late loop makes fewer, not more
    assert times[0] >= 0.05 - EARLY  # not half a second in, as a check reads
    assert all(b - a >= 0.05 - EARLY for a, b in pairwise(times)), times  # the complete one too


async def test_a_paced_stage_without_a_window_reads_only_its_complete_pass_when_short() -> None:
    step = Step(judges_for([policy(http("health"), logs("no-1011"))]))
    result, _after = await step.run(duration=None, paced=True)
    assert result.verdict.status == "pass"
    assert step.logs is not None
    assert [complete for _, complete in step.logs.passes] == [True]
