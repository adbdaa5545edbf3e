"""The judge: measurements in, a verdict out, as early as it can no longer change.

Pure on purpose: no clock, no I/O, no logging. The gate owns time and feeds
measurements as they arrive; the judge only remembers them. That makes every
branch testable with plain data, and the same object works for a live check
and for re-judging a recorded one (:func:`evaluate`).
"""

from __future__ import annotations

from collections.abc import Iterable

from deploy_guard.judge.results import RuleResult, Verdict
from deploy_guard.judge.state import RuleState
from deploy_guard.judge.verdict import combine
from deploy_guard.measurements import Measurement
from deploy_guard.policy.model import Policy


class Judge:
    """Judges one policy. Feed :meth:`observe`; ask :meth:`early_verdict` or :meth:`verdict`."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._states = {rule.name: RuleState(rule) for rule in policy.rules}

    def observe(self, m: Measurement) -> RuleResult:
        """Take one snapshot for rule ``m.rule``; return that rule's result now.

        Probe snapshots are cumulative (a later one replaces an earlier one);
        each logs or metric snapshot is one *pass*, counted against the rule's
        ``failure_limit``. Raises KeyError for a rule the policy does not
        have, ValueError for a measurement of the wrong kind.
        """
        state = self._states.get(m.rule)
        if state is None:
            raise KeyError(f"policy {self.policy.name} has no rule named {m.rule!r}")
        return state.observe(m)

    def results(self) -> tuple[RuleResult, ...]:
        """Every rule's current result, in policy order (pending ones included)."""
        return tuple(state.result for state in self._states.values())

    def early_verdict(self) -> Verdict | None:
        """The verdict once more evidence can no longer change it, else None.

        With ``fail_fast`` a decided failure of a counted fail-severity rule
        (or a decided missing-data rule whose ``missing_data`` is ``fail``)
        ends the check at once. Any other verdict needs every counted rule's
        source to have finished: an early *pass* would skip evidence that
        could still fail it. Dry-run rules never hold the verdict back.
        """
        counted = [s for s in self._states.values() if not s.rule.dry_run]
        if self.policy.fail_fast:
            for state in counted:
                result = state.result
                if not result.decided or state.rule.severity != "fail":
                    continue
                if result.status == "fail" or (
                    result.status in ("no_data", "error") and state.rule.missing_data == "fail"
                ):
                    return self.verdict()
        if all(s.complete and s.result.decided for s in counted):
            return self.verdict()
        return None

    def verdict(self) -> Verdict:
        """The final verdict: whatever is still pending is judged as it stands."""
        return combine(self.policy, [state.final() for state in self._states.values()])


def evaluate(policy: Policy, measurements: Iterable[Measurement]) -> Verdict:
    """Judge a whole recorded run at once."""
    judge = Judge(policy)
    for m in measurements:
        judge.observe(m)
    return judge.verdict()
