"""The check's decisions from plain data: history in, next move out, no emulator.

Each test is one branch ``deploy-guard check`` takes today; the e2e tests in
tests/gate/ show the same outcomes against the emulator.
"""

from __future__ import annotations

import pytest

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode
from deploy_guard.strategies.check import (
    Analyse,
    CheckStrategy,
    Decision,
    Event,
    Finish,
    Judged,
    Preflight,
    Promote,
    RollBack,
)

READY = Preflight(ready=True)


def test_a_ready_settled_candidate_is_analysed() -> None:
    assert CheckStrategy().next([READY]) == Analyse()


def test_a_candidate_still_starting_is_held_inconclusive_with_nothing_written() -> None:
    move = CheckStrategy(rollback_on_fail=True).next([Preflight(ready=None, why="still starting")])
    assert move == Finish(
        "inconclusive",
        "held",
        int(ExitCode.INCONCLUSIVE),
        "still starting",
        Decision("inconclusive", "hold", reason="still starting"),
    )


def test_an_unsettled_service_is_held_inconclusive() -> None:
    move = CheckStrategy().next([Preflight(ready=True, settled=False, why="reconciling")])
    assert isinstance(move, Finish)
    assert (move.verdict, move.action, move.exit_code) == ("inconclusive", "held", 3)


@pytest.mark.parametrize(
    ("rollback_on_fail", "dry_run", "action", "word"),
    [
        (False, False, "none", "on_fail: none"),
        (True, True, "none (dry run; would rollback)", "dry run: would roll back"),
    ],
)
def test_a_candidate_that_never_started_fails_without_a_rollback_when_none_is_asked(
    rollback_on_fail: bool, dry_run: bool, action: str, word: str
) -> None:
    strategy = CheckStrategy(rollback_on_fail=rollback_on_fail, dry_run=dry_run)
    move = strategy.next([Preflight(ready=False, why="crashed")])
    assert move == Finish(
        "fail", "none", int(ExitCode.FAIL), f"crashed ({word})", Decision("fail", action, "crashed")
    )


def test_a_candidate_that_never_started_is_rolled_back_and_rejected_when_a_policy_says_so() -> None:
    history: list[Event] = [Preflight(ready=False, why="crashed")]
    strategy = CheckStrategy(rollback_on_fail=True)
    move = strategy.next(history)
    assert move == RollBack(
        "crashed", reject=True, decision=Decision("fail", "rollback", "crashed")
    )
    done = ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "crashed; traffic now a")
    assert strategy.next([*history, done]) == Finish(None, "rolled_back", 1, done.message)


def test_a_failure_is_rolled_back_and_the_rollbacks_outcome_is_the_checks() -> None:
    judged = Judged("fail", "rollback", ("ws: 1 of 5 closed with 1011",), ("ws",))
    strategy = CheckStrategy()
    move = strategy.next([READY, judged])
    assert isinstance(move, RollBack)
    assert (move.reason, move.reject) == ("ws: 1 of 5 closed with 1011", True)
    assert move.decision == Decision("fail", "rollback", deciding=("ws",))
    refused = ActionResult("rollback", "superseded", int(ExitCode.ACTION_FAILED), "changed")
    assert strategy.next([READY, judged, refused]) == Finish(None, "superseded", 4, "changed")


@pytest.mark.parametrize(
    ("dry_run", "policy_action", "word", "shown"),
    [
        (True, "rollback", "dry run: would roll back", "none (dry run; would rollback)"),
        (False, "none", "on_fail: none", "none"),
    ],
)
def test_a_failure_without_a_rollback_is_exit_1_and_says_why(
    dry_run: bool, policy_action: str, word: str, shown: str
) -> None:
    move = CheckStrategy(dry_run=dry_run).next([READY, Judged("fail", policy_action, ("bad",))])
    assert isinstance(move, Finish)
    assert (move.verdict, move.action, move.exit_code) == ("fail", "none", 1)
    assert move.message == f"bad ({word})"
    assert move.decision is not None
    assert move.decision.action == shown


def test_an_inconclusive_rollback_is_not_a_rejection_and_stays_exit_3() -> None:
    judged = Judged("inconclusive", "rollback", ("no data",))
    strategy = CheckStrategy()
    move = strategy.next([READY, judged])
    assert isinstance(move, RollBack)
    assert move.reject is False
    done = ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "no data; traffic now a")
    assert strategy.next([READY, judged, done]) == Finish(
        "inconclusive", "rolled_back", int(ExitCode.INCONCLUSIVE), done.message
    )
    failed = ActionResult("rollback", "failed", int(ExitCode.ACTION_FAILED), "do it by hand")
    after_failure = strategy.next([READY, judged, failed])
    assert isinstance(after_failure, Finish)
    assert after_failure.exit_code == 4


def test_inconclusive_is_held_unless_every_policy_treats_it_as_a_pass() -> None:
    judged = Judged("inconclusive", "none", ("too few requests",))
    held = CheckStrategy().next([READY, judged])
    assert held == Finish(
        "inconclusive",
        "held",
        3,
        "too few requests; held",
        Decision("inconclusive", "none", deciding=()),
    )
    passed = CheckStrategy(inconclusive_passes=True).next([READY, judged])
    assert isinstance(passed, Finish)
    assert (passed.action, passed.exit_code) == ("none", 0)
    assert passed.message == "too few requests (treated as pass)"


def test_a_pass_promotes_when_asked_by_flag_or_policy_and_never_in_a_dry_run() -> None:
    plain = Judged("pass", "none")
    assert CheckStrategy().next([READY, plain]) == Finish(
        "pass", "none", 0, "pass", Decision("pass", "none", deciding=())
    )
    assert CheckStrategy(promote=True).next([READY, plain]) == Promote(
        Decision("pass", "promote", deciding=())
    )
    assert isinstance(CheckStrategy().next([READY, Judged("warn", "promote")]), Promote)
    dry = CheckStrategy(promote=True, dry_run=True).next([READY, plain])
    assert isinstance(dry, Finish)
    assert dry.decision is not None
    assert dry.decision.action == "none (dry run; would promote)"
    promoted = ActionResult("promote", "promoted", 0, "the candidate passed; traffic now c")
    assert CheckStrategy(promote=True).next([READY, plain, promoted]) == Finish(
        None, "promoted", 0, promoted.message
    )


def test_the_strategies_import_nothing_that_does_io() -> None:
    """A strategy decides from its history alone: no clients, clock, logging or report."""
    from pathlib import Path

    import deploy_guard.strategies as pkg
    from purity import assert_imports_only, imports_of

    seen = assert_imports_only(
        pkg.__file__,
        {"__future__", "dataclasses", "typing", "collections.abc", "enum"},
        ("deploy_guard.strategies", "deploy_guard.exitcodes", "deploy_guard.actions.result"),
        min_files=2,
        what="a strategy",
    )
    assert "deploy_guard.actions.result" in seen  # the walk really read the imports
    import deploy_guard.actions.result as result

    assert imports_of(Path(result.__file__)) <= {"__future__", "dataclasses"}
