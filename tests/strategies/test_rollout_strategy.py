"""The rollout's decisions from plain data: history in, next move out, no emulator.

Each test is one branch ``deploy-guard rollout`` takes; tests/rollout/ shows the
same outcomes against the emulator with real users.
"""

from __future__ import annotations

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode
from deploy_guard.strategies.check import Decision, Finish, Preflight, Promote, RollBack
from deploy_guard.strategies.rollout import (
    AnalyseStage,
    Event,
    Interrupted,
    RolloutStrategy,
    Shift,
    Shifted,
    StageJudged,
)

READY = Preflight(ready=True)
STEPS = RolloutStrategy(percents=(10, 50))


def shifted(stage: int, action: str = "shifted", code: int = 0) -> Shifted:
    return Shifted(stage, ActionResult("shift", action, code, f"{action} at {stage}"))


def passed(stage: int) -> StageJudged:
    return StageJudged(stage, "pass", ("all rules passed",))


def test_a_ready_candidate_is_first_judged_through_its_tag_url() -> None:
    assert STEPS.next([READY]) == AnalyseStage(0)


def test_a_healthy_candidate_walks_every_step_then_is_promoted() -> None:
    history: list[Event] = [READY]
    moves = []
    for event in (passed(0), shifted(1), passed(1), shifted(2), passed(2)):
        history.append(event)
        moves.append(STEPS.next(history))
    assert moves[:-1] == [Shift(1, 10), AnalyseStage(1), Shift(2, 50), AnalyseStage(2)]
    assert moves[-1] == Promote(Decision("pass", "promote", deciding=()))


def test_a_failure_through_the_tag_url_rejects_the_candidate_before_any_user_sees_it() -> None:
    move = STEPS.next([READY, StageJudged(0, "fail", ("ws: 3 sessions closed 1011",), ("ws",))])
    assert isinstance(move, RollBack)
    assert move.reject
    assert "before the first step" in move.reason
    assert move.decision == Decision("fail", "rollback", deciding=("ws",))


def test_a_failure_at_a_step_rolls_back_and_names_the_step() -> None:
    history: list[Event] = [READY, passed(0), shifted(1), StageJudged(1, "fail", ("5xx 33%",))]
    move = STEPS.next(history)
    assert isinstance(move, RollBack)
    assert move.reject
    assert move.reason == "5xx 33% (step 1/2 (10%))"


def test_on_fail_none_leaves_traffic_where_it_is_and_fails() -> None:
    strategy = RolloutStrategy(percents=(10, 50), rollback_on_fail=False)
    move = strategy.next([READY, passed(0), shifted(1), StageJudged(1, "fail", ("bad",))])
    assert isinstance(move, Finish)
    assert (move.verdict, move.action, move.exit_code) == ("fail", "none", int(ExitCode.FAIL))


def test_an_inconclusive_step_holds_there_by_default_and_says_how_to_go_on() -> None:
    move = STEPS.next([READY, passed(0), shifted(1), StageJudged(1, "inconclusive", ("no data",))])
    assert isinstance(move, Finish)
    assert (move.verdict, move.action, move.exit_code) == ("inconclusive", "held", 3)
    assert "held step 1/2 (10%)" in move.message
    assert "--resume" in move.message


def test_an_inconclusive_tag_stage_moved_nothing() -> None:
    move = STEPS.next([READY, StageJudged(0, "inconclusive", ("no data",))])
    assert isinstance(move, Finish)
    assert (move.action, move.exit_code) == ("none", 3)


def test_on_inconclusive_rollback_rolls_back_without_rejecting_and_exits_3() -> None:
    strategy = RolloutStrategy(percents=(10, 50), on_inconclusive="rollback")
    history: list[Event] = [READY, passed(0), shifted(1), StageJudged(1, "inconclusive")]
    move = strategy.next(history)
    assert isinstance(move, RollBack)
    assert not move.reject
    history.append(ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "put back"))
    final = strategy.next(history)
    assert isinstance(final, Finish)
    assert (final.verdict, final.action, final.exit_code) == ("inconclusive", "rolled_back", 3)


def test_on_inconclusive_pass_goes_on_to_the_next_step() -> None:
    strategy = RolloutStrategy(percents=(10, 50), on_inconclusive="pass")
    assert strategy.next([READY, StageJudged(0, "inconclusive")]) == Shift(1, 10)


def test_a_warn_goes_on() -> None:
    assert STEPS.next([READY, StageJudged(0, "warn", ("slow",))]) == Shift(1, 10)


def test_a_refused_step_write_stops_with_exit_4_and_writes_nothing_more() -> None:
    history: list[Event] = [READY, passed(0), shifted(1, "superseded", 4)]
    move = STEPS.next(history)
    assert isinstance(move, Finish)
    assert (move.action, move.exit_code) == ("superseded", int(ExitCode.ACTION_FAILED))
    assert move.message.startswith("step 1/2 (10%): ")


def test_a_signal_after_traffic_moved_puts_it_back_and_exits_3() -> None:
    history: list[Event] = [READY, passed(0), shifted(1), Interrupted("SIGTERM")]
    move = STEPS.next(history)
    assert isinstance(move, RollBack)
    assert not move.reject
    assert move.reason == "interrupted by SIGTERM at step 1/2 (10%)"
    history.append(ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "back"))
    final = STEPS.next(history)
    assert isinstance(final, Finish)
    assert (final.action, final.exit_code) == ("rolled_back", int(ExitCode.INCONCLUSIVE))


def test_a_signal_with_on_interrupt_hold_keeps_the_step() -> None:
    strategy = RolloutStrategy(percents=(10, 50), on_interrupt="hold")
    move = strategy.next([READY, passed(0), shifted(1), passed(1), shifted(2), Interrupted("X")])
    assert isinstance(move, Finish)
    assert (move.action, move.exit_code) == ("held", 3)
    assert "step 2/2 (50%)" in move.message


def test_a_signal_before_any_traffic_moved_changes_nothing() -> None:
    move = STEPS.next([READY, Interrupted("SIGINT")])
    assert isinstance(move, Finish)
    assert (move.action, move.exit_code) == ("none", 3)


def test_a_failed_rollback_is_exit_4_whatever_the_verdict() -> None:
    history: list[Event] = [READY, passed(0), shifted(1), StageJudged(1, "fail")]
    history.append(ActionResult("rollback", "failed", int(ExitCode.ACTION_FAILED), "by hand"))
    final = STEPS.next(history)
    assert isinstance(final, Finish)
    assert (final.action, final.exit_code) == ("failed", 4)


def test_resume_rejudges_the_last_verified_step_then_goes_on() -> None:
    strategy = RolloutStrategy(percents=(10, 50, 80), start_stage=2)
    assert strategy.next([READY]) == AnalyseStage(2)
    assert strategy.next([READY, passed(2)]) == Shift(3, 80)
    held = strategy.next([READY, StageJudged(2, "inconclusive")])
    assert isinstance(held, Finish)
    assert held.action == "held"  # traffic was already at step 2 when it resumed
    back = strategy.next([READY, Interrupted("SIGINT")])
    assert isinstance(back, RollBack)  # the resumed rollout's traffic is put back too


def test_a_candidate_that_never_started_is_rejected_without_any_traffic() -> None:
    move = STEPS.next([Preflight(ready=False, why="crashed at start")])
    assert isinstance(move, RollBack)
    assert move.reject


def test_a_candidate_still_starting_is_held() -> None:
    move = STEPS.next([Preflight(ready=None, why="starting")])
    assert isinstance(move, Finish)
    assert (move.action, move.exit_code) == ("held", 3)


def test_a_signal_heard_during_the_promotion_leaves_it_promoted() -> None:
    history: list[Event] = [READY, passed(0), shifted(1), passed(1), shifted(2), passed(2)]
    history.append(ActionResult("promote", "promoted", 0, "all traffic"))
    history.append(Interrupted("SIGTERM"))  # it came while the write was finishing
    final = STEPS.next(history)
    assert isinstance(final, Finish)
    assert (final.action, final.exit_code) == ("promoted", 0)


def test_a_signal_heard_during_a_failed_candidates_rollback_keeps_exit_1() -> None:
    history: list[Event] = [READY, passed(0), shifted(1), StageJudged(1, "fail", ("bad",))]
    history.append(ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "put back"))
    history.append(Interrupted("SIGINT"))
    final = STEPS.next(history)
    assert isinstance(final, Finish)
    assert (final.action, final.exit_code) == ("rolled_back", int(ExitCode.FAIL))
