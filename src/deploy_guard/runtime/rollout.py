"""The rollout's driver: the check's driver, walking :class:`RolloutStrategy`'s stages.

It decides nothing itself. The pure
:class:`~deploy_guard.strategies.rollout.RolloutStrategy` says the next move;
this driver makes it: a stage's analysis through the same
:class:`~deploy_guard.analysis.engine.Engine` a check uses (stage 0 is exactly
the check's analysis, through the tag URL; a step's is a window of its
duration on real traffic, probes with ``every_step`` again, the candidate's
logs, and metrics of the candidate and its baseline over that window counting
only points older than ``metric_lag``), a step's traffic write, the rollback
or the promotion through the one
:class:`~deploy_guard.actions.executor.Executor`. Everything the check's
driver owns (time, the temporary tag, the report, errors) it inherits.

Signals: the first SIGINT/SIGTERM lands in whatever the rollout awaits. A
traffic write in flight is finished and verified first; then the strategy
hears of it (:class:`~deploy_guard.strategies.rollout.Interrupted`) and
puts the pre-rollout split back (or, with ``--on-interrupt hold``, keeps the
step). A second signal ends the process with the command's last word.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from deploy_guard import signals
from deploy_guard.actions.result import ActionResult
from deploy_guard.analysis.engine import (
    Analysis,
    AnalysisResult,
    Engine,
    judges_for,
    step_judges,
)
from deploy_guard.analysis.sources import Scope
from deploy_guard.errors import ActionError, ConfigError, GuardError, SupersededError
from deploy_guard.gcp.rollouts import (
    ROLLOUT_ANNOTATION,
    RolloutRecord,
    current,
    encode,
    holder_gone,
    overtaken,
)
from deploy_guard.gcp.traffic import describe, served_split, step_split
from deploy_guard.log import redact_text
from deploy_guard.policy.rollout import RolloutPlan, plan_warnings, rollout_plan
from deploy_guard.report.model import CheckReport, StepRecord, utc_now
from deploy_guard.runtime.driver import Gate, finish_first
from deploy_guard.runtime.options import CheckOptions
from deploy_guard.runtime.session import TAG_MARGIN, Session, tag_holder
from deploy_guard.strategies.check import Finish, Promote, RollBack
from deploy_guard.strategies.rollout import (
    AnalyseStage,
    Event,
    Interrupted,
    RolloutStrategy,
    Shift,
    Shifted,
    StageJudged,
)

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.actions.executor import Executor
    from deploy_guard.gcp.traffic import RevisionState, ServiceState
    from deploy_guard.judge.combine import Judges
    from deploy_guard.policy.model import Policy, RolloutStep, Rule
    from deploy_guard.probes.target import Target

T = TypeVar("T")

#: The cautious order of ``on_inconclusive`` (several policies: the most cautious wins).
CAUTION = {"rollback": 2, "hold": 1, "pass": 0}


@dataclass(frozen=True)
class RolloutOptions(CheckOptions):
    """A check's options plus the rollout's own flags."""

    #: ``--steps``: overrides the policies' ``rollout.steps`` (None: theirs).
    steps: tuple[RolloutStep, ...] | None = None
    #: ``--resume``: continue the rollout recorded on the service.
    resume: bool = False
    on_interrupt: Literal["rollback", "hold"] = "rollback"


def before_traffic(rule: Rule) -> bool:
    """A rule the stage before traffic judges: all but metric rules.

    Through the tag URL only the probes reach the candidate: Cloud Monitoring
    would show no user traffic (no data, an inconclusive hold for nothing), so
    metric rules are judged at the steps, on real users.
    """
    return rule.kind != "metric"


def stopped_record(record: RolloutRecord, why: str) -> str:
    """The record of a rollout that stopped part-way: ``until`` now, and why (redacted:
    anyone who can describe the service reads its annotations)."""
    stopped = replace(
        record,
        until=datetime.now(UTC),
        extra={**record.extra, "stopped": redact_text(why)[:500]},
    )
    return encode(stopped)


class RolloutGate(Gate):
    """Runs one rollout; see the module docstring."""

    options: RolloutOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report.command = "rollout"

    async def _check(self, service: str, executor: Executor) -> CheckReport:
        opts = self.options
        session, policies = await self._session(service, executor)
        probed = any(before_traffic(r) for p in policies for r in p.rules)
        judges = judges_for(policies, keep=before_traffic) if probed else None
        planned = None  # --resume: the steps recorded on the service, read below
        if opts.resume and opts.steps is not None:
            raise ConfigError(
                "--resume continues the steps recorded on the service: leave out --steps"
            )
        if not opts.resume:
            planned = rollout_plan(policies, list(opts.steps) if opts.steps else None)
            for warning in plan_warnings(policies, planned):  # --steps: no file checked them
                self.report.notes.append(warning)
                self._event("step_too_short", warning=warning)
        session.check_inputs()
        preflight, revision, before = await session.resolve()
        plan, start, before_split = await self._start(before, planned, policies)
        self.report.traffic_before = dict(before_split)
        self.report.baseline = sorted(r for r in before_split if r != self.candidate)
        durations = sum(s.duration for s in plan.steps)
        session.extra_hold = durations + len(plan.steps) * self._bound(policies)
        strategy = RolloutStrategy(
            percents=tuple(s.percent for s in plan.steps),
            rollback_on_fail=any(p.on_fail == "rollback" for p in policies),
            on_inconclusive=max((p.on_inconclusive for p in policies), key=lambda v: CAUTION[v]),
            on_interrupt=opts.on_interrupt,
            start_stage=start,
            service=service,
        )
        self.report.steps = [
            StepRecord(index=0, phase="tag", percent=0, status="pending"),
            *(
                StepRecord(index=i, phase="step", percent=s.percent, duration_s=s.duration)
                for i, s in enumerate(plan.steps, start=1)
            ),
            StepRecord(index=len(plan.steps) + 1, phase="promote", percent=100),
        ]
        for record in self.report.steps[: start + 1 if start else 0]:
            record.status = "pass" if record.index < start else "pending"
        walk = _Walk(self, session, strategy, plan, revision, before, before_split)
        walk.judges = judges
        if start and preflight.ready:
            await walk.claim(current(before.annotations))
        return await walk.run([preflight])

    async def _start(
        self, before: ServiceState, plan: RolloutPlan | None, policies: Sequence[Policy]
    ) -> tuple[RolloutPlan, int, dict[str, int]]:
        """Where the rollout starts: a new one (stage 0), or ``--resume``'s recorded step."""
        opts, candidate, service = self.options, self.candidate, before.short
        try:
            record = current(before.annotations)
        except ValueError as exc:
            raise ActionError(
                f"{exc}; `deploy-guard status --service {service}` shows it: remove or fix it "
                "before a rollout"
            ) from None
        now = datetime.now(UTC)
        if record is not None and not opts.resume and overtaken(record, served_split(before)):
            note = (
                f"the rollout record of {record.revision} on {service} is stale: the service "
                f"no longer serves its step {record.step} (someone changed its traffic since); "
                "this rollout replaces it"
            )
            self.report.notes.append(note)
            self._event("stale_rollout_record", revision=record.revision, step=record.step)
            record = None
        if record is not None and not opts.resume:
            if record.live(now) and not holder_gone(record):
                raise ActionError(
                    f"a rollout is already running on {service}: {record.describe()}, until "
                    f"{record.until.isoformat(timespec='seconds')}; nothing was changed"
                )
            raise ActionError(
                f"a rollout stopped on {service} and its process is gone: {record.describe()}. "
                f"Continue it with `deploy-guard rollout --resume --service {service}` or undo it "
                f"with `deploy-guard rollback --service {service}`; nothing was changed"
            )
        if opts.resume:
            return await self._resume(before, record, policies)
        assert plan is not None
        split = served_split(before)
        if split.get(candidate, 0) == 100:
            raise ConfigError(
                f"{candidate} already serves all of {service}'s traffic: nothing to roll out "
                "(deploy a new revision with `--no-traffic`, then roll that out)"
            )
        if not step_split(split, candidate, plan.steps[0].percent):
            raise ConfigError(
                f"{candidate} is the only revision serving {service} ({describe(split)}): "
                "there is nothing to move traffic from; deploy it with `--no-traffic` and "
                "roll it out then"
            )
        return plan, 0, split

    async def _resume(
        self, before: ServiceState, record: RolloutRecord | None, policies: Sequence[Policy]
    ) -> tuple[RolloutPlan, int, dict[str, int]]:
        service, candidate = before.short, self.candidate
        if record is None:
            raise ConfigError(f"no rollout is recorded on {service}: nothing to resume")
        if record.revision != candidate:
            raise ConfigError(
                f"the rollout recorded on {service} is of {record.revision}, not {candidate}"
            )
        if record.live(datetime.now(UTC)) and not holder_gone(record):
            raise ActionError(
                f"the rollout on {service} is still running ({record.describe()}); "
                "nothing was changed (if its process is gone on another machine, wait for "
                f"{record.until.isoformat(timespec='seconds')} or undo it with "
                f"`deploy-guard rollback --service {service} --force`)"
            )
        from deploy_guard.policy.model import RolloutStep

        steps = tuple(RolloutStep(percent=p, duration=d) for p, d in record.steps)
        expected = step_split(record.before, candidate, record.percent) if record.step else {}
        served = served_split(before)
        if record.step and served != expected:
            raise SupersededError(
                f"{service} serves {describe(served)}, not step {record.step}'s "
                f"{describe(expected)}: someone changed its traffic since the rollout stopped; "
                "nothing was changed"
            )
        self._event("rollout_resumed", step=record.step, by=record.by)
        # the recorded steps, checked as --steps are, with the policies' metric_lag
        resumed = replace(rollout_plan(policies, list(steps)), source=f"the record on {service}")
        return resumed, record.step, dict(record.before)


class _Walk:
    """One rollout's walk through its stages (the strategy's moves, made)."""

    judges: Judges | None

    def __init__(
        self,
        gate: RolloutGate,
        session: Session,
        strategy: RolloutStrategy,
        plan: RolloutPlan,
        revision: RevisionState,
        before: ServiceState,
        before_split: dict[str, int],
    ) -> None:
        self.gate, self.session, self.strategy, self.plan = gate, session, strategy, plan
        self.revision, self.before, self.before_split = revision, before, before_split
        self.report = gate.report
        self.executor = session.executor
        self.engine = Engine(gate.sources, gate.recorder)
        self.target: Target | None = None
        self.started = datetime.now(UTC)
        self.interrupted = False
        #: A signal landed while a write was finishing: heard once the write is in history.
        self.heard = False
        self.cut_short: AnalysisResult | None = None
        self.cut_stage = 0
        #: The rollout's record as last written (or found, on ``--resume``).
        self.record: RolloutRecord | None = None

    async def run(self, history: list[Event]) -> CheckReport:
        gate = self.gate
        if self.heard:  # a signal during --resume's claim of the record
            self._interrupt(history)
        while True:
            move = self.strategy.next(history)
            decision = getattr(move, "decision", None)
            if decision is not None:
                gate._decision(decision)
            if isinstance(move, Finish):
                self._stopped(move.message)
                if move.action != "superseded":  # never write over someone else's change
                    await self._release(move.message)
                verdict = move.verdict or self.report.verdict
                report = gate._finish(verdict, move.action, move.exit_code, move.message)
                if self.cut_short is not None:
                    await self.engine.complete(self.cut_short)
                    # the report-only pass filled in rules fail-fast left open: the stage
                    # where it stopped shows them too (not "never measured")
                    self.report.steps[self.cut_stage].rules = [dict(r) for r in self.report.rules]
                return report
            try:
                event = await self._make(move)
            except asyncio.CancelledError:
                if self.interrupted:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                self._interrupt(history)
                continue
            history.append(event)
            if self.heard and not self.interrupted:  # a signal that waited for the write
                if isinstance(event, ActionResult):  # the last move: it stands, and says so
                    self.report.error = "a stop signal came during the last traffic write, "
                    self.report.error += "which was finished and verified first"
                    self.interrupted = True
                else:
                    self._interrupt(history)

    async def claim(self, found: RolloutRecord | None) -> None:
        """``--resume``: the dead rollout's record becomes this process's (one writer)."""
        if found is None:  # pragma: no cover - _resume refused it already
            return
        stage = found.step
        step = self.plan.steps[stage - 1]
        bound = self.gate._bound(self.session.policies)
        until = datetime.now(UTC) + timedelta(seconds=step.duration + bound + TAG_MARGIN)
        claimed = replace(found, by=tag_holder(), until=until, extra={})
        expected = self.executor.expected
        assert expected is not None
        self.record = claimed  # a signal during the claim: released like any stop
        self.executor.expected = await self._finished(
            self.gate.router.set_annotations(expected, {ROLLOUT_ANNOTATION: encode(claimed)})
        )
        record = self.report.steps[stage]
        record.traffic_written = step_split(self.before_split, self.gate.candidate, found.percent)
        record.traffic_verified = served_split(self.executor.expected)

    async def _release(self, why: str) -> None:
        """A rollout that stops part-way says so in its record: ``--resume`` may take over now.

        Best effort (the outcome stands whatever this write meets), and never
        after a refused write: the service is someone else's then.
        """
        record = self.record
        if record is None:
            return
        expected = self.executor.expected
        if expected is None:
            return
        try:
            self.executor.expected = await self._finished(
                self.gate.router.set_annotations(
                    expected, {ROLLOUT_ANNOTATION: stopped_record(record, why)}
                )
            )
            self.gate._event("rollout_record_released", step=record.step)
        except GuardError as exc:
            self.gate._event("rollout_record_not_released", error=str(exc))

    def _interrupt(self, history: list[Event]) -> None:
        self.interrupted = True
        name = signals.pending() or "cancellation"
        self.gate._event("rollout_interrupted", signal=name)
        self.report.error = f"interrupted by {name}"
        for record in self.report.steps:
            if record.status == "running":
                record.status, record.finished_at = "interrupted", _now()
        history.append(Interrupted(name))

    async def _make(self, move: AnalyseStage | Shift | RollBack | Promote) -> Event:
        candidate = self.gate.candidate
        if isinstance(move, AnalyseStage):
            return await self._analyse(move.stage)
        if isinstance(move, Shift):
            return Shifted(move.stage, await self._finished(self._shift(move)))
        if isinstance(move, RollBack):
            restored = await self._finished(
                self.executor.restore(self.before_split, candidate, move.reason, reject=move.reject)
            )
            if restored.action in ("rolled_back", "none"):
                self.record = None  # the write that restored the split cleared it
            return restored
        promoted = self.report.steps[-1]
        promoted.status, promoted.started_at = "running", _now()
        result = await self._finished(
            self.executor.promote(candidate, self.before_split, also={ROLLOUT_ANNOTATION: ""})
        )
        promoted.finished_at = _now()
        promoted.status = "pass" if result.action == "promoted" else "error"
        if result.action == "promoted":
            self.record = None  # cleared in the same write
        promoted.traffic_written = {candidate: 100}
        promoted.traffic_verified = dict(self.report.traffic_after)
        return result

    async def _finished(self, action: Awaitable[T]) -> T:
        """An action runs to its end: a signal meanwhile is heard after it (never mid-write)."""

        def heard() -> None:
            self.gate._event("signal_while_acting", note="finishing the write first")
            self.heard = True

        return await finish_first(action, heard)

    async def _shift(self, move: Shift) -> ActionResult:
        step = self.plan.steps[move.stage - 1]
        split = step_split(self.before_split, self.gate.candidate, move.percent)
        record = self.report.steps[move.stage]
        record.status, record.started_at = "running", _now()
        record.traffic_written = dict(split)
        bound = self.gate._bound(self.session.policies)
        until = datetime.now(UTC) + timedelta(seconds=step.duration + bound + TAG_MARGIN)
        annotation = RolloutRecord(
            revision=self.gate.candidate,
            before=self.before_split,
            step=move.stage,
            percent=move.percent,
            steps=tuple((s.percent, s.duration) for s in self.plan.steps),
            by=tag_holder(),
            started=self.started,
            until=until,
        )
        where = self.strategy.where(move.stage)
        result = await self.executor.shift(split, step=where, record=encode(annotation))
        if result.action == "shifted":  # an unverified write may not have landed
            self.record = annotation
        if result.action == "shifted":
            record.traffic_verified = dict(self.report.traffic_after)
            self.gate._event("step_started", step=move.stage, percent=move.percent)
        else:
            record.status, record.finished_at = "error", _now()
        return result

    async def _analyse(self, stage: int) -> StageJudged:
        gate, record = self.gate, self.report.steps[stage]
        if record.status != "running":
            record.status, record.started_at = "running", _now()
        if self.target is None:  # the tag URL (a temporary tag if the candidate has none)
            self.target = await self.session.reach(
                self.executor.expected or self.before, self.revision, self.session.policies[0]
            )
        if stage == 0 and self.judges is None:  # metric rules only: nothing to probe
            why = "no probe or log rules to judge before traffic (metric rules judge the steps)"
            record.status, record.finished_at, record.reasons = "pass", _now(), [why]
            gate._event("stage_judged", stage=0, percent=0, status="pass", note=why)
            return StageJudged(0, "pass", (why,))
        if self.judges is not None and stage == 0:  # the check's analysis, read at the pace
            analysis = replace(  # of the steps (one Logging read per interval at most)
                gate._analysis(self.judges, self.target, self.revision), paced=True
            )
        else:
            analysis = self._step_analysis(stage, self.target)
        result = await self.engine.run(analysis)
        if result.cut_short:
            self.cut_short, self.cut_stage = result, stage
        judged = gate._judged(result)
        record.status, record.finished_at = judged.status, _now()
        record.reasons = list(judged.reasons)
        record.rules = [dict(r) for r in self.report.rules]
        percent = self.strategy.percent(stage)
        gate._event("stage_judged", stage=stage, percent=percent, status=judged.status)
        if stage and judged.status in ("pass", "warn"):
            gate._notify("step", step=stage, percent=percent, steps=len(self.plan.steps))
        return StageJudged(stage, judged.status, judged.reasons, judged.deciding)

    def _step_analysis(self, stage: int, target: Target) -> Analysis:
        gate, opts = self.gate, self.gate.options
        step = self.plan.steps[stage - 1]
        judges = step_judges(self.session.policies)
        bound = gate._bound(self.session.policies)
        scope = Scope(
            project=opts.project,
            service=self.before.short,
            revision=self.revision.short,
            baseline=tuple(self.report.baseline),
            since=datetime.now(UTC),
            rules=tuple(judges.rules()),
            metric_lag=self.plan.metric_lag,
        )
        return Analysis(
            judges=judges,
            scope=scope,
            target=target,
            bound=step.duration + bound,
            log_interval=opts.log_interval,
            log_settle=opts.log_settle,
            metric_interval=opts.metric_interval,
            duration=step.duration,
            paced=True,
        )

    def _stopped(self, message: str) -> None:
        """Say on the stage where the rollout ended why it ended there."""
        done = [r for r in self.report.steps if r.status not in ("pending",)]
        last = done[-1] if done else self.report.steps[0]
        if last.phase != "promote" or last.status != "pass":
            last.stopped = message
        for record in self.report.steps:
            if record.status == "running":
                record.status = "interrupted" if self.interrupted else "error"


def _now() -> str:
    return utc_now().isoformat(timespec="milliseconds")
