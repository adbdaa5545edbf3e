"""Run one analysis: stream evidence from the sources into the judge until it decides.

An :class:`Analysis` is data: the rules (as :class:`~deploy_guard.judge.combine.Judges`,
one per policy), the candidate and its baseline, the window's start, the
target the probes reach, the bound and the polling rhythm. :meth:`Engine.run`
returns an :class:`AnalysisResult`; a strategy that wants another window builds
a new :class:`Analysis` and runs it again (each run has its own judges and
sources, so nothing leaks between windows).

The concurrency, in one place: every source is one
:class:`~deploy_guard.analysis.streams.Source` (probes stream; log and metric
passes keep the probes' pace), pumped into one queue; :meth:`Engine._decide`
feeds the judge and stops as soon as it has an early verdict (fail-fast) or
every source is done. A source that raises never escapes: its open rules
become errors that say why.

A rollout step's analysis has a ``duration``: its window. The log and metric
passes go on until the window is over (the duration passed *and* the probes
ended), then make their last complete pass; until the window is over nothing
but a fail-fast failure ends the analysis, so a step never passes early, even
when its probes finish in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from deploy_guard.analysis.sources import Scope, SourceFactory, Sources
from deploy_guard.analysis.streams import Pace, PolledStream, ProbeStream, Source
from deploy_guard.errors import ConfigError
from deploy_guard.judge.combine import Judges, duplicate_rule, with_reason
from deploy_guard.log import redact_text
from deploy_guard.measurements import Measurement, source_failed
from deploy_guard.report.recorder import Recorder, log

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.judge import RuleResult, Verdict
    from deploy_guard.policy.model import Policy, Rule
    from deploy_guard.probes.target import Target

#: Bound (seconds) on the one log and metric pass that completes the report after
#: fail-fast decided early: see :meth:`Engine.complete`.
COMPLETION_BOUND = 5.0


def judges_for(policies: Sequence[Policy], *, keep: Callable[[Rule], bool] | None = None) -> Judges:
    """The judges of ``policies``; two policies naming a rule alike is exit 2.

    ``keep`` leaves out the rules it says False for: they are not judged, not
    measured and not in the analysis' results at all (not even pending).
    """
    twice = duplicate_rule(policies)
    if twice is not None:
        raise ConfigError(
            f"rule name {twice!r} appears in two policies that apply to this service; rename one"
        )
    if keep is not None:
        policies = [
            p.model_copy(update={"rules": [r for r in p.rules if keep(r)]}) for p in policies
        ]
    return Judges(policies)


def on_every_step(rule: Rule) -> bool:
    """A rule a rollout step judges: all but probe rules that say ``every_step: false``."""
    return rule.at_every_step


def step_judges(policies: Sequence[Policy]) -> Judges:
    """The judges of a rollout step: probe rules with ``every_step: false`` left out.

    Those probe only before the first step, through the tag URL. A policy
    left with no rules keeps its judge: it passes, and still says what to do.
    """
    return judges_for(policies, keep=on_every_step)


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
    #: A rollout step's window: the log and metric passes go on until this many
    #: seconds have passed (and the probes ended), then one last complete pass.
    #: None: a check's analysis, which ends when the probes end.
    duration: float | None = None
    #: Every pass of a source at least its interval after the one before, the last
    #: (complete) one included when the window allows: a rollout reads Cloud Logging
    #: at most once per ``log_interval`` across all its stages (its quota), where a
    #: check reads early (half a second in) to catch a failure while it probes.
    paced: bool = False


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


class Engine:
    """Runs analyses with the sources a :data:`SourceFactory` builds, recording as it goes."""

    def __init__(self, sources: SourceFactory, recorder: Recorder) -> None:
        self.sources = sources
        self.recorder = recorder
        self._first_failure = False

    async def run(self, analysis: Analysis) -> AnalysisResult:
        """Every source concurrently until the judge decides, all complete, or time is up."""
        judges, scope = analysis.judges, analysis.scope
        if any(r.name not in judges.owner for r in scope.rules):
            # A rule the judges left out (every_step: false) is not measured either.
            scope = replace(scope, rules=tuple(r for r in scope.rules if r.name in judges.owner))
        rules = list(scope.rules)
        report = self.recorder.report
        sources = self.sources(scope)
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
        window_s = {} if analysis.duration is None else {"duration_s": analysis.duration}
        self.recorder.event(
            "evidence_started", rules=[r.name for r in rules], timeout_s=bound, **window_s
        )
        queue: asyncio.Queue[Measurement | None] = asyncio.Queue()
        pace = Pace(
            started=asyncio.Event(), done=asyncio.Event(), began=asyncio.get_running_loop().time()
        )
        passes = report.evidence_passes

        def counted(source: str) -> None:
            passes[source] = passes.get(source, 0) + 1

        streams: list[Source] = [
            ProbeStream(
                sources.probes,
                [r for r in rules if r.kind in ("http", "websocket")],
                analysis.target,
            ),
            PolledStream(
                "logs",
                sources.logs.measure,
                [r for r in rules if r.kind == "logs"],
                interval=analysis.log_interval,
                settle=analysis.log_settle,
                counted=counted,
                paced=(analysis.duration or 0.0) if analysis.paced else None,
            ),
            PolledStream(
                "metrics",
                sources.metrics.measure,
                [r for r in rules if r.kind == "metric"],
                interval=analysis.metric_interval,
                counted=counted,
                paced=(analysis.duration or 0.0) if analysis.paced else None,
            ),
        ]
        tasks = [asyncio.create_task(self._pump(s, pace, queue)) for s in streams]
        window = _Window(pace, analysis.duration, queue)
        if analysis.duration is not None:  # one more "source": the step's clock
            tasks.append(asyncio.create_task(window.run(analysis.duration)))
        tasks[0].add_done_callback(window.probes_ended)
        try:
            async with asyncio.timeout(bound):
                result.verdict = await self._decide(
                    result, queue, running=len(tasks), over=window.over
                )
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

    async def _pump(
        self, source: Source, pace: Pace, queue: asyncio.Queue[Measurement | None]
    ) -> None:
        """One source into the queue; ``None`` when it ends, however it ends."""
        complete: set[str] = set()
        try:
            async with contextlib.aclosing(source.stream(pace)) as stream:  # type: ignore[type-var]
                async for m in stream:
                    if m.complete:
                        complete.add(m.rule)
                    queue.put_nowait(m)
        except Exception as exc:  # never swallowed: the rules still open become errors
            still_open = [r for r in source.rules if r.name not in complete]
            self._source_failed(source.name, exc, still_open, queue)
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

    async def _decide(
        self,
        result: AnalysisResult,
        queue: asyncio.Queue[Measurement | None],
        *,
        running: int,
        over: asyncio.Event,
    ) -> Verdict:
        """Feed the judge until fail-fast, or an early verdict once the window is ``over``."""
        judges = result.judges
        while running:
            m = await queue.get()
            if m is None:
                running -= 1
            else:
                rule = judges.observe(m)
                if rule is None:
                    continue
                self._on_result(rule)
            early = judges.early()
            if early is None:
                continue
            if early.status == "fail" and judges.fail_fast:
                self.recorder.event("fail_fast", deciding=list(early.deciding))
                result.cut_short = bool(judges.waiting_for_sources())
                return early
            if early.status != "fail" and over.is_set():
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


class _Window:
    """When an analysis' window is over: its probes ended, and its duration (if any) passed.

    Sets the pace's ``started`` when the probes end (the pollers need not wait
    for a first report that will never come) and its ``done`` when the window
    is over. With a duration, :meth:`run` is the clock, pumped like a source: it
    puts ``None`` on the queue when the duration has passed, so the engine
    looks again at a verdict it held back until then.
    """

    def __init__(
        self, pace: Pace, duration: float | None, queue: asyncio.Queue[Measurement | None]
    ) -> None:
        self.pace, self.queue = pace, queue
        self.over = asyncio.Event()
        self._probes_ended = False
        self._elapsed = duration is None
        self._update()

    def probes_ended(self, _task: object) -> None:
        self.pace.started.set()
        self._probes_ended = True
        self._update()

    async def run(self, duration: float) -> None:
        try:
            await asyncio.sleep(duration)
            self._elapsed = True
            self._update()
        finally:
            self.queue.put_nowait(None)

    def _update(self) -> None:
        if self._elapsed:
            self.over.set()
        if self._elapsed and self._probes_ended:
            self.pace.done.set()
