"""A Cloud Deploy verify job as a state machine: one analysis, and the exit code is the result.

In a verify job Cloud Deploy owns traffic: it moved the phase's share to the
candidate before the job, and its repair rule rolls the rollout back when the
job exits non-zero. So the guard's only move after judging is to finish, with
words that say what Cloud Deploy does next::

    Preflight                  -> Finish (still starting or unsettled: 3; failed to start: 1)
    Preflight(ready) -> Judged -> Finish (pass/warn: 0, fail: 1, inconclusive: 3)

There is no rollback, promotion or hold here: the policy's ``on_fail`` and
``on_pass`` ask for actions the guard does not take in this mode. Only
``on_inconclusive: pass`` (every applicable policy) counts: an inconclusive
phase then exits 0, because Cloud Deploy treats any other code as a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deploy_guard.exitcodes import ExitCode
from deploy_guard.strategies.check import Analyse, Decision, Event, Finish, Judged, Preflight

#: The decision's action in this mode: the guard writes nothing, the exit code is the result.
ACTION = "none (Cloud Deploy acts on the exit code)"


@dataclass(frozen=True)
class VerifyStrategy:
    """The verify job's decisions: the phase named, and the policies' ``on_inconclusive``."""

    phase: str
    #: Every applicable policy says ``on_inconclusive: pass``.
    inconclusive_passes: bool = False

    def next(self, history: Sequence[Event]) -> Analyse | Finish:
        if not history or not isinstance(history[0], Preflight):
            return Finish(None, "none", int(ExitCode.INCONCLUSIVE), "the check did not start")
        first = history[0]
        judged = next((e for e in history if isinstance(e, Judged)), None)
        if judged is not None:
            return self._finish(judged)
        if first.ready is False:
            return self._failed(first.why)
        if first.ready is None or not first.settled:
            return self._inconclusive(first.why, replace_reason=True)
        return Analyse()

    def _finish(self, judged: Judged) -> Finish:
        reason = "; ".join(judged.reasons) or judged.status
        if judged.status == "fail":
            return self._failed(reason, judged.deciding)
        if judged.status == "inconclusive":
            return self._inconclusive(reason, deciding=judged.deciding)
        message = f"{reason}: phase {self.phase} passed; Cloud Deploy may advance the rollout"
        decision = Decision(judged.status, ACTION, deciding=judged.deciding)
        return Finish(judged.status, "none", int(ExitCode.PASS), message, decision)

    def _failed(self, reason: str, deciding: tuple[str, ...] | None = None) -> Finish:
        message = (
            f"{reason}: phase {self.phase} failed; Cloud Deploy's repair rule rolls the "
            "rollout back (the guard wrote no traffic)"
        )
        decision = Decision(
            "fail", ACTION, reason=reason if deciding is None else None, deciding=deciding
        )
        return Finish("fail", "none", int(ExitCode.FAIL), message, decision)

    def _inconclusive(
        self, reason: str, *, replace_reason: bool = False, deciding: tuple[str, ...] = ()
    ) -> Finish:
        decision = Decision(
            "inconclusive",
            ACTION,
            reason=reason if replace_reason else None,
            deciding=None if replace_reason else deciding,
        )
        if self.inconclusive_passes and not replace_reason:
            message = f"{reason} (on_inconclusive: pass): phase {self.phase} passes"
            return Finish("inconclusive", "none", int(ExitCode.PASS), message, decision)
        message = (
            f"{reason}: phase {self.phase} inconclusive (exit 3, which Cloud Deploy counts "
            "as a failed verification)"
        )
        return Finish("inconclusive", "none", int(ExitCode.INCONCLUSIVE), message, decision)
