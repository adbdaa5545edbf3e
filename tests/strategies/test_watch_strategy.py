"""The watch's decisions from plain data: history in, next move out, no emulator.

Each test is one branch ``deploy-guard watch`` takes; tests/gate/test_watch_e2e.py
shows the same outcomes against the emulator.
"""

from __future__ import annotations

import pytest

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode
from deploy_guard.strategies.check import Decision, Finish, RollBack
from deploy_guard.strategies.watch import (
    Event,
    Interrupted,
    Judged,
    Keep,
    StandingAside,
    TimeUp,
    Watching,
    WatchStrategy,
)

V1, V2 = "chat-00001-aaa", "chat-00002-bbb"
ROLLED_BACK = ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "rolled back", "fail")
REFUSED = ActionResult(
    "rollback", "superseded", int(ExitCode.ACTION_FAILED), "someone deployed", None
)


def test_a_passing_or_degraded_window_keeps_watching() -> None:
    strategy = WatchStrategy()
    assert strategy.next([Watching(V2)]) == Keep()
    assert strategy.next([Watching(V2), Judged(V2, "pass")]) == Keep()
    assert strategy.next([Watching(V2), Judged(V2, "inconclusive", ("Logging down",))]) == Keep()
    assert strategy.next([Watching(V2), StandingAside("a rollout is in progress")]) == Keep()


def test_a_failing_window_rolls_back_and_rejects_the_revision() -> None:
    judged = Judged(V2, "fail", ("3 sessions closed with 1011",), ("chat-canary",))
    move = WatchStrategy().next([Watching(V2), Judged(V2, "pass"), judged])
    assert move == RollBack(
        f"3 sessions closed with 1011 (watching {V2})",
        reject=True,
        decision=Decision("fail", "rollback", deciding=("chat-canary",)),
    )


def test_on_fail_none_reports_the_failure_and_leaves_traffic() -> None:
    move = WatchStrategy(rollback_on_fail=False).next([Watching(V2), Judged(V2, "fail", ("x",))])
    assert isinstance(move, Finish)
    assert (move.verdict, move.action, move.exit_code) == ("fail", "none", int(ExitCode.FAIL))
    assert "on_fail: none" in move.message


def test_the_rollbacks_outcome_ends_the_watch_unless_it_keeps_watching() -> None:
    history: list[Event] = [Watching(V2), Judged(V2, "fail", ("x",)), ROLLED_BACK]
    assert WatchStrategy().next(history) == Finish("fail", "rolled_back", 1, "rolled back")
    assert WatchStrategy(keep_watching=True).next(history) == Keep()
    refused: list[Event] = [Watching(V2), Judged(V2, "fail", ("x",)), REFUSED]
    move = WatchStrategy(keep_watching=True).next(refused)
    assert move == Finish(None, "superseded", int(ExitCode.ACTION_FAILED), "someone deployed")


@pytest.mark.parametrize(
    ("bounded", "code", "verdict"),
    [(False, ExitCode.PASS, "pass"), (True, ExitCode.INCONCLUSIVE, "inconclusive")],
)
def test_a_signal_is_a_normal_stop_without_for_and_an_interruption_with_it(
    bounded: bool, code: ExitCode, verdict: str
) -> None:
    """A bake cut short is no pass (its verdict agrees with its exit code, 3)."""
    move = WatchStrategy(bounded=bounded).next(
        [Watching(V2), Judged(V2, "pass"), Interrupted("SIGTERM")]
    )
    assert isinstance(move, Finish)
    assert move.exit_code == int(code)
    assert move.verdict == verdict
    assert "SIGTERM" in move.message
    assert f"{V2} (healthy so far)" in move.message


def test_for_elapsed_healthy_is_a_pass() -> None:
    move = WatchStrategy(bounded=True).next([Watching(V2), Judged(V2, "pass"), TimeUp(1800)])
    assert move == Finish("pass", "none", 0, f"--for elapsed (30m); {V2} stayed healthy")


def test_for_elapsed_while_degraded_or_unjudged_is_inconclusive() -> None:
    degraded = WatchStrategy(bounded=True).next(
        [
            Watching(V2),
            Judged(V2, "pass"),
            Judged(V2, "inconclusive", ("Logging down",)),
            TimeUp(90),
        ]
    )
    assert isinstance(degraded, Finish)
    assert degraded.exit_code == int(ExitCode.INCONCLUSIVE)
    assert "degraded (Logging down)" in degraded.message
    unjudged = WatchStrategy(bounded=True).next([Watching(V2), TimeUp(5)])
    assert isinstance(unjudged, Finish)
    assert unjudged.exit_code == int(ExitCode.INCONCLUSIVE)
    assert "before any window" in unjudged.message
    aside = WatchStrategy(bounded=True).next(
        [Watching(V2), StandingAside("a rollout is in progress"), TimeUp(60)]
    )
    assert isinstance(aside, Finish)
    assert aside.exit_code == int(ExitCode.INCONCLUSIVE)
    assert "a rollout is in progress" in aside.message


def test_a_new_deploy_starts_a_new_window() -> None:
    """What was judged of the old revision says nothing about the new one."""
    history: list[Event] = [
        Watching(V1),
        Judged(V1, "pass"),
        Watching(V2, "a new deploy"),
        TimeUp(60),
    ]
    move = WatchStrategy(bounded=True).next(history)
    assert isinstance(move, Finish)
    assert move.exit_code == int(ExitCode.INCONCLUSIVE)  # V2 was never judged


def test_a_rollback_while_keeping_watching_makes_the_end_a_fail() -> None:
    history: list[Event] = [
        Watching(V2),
        Judged(V2, "fail", ("x",)),
        ROLLED_BACK,
        Watching(V1, "restored"),
        Judged(V1, "pass"),
        TimeUp(600),
    ]
    move = WatchStrategy(bounded=True, keep_watching=True).next(history)
    assert isinstance(move, Finish)
    assert (move.verdict, move.action, move.exit_code) == ("fail", "rolled_back", 1)
    stopped = WatchStrategy(keep_watching=True).next([*history[:-1], Interrupted("SIGTERM")])
    assert isinstance(stopped, Finish)
    assert (stopped.verdict, stopped.exit_code) == ("fail", 0)  # a service being stopped
    assert stopped.action == "rolled_back"  # what it did, however it ended


def test_standing_aside_at_the_end_is_inconclusive_whatever_was_judged_before() -> None:
    """A rollout (or a deploy the watch could not follow) took over: the pass judged
    before says nothing of what serves at the end."""
    history: list[Event] = [
        Watching(V1),
        Judged(V1, "pass"),
        StandingAside("a rollout is in progress"),
        TimeUp(600),
    ]
    move = WatchStrategy(bounded=True).next(history)
    assert isinstance(move, Finish)
    assert (move.verdict, move.exit_code) == ("inconclusive", int(ExitCode.INCONCLUSIVE))
    assert "a rollout is in progress: the watch judged nothing since" in move.message
    judged_after = [*history[:-1], Judged(V1, "pass"), TimeUp(600)]
    assert WatchStrategy(bounded=True).next(judged_after) == Finish(
        "pass", "none", 0, f"--for elapsed (10m); {V1} stayed healthy"
    )
