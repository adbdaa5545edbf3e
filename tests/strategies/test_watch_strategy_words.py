"""The words a watch ends with: what a person reads first (stdout, the summary's outcome).

A new user read them by hand: "pass: stopped by SIGINT" next to exit 3, "fail: stopped by
SIGTERM; was watching V1" after V2 was rolled back (which revision failed?), and one
Cloud Logging outage said three times over, once per logs rule.
"""

from __future__ import annotations

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode
from deploy_guard.strategies.check import Finish
from deploy_guard.strategies.watch import (
    Event,
    Interrupted,
    Judged,
    TimeUp,
    Watching,
    WatchStrategy,
    grouped,
)

V1, V2 = "chat-00001-aaa", "chat-00002-bbb"
ROLLED_BACK = ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "rolled back", "fail")
DOWN = "Cloud Logging cannot be read: the live tail is down (1 error in a row)"


def test_one_outage_is_said_once_with_every_rule_it_blinds() -> None:
    reasons = (f"no-1011: {DOWN}", f"no-errors: {DOWN}", "error-rate: no data (3 requests)")
    assert grouped(reasons) == f"no-1011, no-errors: {DOWN}; error-rate: no data (3 requests)"
    assert grouped(("3 sessions closed with 1011",)) == "3 sessions closed with 1011"
    assert grouped(()) == ""
    move = WatchStrategy(bounded=True).next(
        [Watching(V2), Judged(V2, "inconclusive", reasons[:2]), TimeUp(60)]
    )
    assert isinstance(move, Finish)
    assert move.message.count(DOWN) == 1
    assert "no-1011, no-errors" in move.message


def _rolled_back_then_watching(end: Event) -> list[Event]:
    return [
        Watching(V2),
        Judged(V2, "fail", ("x",)),
        ROLLED_BACK,
        Watching(V1, "restored"),
        Judged(V1, "pass"),
        end,
    ]


def test_the_end_of_a_watch_names_what_it_rolled_back_and_what_it_watched_last() -> None:
    stopped = WatchStrategy(keep_watching=True).next(
        _rolled_back_then_watching(Interrupted("SIGTERM"))
    )
    assert stopped == Finish(
        "fail",
        "rolled_back",
        int(ExitCode.PASS),
        f"stopped by SIGTERM; rolled back {V2} while watching; was watching {V1} (healthy so far)",
    )
    elapsed = WatchStrategy(bounded=True, keep_watching=True).next(
        _rolled_back_then_watching(TimeUp(600))
    )
    assert elapsed == Finish(
        "fail",
        "rolled_back",
        int(ExitCode.FAIL),
        f"--for elapsed (10m); rolled back {V2} while watching; was watching {V1} (healthy so far)",
    )


def test_a_bake_cut_short_says_it_was_not_judged_whole() -> None:
    move = WatchStrategy(bounded=True).next([Watching(V2), Interrupted("SIGINT")])
    assert move == Finish(
        "inconclusive",
        "none",
        int(ExitCode.INCONCLUSIVE),
        f"stopped by SIGINT before --for elapsed; was watching {V2} (not judged yet)",
    )
