"""``deploy-guard check`` as a state machine: one analysis, then act on its verdict.

The history a check can have is short::

    Preflight                      -> Finish (never started, still starting, unsettled)
    Preflight(failed to start)     -> RollBack -> ActionResult -> Finish
    Preflight(ready) -> Judged     -> Finish | RollBack | Promote -> ActionResult -> Finish

Every branch the check takes is decided in :meth:`CheckStrategy.next`, with
the words of the report's message, so a test can walk each from plain data.
``rollout`` (steps) and ``watch`` (repeated windows) will be siblings over the
same history types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode


# -- the history ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Preflight:
    """What resolving the candidate found, before any evidence.

    ``ready``: True (Ready), False (failed to start), None (still starting at
    ``--ready-timeout``). ``settled``: the service finished reconciling, so
    what it serves is known. ``why``: the words for a check that ends here.
    """

    ready: bool | None
    settled: bool = True
    why: str = ""


@dataclass(frozen=True)
class Judged:
    """One analysis' verdict: its status, the action the policies ask for, and why."""

    status: str  # pass, warn, fail, inconclusive
    action: str  # rollback, promote, hold, none
    reasons: tuple[str, ...] = ()
    deciding: tuple[str, ...] = ()


Event = Preflight | Judged | ActionResult


# -- the moves ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """The ``decision`` the report's timeline records before the move is made."""

    verdict: str
    action: str
    #: One reason that replaces the report's reasons (a check that never analysed).
    reason: str | None = None
    deciding: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Analyse:
    """Reach the candidate and run the policies' analysis."""


@dataclass(frozen=True)
class RollBack:
    reason: str
    #: The candidate failed: record it as rejected (an inconclusive one is not).
    reject: bool
    decision: Decision | None = None


@dataclass(frozen=True)
class Promote:
    decision: Decision | None = None


@dataclass(frozen=True)
class Finish:
    """The outcome: nothing more to do. ``verdict`` None keeps the analysis' verdict."""

    verdict: str | None
    action: str
    exit_code: int
    message: str
    decision: Decision | None = None


Move = Analyse | RollBack | Promote | Finish


@dataclass(frozen=True)
class CheckStrategy:
    """The check's decisions, from the flags and the applicable policies."""

    promote: bool = False
    dry_run: bool = False
    #: Some applicable policy says ``on_fail: rollback`` (a candidate that never started).
    rollback_on_fail: bool = False
    #: Every applicable policy says ``on_inconclusive: pass``.
    inconclusive_passes: bool = False

    def next(self, history: Sequence[Event]) -> Move:
        if not history or not isinstance(history[0], Preflight):
            return Finish(None, "none", int(ExitCode.INCONCLUSIVE), "the check did not start")
        first, last = history[0], history[-1]
        judged = next((e for e in history if isinstance(e, Judged)), None)
        if isinstance(last, ActionResult):
            return self._after_action(last, judged)
        if judged is not None:
            return self._act(judged)
        if first.ready is None or (first.ready and not first.settled):
            decision = Decision("inconclusive", "hold", reason=first.why)
            return Finish(
                "inconclusive", "held", int(ExitCode.INCONCLUSIVE), first.why, decision=decision
            )
        if first.ready is False:
            return self._never_started(first.why)
        return Analyse()

    def decision_action(self, judged: Judged) -> str:
        """The action the report's decision names (``--promote`` and ``--dry-run`` count)."""
        action = judged.action
        if judged.status in ("pass", "warn") and self.promote:
            action = "promote"  # --promote overrides the policy's on_pass
        if self.dry_run:
            action = f"none (dry run; would {action})" if action != "none" else "none"
        return action

    def _never_started(self, why: str) -> Move:
        """A revision that failed to start is a failure: rolled back if a policy says so."""
        if not self.rollback_on_fail or self.dry_run:
            action = "none (dry run; would rollback)" if self.rollback_on_fail else "none"
            word = "dry run: would roll back" if self.rollback_on_fail else "on_fail: none"
            return Finish(
                "fail",
                "none",
                int(ExitCode.FAIL),
                f"{why} ({word})",
                decision=Decision("fail", action, reason=why),
            )
        return RollBack(why, reject=True, decision=Decision("fail", "rollback", reason=why))

    def _act(self, judged: Judged) -> Move:
        decision = Decision(judged.status, self.decision_action(judged), deciding=judged.deciding)
        reason = "; ".join(judged.reasons) or judged.status
        if judged.status == "fail":
            if judged.action == "rollback" and not self.dry_run:
                return RollBack(reason, reject=True, decision=decision)
            word = "dry run: would roll back" if self.dry_run else "on_fail: none"
            return Finish("fail", "none", int(ExitCode.FAIL), f"{reason} ({word})", decision)
        if judged.status == "inconclusive":
            if judged.action == "rollback" and not self.dry_run:
                return RollBack(reason, reject=False, decision=decision)
            if judged.action in ("promote", "none") and self.inconclusive_passes:
                message = f"{reason} (treated as pass)"
                return Finish("inconclusive", "none", int(ExitCode.PASS), message, decision)
            return Finish(
                "inconclusive", "held", int(ExitCode.INCONCLUSIVE), f"{reason}; held", decision
            )
        if (judged.action == "promote" or self.promote) and not self.dry_run:
            return Promote(decision=decision)
        return Finish(judged.status, "none", int(ExitCode.PASS), reason, decision)

    def _after_action(self, acted: ActionResult, judged: Judged | None) -> Move:
        """The action's outcome is the check's; an inconclusive rollback stays inconclusive."""
        if judged is not None and judged.status == "inconclusive":
            code = acted.exit_code
            if code == ExitCode.FAIL:
                code = int(ExitCode.INCONCLUSIVE)
            return Finish("inconclusive", acted.action, code, acted.message)
        return Finish(acted.verdict, acted.action, acted.exit_code, acted.message)
