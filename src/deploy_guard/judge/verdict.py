"""From rule results to a policy's verdict and the action it asks for.

The order, in the manner of argo-rollouts and flagger:

1. any fail-severity rule that failed -> ``fail``;
2. else any rule with no data or a source error whose ``missing_data`` is
   ``fail`` -> ``fail``;
3. else any such rule whose ``missing_data`` is ``inconclusive`` ->
   ``inconclusive`` (``ignore`` skips the rule);
4. else any warn-severity failure -> ``warn``;
5. else ``pass``.

Dry-run rules are judged and reported but never counted. The action follows
the policy: fail -> ``on_fail``; inconclusive -> ``on_inconclusive`` (where
``pass`` means: treat it as a pass, so ``on_pass`` applies); pass and warn ->
``on_pass``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from deploy_guard.judge.results import Action, RuleResult, Verdict, VerdictStatus
from deploy_guard.policy.model import Policy

_MISSING = ("no_data", "error")


def reason(result: RuleResult) -> str:
    """``chat-cycles: 3 of 200 sessions closed with 1011; limit 0``."""
    if result.status in ("fail", "warn", "pass"):
        detail = result.counts or result.message
        if result.kind in ("logs", "metric") and result.message and result.counts:
            detail = f"{result.message} ({result.counts})"
    else:
        detail = result.message
    prefix = "(dry run) " if result.dry_run else ""
    return f"{prefix}{result.rule}: {detail or result.status}"


def _on_pass(policy: Policy) -> Action:
    return "promote" if policy.on_pass == "promote" else "none"


def combine(policy: Policy, results: Sequence[RuleResult]) -> Verdict:
    """The verdict for ``results`` (one per rule, none of them pending)."""
    missing = {r.rule: policy.rule(r.rule).missing_data for r in results}
    counted = [r for r in results if not r.dry_run]
    failed = [r for r in counted if r.status == "fail"]
    warned = [r for r in counted if r.status == "warn"]
    absent = [r for r in counted if r.status in _MISSING]
    absent_fail = [r for r in absent if missing[r.rule] == "fail"]
    absent_inc = [r for r in absent if missing[r.rule] == "inconclusive"]
    dry = tuple(
        f"{reason(r)} (would {'fail' if r.severity == 'fail' else 'warn'})"
        for r in results
        if r.dry_run and r.status in ("fail", "warn")
    )
    status: VerdictStatus
    action: Action
    if failed or absent_fail:
        # A missing_data: fail rule of warn severity still only warns.
        hard = [r for r in absent_fail if r.severity == "fail"]
        if failed or hard:
            deciding = failed + hard
            status, action = "fail", "rollback" if policy.on_fail == "rollback" else "none"
            return _verdict(status, action, results, deciding, dry, missing)
        warned = warned + absent_fail
    if absent_inc:
        if policy.on_inconclusive == "pass":
            note = "inconclusive evidence treated as pass (on_inconclusive: pass)"
            return Verdict(
                status="pass",
                action=_on_pass(policy),
                rules=tuple(results),
                reasons=(*(reason(r) for r in absent_inc), note, *dry),
                deciding=tuple(r.rule for r in absent_inc),
            )
        action = "rollback" if policy.on_inconclusive == "rollback" else "hold"
        return _verdict("inconclusive", action, results, absent_inc, dry, missing)
    if warned:
        return _verdict("warn", _on_pass(policy), results, warned, dry, missing)
    passed = [r for r in counted if r.status == "pass"]
    return _verdict("pass", _on_pass(policy), results, passed, dry, missing)


def _verdict(
    status: VerdictStatus,
    action: Action,
    results: Sequence[RuleResult],
    deciding: Sequence[RuleResult],
    dry: tuple[str, ...],
    missing: Mapping[str, str],
) -> Verdict:
    # What was ignored qualifies a pass, a warning or an inconclusive outcome; a
    # failure stands on its deciding rules alone, whatever else had no data.
    ignored = tuple(
        f"{r.rule}: skipped, {r.status.replace('_', ' ')} (missing_data: ignore)"
        for r in results
        if status != "fail"
        and not r.dry_run
        and r.status in _MISSING
        and missing[r.rule] == "ignore"
    )
    return Verdict(
        status=status,
        action=action,
        rules=tuple(results),
        reasons=(*(reason(r) for r in deciding), *ignored, *dry),
        deciding=tuple(r.rule for r in deciding),
    )
