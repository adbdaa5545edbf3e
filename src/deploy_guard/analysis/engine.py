"""Run one analysis: stream evidence from the sources into the judge until it decides.

An :class:`Analysis` is data: the rules (as :class:`~deploy_guard.judge.combine.Judges`,
one per policy), the candidate and its baseline, the window's start, the
target the probes reach, the bound and the polling rhythm. :meth:`Engine.run`
returns an :class:`AnalysisResult`; a strategy that wants another window builds
a new :class:`Analysis` and runs it again (each run has its own judges and
sources, so nothing leaks between windows).

The concurrency, in one place: the probes stream into a queue; the log and
metric pollers make a pass every interval while the probes run and one last
complete pass after them; :meth:`Engine._decide` feeds the judge and stops as
soon as it has an early verdict (fail-fast) or every source is done. A source
that raises never escapes: its open rules become errors that say why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deploy_guard.analysis.sources import ProbeSource, Scope, SourceFactory, Sources
from deploy_guard.errors import ConfigError
from deploy_guard.judge.combine import Judges, duplicate_rule, with_reason
from deploy_guard.log import redact_text
from deploy_guard.measurements import (
    LogMeasurement,
    Measurement,
    MetricMeasurement,
    source_failed,
)
from deploy_guard.report.recorder import Recorder, log

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.judge import RuleResult, Verdict
    from deploy_guard.policy.model import Policy, Rule
    from deploy_guard.probes.target import Target

#: Seconds the log and metric pollers give the probes to get going before their
#: first pass (less when the probes report sooner): see
#: :func:`deploy_guard.runtime.session.warm_imports`.
POLL_GRACE = 0.5
#: Bound (seconds) on the one log and metric pass that completes the report after
#: fail-fast decided early: see :meth:`Engine.complete`.
COMPLETION_BOUND = 5.0


def judges_for(policies: Sequence[Policy]) -> Judges:
    """The judges of ``policies``; two policies naming a rule alike is exit 2."""
    twice = duplicate_rule(policies)
    if twice is not None:
        raise ConfigError(
            f"rule name {twice!r} appears in two policies that apply to this service; rename one"
        )
    return Judges(policies)


@dataclass(frozen=True)
class Analysis:
    """One analysis as data: what to judge, against what, over which window, how long."""

    judges: Judges
    scope: Scope
    target: Target
    #: Seconds the evidence phase may take (the check's bound).
    bound: float
    log_interval: float = 10.0
    log_settle: float = 0.0
    metric_interval: float = 60.0


@dataclass
class AnalysisResult:
    """What one analysis found: its verdict, and what a report-only completion needs."""

    verdict: Verdict
    judges: Judges
    sources: Sources
    #: Loop time by which the analysis had to end (its bound).
    deadline: float
    #: Fail-fast decided while log or metric rules were still waiting for evidence.
    cut_short: bool = False
    timed_out: bool = False


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that
    lands as the awaited event fires, and a poller cancelled by a decision (the
    probes finishing at that very moment) would run one more pass, or sleep
    through ``--log-settle``, while the decision waits for it.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Engine:
    """Runs analyses with the sources a :data:`SourceFactory` builds, recording as it goes."""

    def __init__(self, sources: SourceFactory, recorder: Recorder) -> None:
        self.sources = sources
        self.recorder = recorder
        self._first_failure = False

    async def run(self, analysis: Analysis) -> AnalysisResult:
        """Every source concurrently until the judge decides, all complete, or time is up."""
        judges, rules = analysis.judges, list(analysis.scope.rules)
        report = self.recorder.report
        sources = self.sources(analysis.scope)
        bound = analysis.bound
        result = AnalysisResult(
            verdict=judges.final(),
            judges=judges,
            sources=sources,
            deadline=asyncio.get_running_loop().time() + bound,
        )
        # Every rule is in the report (and the live view) from the start, pending, in
        # policy order: a rule whose first snapshot comes late (a 60 s hold) still shows.
        report.set_rules(judges.results())
        self.recorder.event("evidence_started", rules=[r.name for r in rules], timeout_s=bound)
        queue: asyncio.Queue[Measurement | None] = asyncio.Queue()
        probes_started, probes_done = asyncio.Event(), asyncio.Event()
        probe_rules = [r for r in rules if r.kind in ("http", "websocket")]

        def poller(
            source: str, measure: Callable[..., Any], interval: float, settle: float = 0.0
        ) -> Any:
            return self._poll(
                source,
                measure,
                interval,
                probes_started,
                probes_done,
                queue,
                rules=rules,
                settle=settle,
            )

        tasks = [
            asyncio.create_task(
                self._pump_probes(
                    sources.probes, probe_rules, analysis.target, queue, probes_started
                )
            ),
            asyncio.create_task(
                poller("logs", sources.logs.measure, analysis.log_interval, analysis.log_settle)
            ),
            asyncio.create_task(
                poller("metrics", sources.metrics.measure, analysis.metric_interval)
            ),
        ]

        def probes_finished(_task: object) -> None:
            probes_started.set()
            probes_done.set()

        tasks[0].add_done_callback(probes_finished)
        try:
            async with asyncio.timeout(bound):
                result.verdict = await self._decide(result, queue, running=len(tasks))
        except TimeoutError:
            result.verdict = with_reason(judges.final(), f"the check timed out after {bound:g} s")
            result.timed_out = True
            self.recorder.event("check_timed_out", after_s=bound)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.recorder.sync()
        return result

    async def _pump_probes(
        self,
        probes: ProbeSource,
        rules: Sequence[Rule],
        target: Target,
        queue: asyncio.Queue[Measurement | None],
        started: asyncio.Event,
    ) -> None:
        complete: set[str] = set()
        try:
            if rules:
                async with contextlib.aclosing(probes.stream(rules, target)) as stream:  # type: ignore[type-var]
                    async for m in stream:
                        started.set()
                        if m.complete:
                            complete.add(m.rule)
                        queue.put_nowait(m)
        except Exception as exc:  # never swallowed: the rules still open become errors
            self._source_failed("probes", exc, [r for r in rules if r.name not in complete], queue)
        finally:
            queue.put_nowait(None)

    def _source_failed(
        self,
        source: str,
        exc: Exception,
        rules: Sequence[Rule],
        queue: asyncio.Queue[Measurement | None],
    ) -> None:
        """An evidence source raised: log it, and end each of its rules with the cause."""
        error = redact_text(f"the {source} source failed: {type(exc).__name__}: {exc}")
        names = [r.name for r in rules]
        self.recorder.error("evidence_source_failed", source=source, rules=names, error=error)
        for rule in rules:
            metric = rule.metric.type if rule.metric is not None else ""
            queue.put_nowait(source_failed(rule.name, rule.kind, error, metric=metric))

    async def _poll(
        self,
        source: str,
        measure: Callable[..., Any],
        interval: float,
        probes_started: asyncio.Event,
        probes_done: asyncio.Event,
        queue: asyncio.Queue[Measurement | None],
        *,
        rules: Sequence[Rule] = (),
        settle: float = 0.0,
    ) -> None:
        """Passes every ``interval`` s while probes run, then one last complete pass.

        The first pass waits until the probes report (at most :data:`POLL_GRACE`
        s); the last one starts ``settle`` s after the probes complete (at once
        by default).
        """
        passes = self.recorder.report.evidence_passes
        kind = "logs" if source == "logs" else "metric"
        try:
            await _wait(probes_started, min(interval, POLL_GRACE))
            while not probes_done.is_set():
                got: list[LogMeasurement | MetricMeasurement] = await measure(complete=False)
                if got:
                    passes[source] = passes.get(source, 0) + 1
                for m in got:
                    queue.put_nowait(m)
                await _wait(probes_done, interval)
            if settle > 0:
                await asyncio.sleep(settle)
            got = await measure(complete=True)
            if got:
                passes[source] = passes.get(source, 0) + 1
            for m in got:
                queue.put_nowait(m)
        except Exception as exc:  # never swallowed: the source's rules become errors
            self._source_failed(source, exc, [r for r in rules if r.kind == kind], queue)
        finally:
            queue.put_nowait(None)

    async def _decide(
        self, result: AnalysisResult, queue: asyncio.Queue[Measurement | None], *, running: int
    ) -> Verdict:
        judges = result.judges
        while running:
            m = await queue.get()
            if m is None:
                running -= 1
                continue
            rule = judges.observe(m)
            if rule is None:
                continue
            self._on_result(rule)
            early = judges.early()
            if early is not None and (judges.fail_fast or early.status != "fail"):
                if early.status == "fail":
                    self.recorder.event("fail_fast", deciding=list(early.deciding))
                    result.cut_short = bool(judges.waiting_for_sources())
                return early
        return judges.final()

    def _on_result(self, result: RuleResult) -> None:
        self.recorder.report.update_rule(result)
        if result.status == "fail" and not self._first_failure:
            self._first_failure = True
            self.recorder.event("first_failure_seen", rule=result.rule, counts=result.counts)
        else:
            self.recorder.sync()

    async def complete(self, result: AnalysisResult) -> None:
        """After an early decision, one last log and metric pass, for the report only.

        Fail-fast acts on the first failure; log and metric rules still waiting
        then would be reported as they stood, a log rule "passing" on a pass that
        ran before the candidate's 1011 lines were written. One pass, after the
        action (it never delays a rollback) and bounded by :data:`COMPLETION_BOUND`
        and the analysis' own bound, fills them in. The verdict and the action
        stand; a pass that fails or is interrupted leaves the rules as judged.
        """
        event = self.recorder.event
        judges, sources = result.judges, result.sources
        kinds = {r.rule: r.kind for r in judges.waiting_for_sources()}
        if not kinds:
            return
        waiting = list(kinds)
        remaining = result.deadline - asyncio.get_running_loop().time()
        bound = min(COMPLETION_BOUND, remaining)
        if bound <= 0:
            event("evidence_not_completed", rules=waiting, why="the check's bound is up")
            return
        passes: dict[str, Awaitable[Sequence[Measurement]]] = {}
        if "logs" in kinds.values():
            passes["logs"] = sources.logs.measure(complete=True, deadline=bound)
        if "metric" in kinds.values():
            passes["metrics"] = sources.metrics.measure(complete=True, deadline=bound)
        try:
            async with asyncio.timeout(bound):
                batches = await asyncio.gather(*passes.values())
        except TimeoutError:
            event("evidence_not_completed", rules=waiting, why=f"no answer in {bound:.1f} s")
            return
        except Exception as exc:  # the action stands whatever this report-only pass hits
            log.warning("evidence_completion_failed", error=f"{type(exc).__name__}: {exc}")
            event("evidence_not_completed", rules=waiting, why=type(exc).__name__)
            return
        except asyncio.CancelledError:
            # The action is done and verified: a signal now only ends the extra pass.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            event("evidence_not_completed", rules=waiting, why="interrupted")
            return
        report = self.recorder.report
        counted = report.evidence_passes
        for source, batch in zip(passes, batches, strict=True):
            if batch:
                counted[source] = counted.get(source, 0) + 1
        completed: dict[str, str] = {}
        for m in (m for batch in batches for m in batch):
            if m.error is not None:  # a failed read adds nothing: the rule stays as judged
                completed[m.rule] = f"unchanged ({m.error})"
                continue
            observed = judges.observe(m)
            if observed is not None and observed.rule in kinds:
                report.update_rule(observed)
                completed[observed.rule] = observed.status
        self.recorder.sync()
        event("evidence_completed", rules=completed)
