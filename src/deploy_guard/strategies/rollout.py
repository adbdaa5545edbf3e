"""``deploy-guard rollout`` as a state machine: probe, then traffic steps, then 100 %.

Stage 0 is the check before any user sees the candidate: its probe rules
through the tag URL (a 1011 at 7 s never reaches a real user). Stage ``k``
(1-based) is the policy's k-th step: the candidate's share is written and
verified (:class:`Shift`, then a :class:`Shifted` in the history), then the
step's window is judged on real traffic (:class:`AnalyseStage`, then a
:class:`StageJudged`). After the last step passes, the candidate is promoted
(100 %, pinned). The history a rollout can have::

    Preflight -> StageJudged(0) -> Shifted(1) -> StageJudged(1) -> ... -> ActionResult(promote)
                                             \\-> RollBack (fail, interrupt) -> ActionResult
                                             \\-> Finish (held, a refused or failed write)

Every branch is decided in :meth:`RolloutStrategy.next` from plain data, with
the words of the report's message. It reuses the check's moves
(:class:`~deploy_guard.strategies.check.RollBack`, ``Promote``, ``Finish``) and
adds its own two, so the driver makes each the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode
from deploy_guard.strategies.check import Decision, Finish, Preflight, Promote, RollBack


# -- the history ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StageJudged:
    """One stage's verdict: 0 through the tag URL, k the k-th traffic step."""

    stage: int
    status: str  # pass, warn, fail, inconclusive
    reasons: tuple[str, ...] = ()
    deciding: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shifted:
    """The traffic write of step ``stage``: ``result.action`` is ``shifted`` once verified."""

    stage: int
    result: ActionResult


@dataclass(frozen=True)
class Interrupted:
    """The first SIGINT/SIGTERM landed (the write in flight, if any, was finished first)."""

    signal: str


Event = Preflight | StageJudged | Shifted | Interrupted | ActionResult


# -- the moves ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnalyseStage:
    """Judge stage ``stage`` (0: the probes through the tag URL; k: step k's window)."""

    stage: int


@dataclass(frozen=True)
class Shift:
    """Write step ``stage``'s split: ``percent`` to the candidate, the rest as before."""

    stage: int
    percent: int


Move = AnalyseStage | Shift | RollBack | Promote | Finish


@dataclass(frozen=True)
class RolloutStrategy:
    """The rollout's decisions, from its steps, the flags and the applicable policies."""

    #: The candidate's share at each step (strictly increasing, under 100).
    percents: tuple[int, ...]
    #: Some applicable policy says ``on_fail: rollback``.
    rollback_on_fail: bool = True
    #: The policies' ``on_inconclusive``: the most cautious of them.
    on_inconclusive: Literal["hold", "rollback", "pass"] = "hold"
    #: What the first SIGINT/SIGTERM does once traffic moved: put it back, or keep the step.
    on_interrupt: Literal["rollback", "hold"] = "rollback"
    #: ``--resume``: the step whose traffic is already written and verified (0: a new rollout).
    start_stage: int = 0
    #: The service, for the commands a message tells a person to run.
    service: str = "SERVICE"

    def next(self, history: Sequence[Event]) -> Move:
        if not history or not isinstance(history[0], Preflight):
            return Finish(None, "none", int(ExitCode.INCONCLUSIVE), "the rollout did not start")
        first = history[0]
        # a rollback or promotion is the last move: a signal heard during it changes nothing
        acted = next((e for e in reversed(history) if isinstance(e, ActionResult)), None)
        if acted is not None:
            return self._after_action(acted, history)
        last = history[-1]
        if first.ready is None or (first.ready and not first.settled):
            decision = Decision("inconclusive", "hold", reason=first.why)
            return Finish("inconclusive", "held", int(ExitCode.INCONCLUSIVE), first.why, decision)
        if first.ready is False:
            return self._never_started(first.why)
        interrupted = next((e for e in history if isinstance(e, Interrupted)), None)
        if interrupted is not None:
            return self._interrupted(interrupted.signal, history)
        if isinstance(last, Shifted):
            if last.result.action == "shifted":
                return AnalyseStage(last.stage)
            return self._write_not_done(last)
        if isinstance(last, StageJudged):
            return self._judged(last)
        return AnalyseStage(self.start_stage)

    def _next_steps(self) -> str:
        flag = f"--service {self.service}"
        return (
            f"`deploy-guard rollout --resume {flag}` continues, "
            f"`deploy-guard rollback {flag}` undoes it"
        )

    def percent(self, stage: int) -> int:
        """The candidate's share at ``stage`` (0 before the first step)."""
        return self.percents[stage - 1] if stage > 0 else 0

    def where(self, stage: int) -> str:
        """``step 2/3 (50%)`` or ``before the first step`` for messages."""
        if stage == 0:
            return "before the first step"
        return f"step {stage}/{len(self.percents)} ({self.percent(stage)}%)"

    def traffic_stage(self, history: Sequence[Event]) -> int:
        """The last step whose traffic is written and verified (``start_stage`` if none)."""
        stage = self.start_stage
        for event in history:
            if isinstance(event, Shifted) and event.result.action == "shifted":
                stage = event.stage
        return stage

    # .. the branches ..
    def _never_started(self, why: str) -> Move:
        """A candidate that never started got no traffic: fail, rejected if a policy says so."""
        if not self.rollback_on_fail:
            message = f"{why} (on_fail: none)"
            return Finish(
                "fail", "none", int(ExitCode.FAIL), message, Decision("fail", "none", reason=why)
            )
        return RollBack(why, reject=True, decision=Decision("fail", "rollback", reason=why))

    def _judged(self, judged: StageJudged) -> Move:
        stage, where = judged.stage, self.where(judged.stage)
        reason = "; ".join(judged.reasons) or judged.status
        if judged.status == "fail":
            decision = Decision("fail", "rollback", deciding=judged.deciding)
            if self.rollback_on_fail:
                return RollBack(f"{reason} ({where})", reject=True, decision=decision)
            decision = Decision("fail", "none", deciding=judged.deciding)
            message = f"{reason} ({where}; on_fail: none, traffic left as it is)"
            return Finish("fail", "none", int(ExitCode.FAIL), message, decision)
        if judged.status == "inconclusive" and self.on_inconclusive != "pass":
            if self.on_inconclusive == "rollback":
                decision = Decision("inconclusive", "rollback", deciding=judged.deciding)
                return RollBack(f"{reason} ({where})", reject=False, decision=decision)
            decision = Decision("inconclusive", "hold", deciding=judged.deciding)
            held = "held" if stage > 0 or self.start_stage > 0 else "none"
            message = f"{reason}; held {where}" + (
                f": {self._next_steps()}" if held == "held" else ": no traffic was moved"
            )
            return Finish("inconclusive", held, int(ExitCode.INCONCLUSIVE), message, decision)
        if stage < len(self.percents):
            return Shift(stage + 1, self.percents[stage])
        return Promote(Decision(judged.status, "promote", deciding=judged.deciding))

    def _interrupted(self, signal: str, history: Sequence[Event]) -> Move:
        stage = self.traffic_stage(history)
        if stage == 0:
            message = f"interrupted by {signal} before any traffic moved; nothing was changed"
            return Finish("inconclusive", "none", int(ExitCode.INCONCLUSIVE), message)
        where = self.where(stage)
        if self.on_interrupt == "hold":
            message = (
                f"interrupted by {signal} at {where}; traffic held there (--on-interrupt hold): "
                f"{self._next_steps()}"
            )
            decision = Decision("inconclusive", "hold", reason=f"interrupted by {signal}")
            return Finish("inconclusive", "held", int(ExitCode.INCONCLUSIVE), message, decision)
        reason = f"interrupted by {signal} at {where}"
        decision = Decision("inconclusive", "rollback", reason=reason)
        return RollBack(reason, reject=False, decision=decision)

    def _write_not_done(self, shifted: Shifted) -> Move:
        """A step's write refused (someone else's deploy), failed or unverified: a human looks."""
        result = shifted.result
        where = self.where(shifted.stage)
        message = f"{where}: {result.message}"
        return Finish(None, result.action, int(ExitCode.ACTION_FAILED), message)

    def _after_action(self, acted: ActionResult, history: Sequence[Event]) -> Move:
        """The rollback's or promotion's outcome is the rollout's."""
        before = list(history[: list(history).index(acted)])  # what led to the action
        judged = [e for e in before if isinstance(e, StageJudged)]
        cautious = any(isinstance(e, Interrupted) for e in before) or (
            judged and judged[-1].status == "inconclusive"
        )
        if cautious and acted.kind == "rollback":  # the candidate was not found bad
            code = acted.exit_code
            if code == ExitCode.FAIL:
                code = int(ExitCode.INCONCLUSIVE)
            return Finish("inconclusive", acted.action, code, acted.message)
        return Finish(acted.verdict, acted.action, acted.exit_code, acted.message)
