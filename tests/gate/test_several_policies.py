"""Several policies apply to one service: one decision, whatever their order."""

from __future__ import annotations

from itertools import permutations

from deploy_guard.judge import Verdict
from deploy_guard.judge.combine import worst


def verdict(status: str, action: str, rule: str) -> Verdict:
    return Verdict(
        status=status,  # type: ignore[arg-type]
        action=action,  # type: ignore[arg-type]
        rules=(),
        reasons=(f"{rule}: {status}",),
        deciding=(rule,),
    )


def test_a_pass_promotes_if_any_passing_policy_asks_in_any_order() -> None:
    for order in permutations([verdict("pass", "none", "a"), verdict("pass", "promote", "b")]):
        combined = worst(order)
        assert (combined.status, combined.action) == ("pass", "promote")
        assert set(combined.deciding) == {"a", "b"}


def test_a_failure_rolls_back_if_any_failing_policy_asks_in_any_order() -> None:
    three = [
        verdict("fail", "none", "a"),
        verdict("fail", "rollback", "b"),
        verdict("pass", "promote", "c"),
    ]
    for order in permutations(three):
        combined = worst(order)
        assert (combined.status, combined.action) == ("fail", "rollback")
        assert set(combined.deciding) == {"a", "b"}  # the passing policy decided nothing
        assert set(combined.reasons) == {"a: fail", "b: fail"}


def test_inconclusive_holds_unless_one_asks_for_a_rollback() -> None:
    hold, back = verdict("inconclusive", "hold", "a"), verdict("inconclusive", "rollback", "b")
    assert worst([hold, verdict("pass", "promote", "c")]).action == "hold"
    assert worst([hold, back]).action == "rollback"
