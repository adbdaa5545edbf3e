"""``deploy-guard watch`` as a state machine: judge what serves, window after window.

A watch has no candidate of its own: it judges whatever serves the service
(the newest revision holding traffic) for as long as it runs, and follows the
service when a new revision takes traffic. Its history, as the driver appends
it::

    Watching(rev) -> Judged(pass) ... Judged(inconclusive: degraded) ... Judged(fail)
        -> RollBack -> ActionResult -> Finish (exit 1)
                                    \\-> Watching(restored rev) ... (--keep-watching)
    Watching(rev) -> StandingAside(a rollout runs) -> Watching(rev2) ...
    ... -> TimeUp (--for elapsed) | Interrupted (SIGTERM/SIGINT) -> Finish

Every branch, with the words of the report's message, is decided in
:meth:`WatchStrategy.next` from plain data. Only a ``fail`` acts: an
``inconclusive`` window (Cloud Logging, Monitoring or the Run API down, no
data) makes the watch *degraded*, never a rollback. The driver keeps the
history short (one :class:`Judged` per change of status), so a watch that runs
for weeks decides from a bounded list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from deploy_guard.actions.result import ActionResult
from deploy_guard.exitcodes import ExitCode
from deploy_guard.strategies.check import Decision, Finish, RollBack

T = TypeVar("T")


# -- the history ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Watching:
    """What the watch judges from now on: ``revision`` (and why it changed, if it did)."""

    revision: str
    #: "" when the watch starts; else what happened ("a new deploy took traffic", ...).
    why: str = ""


@dataclass(frozen=True)
class Judged:
    """A window's verdict on ``revision``: pass, warn, fail or inconclusive (degraded)."""

    revision: str
    status: str
    reasons: tuple[str, ...] = ()
    deciding: tuple[str, ...] = ()


@dataclass(frozen=True)
class StandingAside:
    """The watch judges nothing for now: a rollout is in progress on the service (its own
    judge), or what serves cannot be judged yet (a deploy it could not follow, no revision)."""

    why: str


@dataclass(frozen=True)
class TimeUp:
    """``--for`` has elapsed."""

    after_s: float


@dataclass(frozen=True)
class Interrupted:
    """SIGTERM/SIGINT (the write in flight, if any, was finished first)."""

    signal: str


Event = Watching | Judged | StandingAside | TimeUp | Interrupted | ActionResult


# -- the moves ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Keep:
    """Go on watching: the driver waits for the next window's verdict or news."""


Move = Keep | RollBack | Finish


@dataclass(frozen=True)
class WatchStrategy:
    """The watch's decisions, from the flags and the applicable policies."""

    #: ``--for`` was given: a stop signal before it elapsed is "interrupted" (exit 3).
    bounded: bool = False
    #: ``--keep-watching``: after a rollback, watch the restored revision.
    keep_watching: bool = False
    #: Some applicable policy says ``on_fail: rollback``.
    rollback_on_fail: bool = True
    #: The service, for the commands a message tells a person to run.
    service: str = "SERVICE"

    def next(self, history: Sequence[Event]) -> Move:
        if not history:
            return Keep()
        last = history[-1]
        if isinstance(last, ActionResult):
            return self._after_action(last)
        if isinstance(last, Interrupted):
            return self._stopped(history, f"stopped by {last.signal}", signalled=True)
        if isinstance(last, TimeUp):
            return self._stopped(history, f"--for elapsed ({_duration(last.after_s)})")
        if isinstance(last, Judged) and last.status == "fail":
            return self._failed(last)
        return Keep()

    # .. the branches ..
    def _failed(self, judged: Judged) -> Move:
        reason = grouped(judged.reasons) or "fail"
        where = f"{reason} (watching {judged.revision})"
        if not self.rollback_on_fail:
            decision = Decision("fail", "none", deciding=judged.deciding)
            message = f"{where}; on_fail: none, traffic left as it is"
            return Finish("fail", "none", int(ExitCode.FAIL), message, decision)
        decision = Decision("fail", "rollback", deciding=judged.deciding)
        return RollBack(where, reject=True, decision=decision)

    def _after_action(self, acted: ActionResult) -> Move:
        if acted.action == "rolled_back" and self.keep_watching:
            return Keep()  # the driver reads the service and watches what serves now
        return Finish(acted.verdict, acted.action, acted.exit_code, acted.message)

    def _stopped(self, history: Sequence[Event], how: str, *, signalled: bool = False) -> Move:
        """The end of a watch that was not ended by a failure: what it saw decides."""
        rolled_back = _rolled_back(history)
        watched = _last(history, Watching)
        revision = watched.revision if watched else "nothing"
        now = f"was watching {revision} ({_so_far(history)})"
        if rolled_back:
            # the watch acted: say on what, whatever ended it
            how = f"{how}; rolled back {', then '.join(rolled_back)} while watching"
        if signalled and not self.bounded:
            # A watcher without --for is a service: being stopped is its normal end (the
            # report still says what it did: a rollback is a fail, and its action).
            verdict = "fail" if rolled_back else _verdict_now(history)
            action = "rolled_back" if rolled_back else "none"
            return Finish(verdict, action, int(ExitCode.PASS), f"{how}; {now}")
        if rolled_back:
            return Finish("fail", "rolled_back", int(ExitCode.FAIL), f"{how}; {now}")
        if signalled:
            # a bake cut short: what it saw so far is no verdict on the whole --for
            message = f"{how} before --for elapsed; {now}"
            return Finish("inconclusive", "none", int(ExitCode.INCONCLUSIVE), message)
        since = _since_watching(history)
        at = max((i for i, e in enumerate(since) if isinstance(e, StandingAside)), default=-1)
        aside = since[at] if at >= 0 else None
        # standing aside (a rollout, a deploy not followed yet) until the end: what was
        # judged before says nothing of what serves now
        judged = [e for e in since[at + 1 :] if isinstance(e, Judged)]
        if isinstance(aside, StandingAside) and not judged:
            message = f"{how}; {aside.why}: the watch judged nothing since"
            return Finish("inconclusive", "none", int(ExitCode.INCONCLUSIVE), message)
        if not judged:
            message = f"{how} before any window of {revision} was judged"
            return Finish("inconclusive", "none", int(ExitCode.INCONCLUSIVE), message)
        status = judged[-1].status
        if status == "inconclusive":
            reason = grouped(judged[-1].reasons) or "no evidence"
            message = f"{how} while degraded ({reason}); {revision} is not known healthy"
            return Finish("inconclusive", "none", int(ExitCode.INCONCLUSIVE), message)
        return Finish(status, "none", int(ExitCode.PASS), f"{how}; {revision} stayed healthy")


def grouped(reasons: Sequence[str]) -> str:
    """Reasons joined, rules that share one ("a: Cloud Logging cannot be read ...", "b: the
    same") named together once ("a, b: Cloud Logging cannot be read ..."): an outage says so
    once, not once per rule."""
    by_text: dict[str, list[str]] = {}
    for reason in reasons:
        rule, sep, text = reason.partition(": ")
        if not sep or " " in rule:  # not "rule: text"
            rule, text = "", reason
        names = by_text.setdefault(text, [])
        if rule and rule not in names:
            names.append(rule)
    return "; ".join(
        f"{', '.join(names)}: {text}" if names else text for text, names in by_text.items()
    )


def _rolled_back(history: Sequence[Event]) -> list[str]:
    """The revisions the watch rolled back, in order (each the one watched when it acted)."""
    out: list[str] = []
    watched = "?"
    for event in history:
        if isinstance(event, Watching):
            watched = event.revision
        elif isinstance(event, ActionResult) and event.action == "rolled_back":
            out.append(watched)
    return out


def _so_far(history: Sequence[Event]) -> str:
    """The watched revision's last window in words, for the message of a watch that ends."""
    judged = _last(_since_watching(history), Judged)
    if judged is None:
        return "not judged yet"
    return {
        "pass": "healthy so far",
        "warn": "healthy so far, with warnings",
        "inconclusive": "degraded: not known healthy",
    }.get(judged.status, judged.status)


def _last(history: Sequence[Event], kind: type[T]) -> T | None:
    return next((e for e in reversed(history) if isinstance(e, kind)), None)


def _since_watching(history: Sequence[Event]) -> list[Event]:
    """The events since the watch last changed what it judges."""
    index = max((i for i, e in enumerate(history) if isinstance(e, Watching)), default=0)
    return list(history[index:])


def _verdict_now(history: Sequence[Event]) -> str:
    judged = _last(_since_watching(history), Judged)
    return judged.status if judged is not None else "inconclusive"


def _duration(seconds: float) -> str:
    """``30m``, ``1h30m``, ``45s`` (pure: the units module is not imported here)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"
