"""What the guard tells people, as plain data: the event kinds, an event, a delivery.

Pure: no I/O, no clock beyond stamping a new event. The policy's ``notify:``
names these kinds in ``on:``, the notifiers render an :class:`Event` with the
report it belongs to, and each attempt to deliver one ends as a
:class:`Delivery` that the report keeps.

A check or a rollout ends with exactly one *outcome* event, named for what
happened (:func:`outcome_kind`): a failure that put traffic back is a
``rollback``, one that could not is ``rollback_failed``, one that had nothing
to move is ``fail``. So a channel that wants every failure subscribes to
``fail``, ``rollback`` and ``rollback_failed``, and gets one message per run,
never two. A rollout adds a ``step`` for each traffic step that passed; a watch
tells each rollback (or failed one) as it happens and each degraded episode
once (``watch_degraded``), and its ending only when that is an ``error``.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

EventKind = Literal[
    "fail",
    "rollback",
    "rollback_failed",
    "inconclusive",
    "promote",
    "pass",
    "step",
    "watch_degraded",
    "error",
]

#: Every kind, in the order the docs list them.
KINDS: tuple[str, ...] = get_args(EventKind)
#: What a notifier hears when its ``on:`` is left out: everything a person should
#: act on or know of, not the routine ``pass`` and ``step``.
DEFAULT_ON: tuple[EventKind, ...] = (
    "fail",
    "rollback",
    "rollback_failed",
    "inconclusive",
    "promote",
    "watch_degraded",
    "error",
)
#: One line per kind, for the docs, ``--help`` and the messages' headings.
MEANING: dict[str, str] = {
    "fail": "the revision failed and no traffic was moved back (it had none, a dry run, "
    "or on_fail: none)",
    "rollback": "traffic was put back on the revisions that served before, verified",
    "rollback_failed": "a rollback was needed and failed, was refused or could not be "
    "verified: a human is needed",
    "inconclusive": "not enough evidence; nothing was changed (unless the policy says so)",
    "promote": "the revision passed and got 100 % of the traffic",
    "pass": "the revision passed; nothing was promoted",
    "step": "a rollout's traffic step passed; the rollout goes on",
    "watch_degraded": "a watch lost a source of evidence (an API outage, no data); "
    "once per episode",
    "error": "the run ended on an error that needs a human (an API that failed, a "
    "promotion refused, a configuration found wrong on the way)",
}
#: Actions after which the write is in doubt or was refused (exit 4).
_ACTION_FAILED = ("failed", "superseded", "unverified")


def new_id() -> str:
    """A unique id per event: a receiver drops the retries of one it already has."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Event:
    """Something worth telling: its kind, which run, which revision, and the details.

    ``detail`` holds the kind's own facts: a step's index and percent, why a watch
    is degraded, the revision a watch rolled back.
    """

    kind: str
    command: str
    service: str
    revision: str
    id: str = field(default_factory=new_id)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    detail: dict[str, Any] = field(default_factory=dict)
    #: The run's ending (its exit code is final), not something on the way.
    outcome: bool = False


@dataclass(frozen=True)
class Delivery:
    """How one notifier's delivery of one event ended.

    ``status``: ``delivered``, or ``failed`` with ``error`` saying why in words
    that hold no secret (never a URL: a webhook's URL is its credential).
    ``attempts``: how many tries it took (retries included).
    """

    notifier: str
    event: str
    event_id: str
    status: Literal["delivered", "failed"]
    attempts: int
    error: str = ""
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    @property
    def ok(self) -> bool:
        return self.status == "delivered"

    def as_dict(self) -> dict[str, Any]:
        """The report's ``notifications`` entry."""
        data = asdict(self)
        if not data["error"]:
            del data["error"]
        return data


def outcome_kind(
    command: str, verdict: str, action: str, exit_code: int, *, rollback_tried: bool
) -> str | None:
    """The one event a run's ending is told as (None: nothing to tell).

    ``rollback_tried``: a rollback was requested (the timeline says so), so an
    action that failed is ``rollback_failed`` rather than an ``error``. A watch
    tells its rollbacks as they happen: its ending is told only when it is an
    error.
    """
    if action in _ACTION_FAILED or exit_code == 4 or verdict == "error":
        return "rollback_failed" if rollback_tried and verdict != "error" else "error"
    if command == "watch":
        return None
    if action == "rolled_back":
        return "rollback"
    if action == "promoted":
        return "promote"
    if verdict == "fail":
        return "fail"
    if verdict in ("pass", "warn"):
        return "pass"
    return "inconclusive"


def action_kind(action: str) -> str | None:
    """The event a rollback's result is told as (a watch's, as it happens)."""
    if action == "rolled_back":
        return "rollback"
    if action in _ACTION_FAILED:
        return "rollback_failed"
    return None
