"""Several policies, one decision: the worst verdict decides.

A service may be covered by more than one policy (a team's and a platform's).
Each keeps its own :class:`~deploy_guard.judge.Judge`, so its rules, limits
and ``fail_fast`` mean what its author wrote; this module only merges their
verdicts. Pure, like the rest of the judge: the caller checks that rule names
are unique across policies (a user error, reported with exit 2) before
building a :class:`Judges`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from deploy_guard.judge.core import Judge
from deploy_guard.judge.results import RuleResult, Verdict
from deploy_guard.measurements import Measurement
from deploy_guard.policy.model import Policy, Rule

_STATUS_ORDER = {"pass": 0, "warn": 1, "inconclusive": 2, "fail": 3}

#: When policies with the same outcome ask for different actions, the strongest wins:
#: one policy that wants a failing candidate rolled back is enough.
_ACTION_ORDER = {"none": 0, "promote": 1, "hold": 2, "rollback": 3}


def duplicate_rule(policies: Sequence[Policy]) -> str | None:
    """The first rule name two of ``policies`` share (their results would collide)."""
    seen: set[str] = set()
    for policy in policies:
        for rule in policy.rules:
            if rule.name in seen:
                return rule.name
            seen.add(rule.name)
    return None


class Judges:
    """One :class:`Judge` per applicable policy; the worst verdict decides."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        twice = duplicate_rule(policies)
        if twice is not None:
            raise ValueError(f"rule name {twice!r} appears in two policies")
        self.policies = list(policies)
        self.judges: list[Judge] = [Judge(p) for p in self.policies]
        self.owner: dict[str, Judge] = {
            rule.name: judge
            for policy, judge in zip(self.policies, self.judges, strict=True)
            for rule in policy.rules
        }

    @property
    def fail_fast(self) -> bool:
        return any(p.fail_fast for p in self.policies)

    def rules(self) -> list[Rule]:
        return [r for p in self.policies for r in p.rules]

    def results(self) -> list[RuleResult]:
        """Every rule's current result, in policy order (pending ones included)."""
        return [result for judge in self.judges for result in judge.results()]

    def observe(self, m: Measurement) -> RuleResult | None:
        judge = self.owner.get(m.rule)
        return judge.observe(m) if judge is not None else None

    def early(self) -> Verdict | None:
        """A decided failure as soon as any policy's outcome is a decided fail."""
        verdicts = [j.early_verdict() for j in self.judges]
        failed = [v for v in verdicts if v is not None and v.status == "fail"]
        if failed:
            return failed[0]
        if all(v is not None for v in verdicts):
            return worst([v for v in verdicts if v is not None])
        return None

    def final(self) -> Verdict:
        return worst([j.verdict() for j in self.judges])

    def waiting_for_sources(self) -> list[RuleResult]:
        """Log and metric rules with no decided result yet (their sources were still polling)."""
        return [r for r in self.results() if r.kind in ("logs", "metric") and not r.decided]


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The most severe verdict, its rules merged with the others' (for the report).

    Policies that share that outcome all count, whatever their order: their
    reasons and deciding rules are merged, and the strongest action any of them
    asks for is taken (a pass promotes if any passing policy says ``on_pass:
    promote``; a failure rolls back if any failing one says ``on_fail: rollback``).
    """
    top = max(verdicts, key=lambda v: _STATUS_ORDER.get(v.status, 2))
    same = [v for v in verdicts if v.status == top.status]
    action = max((v.action for v in same), key=lambda a: _ACTION_ORDER.get(a, 0))
    return replace(
        top,
        action=action,
        rules=tuple(r for v in verdicts for r in v.rules),
        reasons=tuple(reason for v in same for reason in v.reasons),
        deciding=tuple(rule for v in same for rule in v.deciding),
    )


def with_reason(verdict: Verdict, reason: str) -> Verdict:
    """``verdict`` with one more reason (a timeout, say) at the end."""
    return replace(verdict, reasons=(*verdict.reasons, reason))
