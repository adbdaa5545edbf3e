"""The watch's history stays short however long it runs, and keeps what decides its end."""

from __future__ import annotations

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode
from deploy_guard.runtime.watch import HISTORY_MAX, _append
from deploy_guard.strategies.check import Finish
from deploy_guard.strategies.watch import Event, Judged, TimeUp, Watching, WatchStrategy

V2 = "chat-00002-bbb"
ROLLED_BACK = ActionResult("rollback", "rolled_back", int(ExitCode.FAIL), "rolled back", "fail")


def test_a_new_status_replaces_the_last_one() -> None:
    history: list[Event] = [Watching(V2)]
    _append(history, Judged(V2, "pass"))
    _append(history, Judged(V2, "inconclusive", ("Logging down",)))
    assert history == [Watching(V2), Judged(V2, "inconclusive", ("Logging down",))]


def test_a_long_history_keeps_its_rollbacks() -> None:
    """Weeks of deploys followed: the history is cut short, never a rollback in it."""
    history: list[Event] = [Watching(V2)]
    for event in (Judged(V2, "fail", ("x",)), ROLLED_BACK):
        _append(history, event)
    for n in range(3 * HISTORY_MAX):
        _append(history, Watching(f"chat-{n:05d}-xyz", "a new revision took traffic"))
        _append(history, Judged(f"chat-{n:05d}-xyz", "pass"))
    assert len(history) <= HISTORY_MAX
    assert ROLLED_BACK in history
    move = WatchStrategy(bounded=True, keep_watching=True).next([*history, TimeUp(86400)])
    assert isinstance(move, Finish)
    assert (move.action, move.exit_code) == ("rolled_back", int(ExitCode.FAIL))
