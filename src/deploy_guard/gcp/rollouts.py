"""Where a rollout is, kept on the service itself: the ``deploy-guard.dev/rollout`` annotation.

``deploy-guard rollout`` writes this record in the same UpdateService as each
traffic step (so it is there exactly when the split is), and removes it in the
write that ends the rollout (promotion to 100 %, or the split put back). It
says which revision is rolling out, the split from before the rollout (what a
rollback restores), the last verified step, who runs it and until when the
holder promised to write again (``until``): a record whose ``until`` has passed
belongs to a rollout whose process died. A second ``rollout`` refuses a live
record; ``status`` reports a dead one; ``rollout --resume`` continues from it
and ``rollback`` undoes it.

The value is compact JSON (annotation values are strings, at most 256 KiB in
total per resource); an unreadable value is reported, never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deploy_guard.gcp.tags import rfc3339
from deploy_guard.gcp.traffic import renormalise

ROLLOUT_ANNOTATION = "deploy-guard.dev/rollout"


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout in progress, as recorded on its service."""

    revision: str
    #: The split served before the rollout's first traffic write (what a rollback restores).
    before: dict[str, int]
    #: The last step whose traffic was written and verified (1-based; 0: none yet).
    step: int
    #: The candidate's share at that step.
    percent: int
    #: The planned steps: (percent, duration in seconds).
    steps: tuple[tuple[int, float], ...]
    #: Who runs it (``host:pid``).
    by: str
    started: datetime
    #: The holder writes again (or ends the rollout) before this; after it, the rollout is dead.
    until: datetime
    extra: dict[str, Any] = field(default_factory=dict)

    def live(self, now: datetime) -> bool:
        """True while the holder may still be running (``until`` not passed)."""
        return now < self.until

    def describe(self) -> str:
        plan = ", ".join(f"{p}%" for p, _d in self.steps)
        return (
            f"{self.revision} at step {self.step}/{len(self.steps)} ({self.percent}%; steps "
            f"{plan}), run by {self.by} since {rfc3339(self.started)}"
        )


def encode(record: RolloutRecord) -> str:
    """The annotation's value."""
    return json.dumps(
        {
            "revision": record.revision,
            "before": dict(sorted(record.before.items())),
            "step": record.step,
            "percent": record.percent,
            "steps": [[p, d] for p, d in record.steps],
            "by": record.by,
            "started": rfc3339(record.started),
            "until": rfc3339(record.until),
            **record.extra,
        },
        separators=(",", ":"),
        sort_keys=False,
    )


def _time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("not a time")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def decode(text: str) -> RolloutRecord:
    """The record in an annotation's value; ValueError when it cannot be read."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        before = data["before"]
        steps = data["steps"]
        if not isinstance(before, dict) or not isinstance(steps, list):
            raise ValueError("before or steps malformed")
        known = {"revision", "before", "step", "percent", "steps", "by", "started", "until"}
        return RolloutRecord(
            revision=str(data["revision"]),
            before={str(k): int(v) for k, v in before.items()},
            step=int(data["step"]),
            percent=int(data["percent"]),
            steps=tuple((int(p), float(d)) for p, d in steps),
            by=str(data.get("by", "")),
            started=_time(data["started"]),
            until=_time(data["until"]),
            extra={k: v for k, v in data.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable {ROLLOUT_ANNOTATION} annotation: {exc}") from None


def current(annotations: dict[str, str]) -> RolloutRecord | None:
    """The rollout recorded on a service (None: none); ValueError when unreadable."""
    text = annotations.get(ROLLOUT_ANNOTATION)
    if not text:
        return None
    return decode(text)


def ended() -> dict[str, str]:
    """The annotation value that ends a rollout's record, for the write that ends it.

    An empty value: the guard's writes merge annotations into the service's
    (they never drop a key), and :func:`current` reads an empty record as none.
    Every write that ends a rollout (promotion, the split put back, ``rollback``)
    sends this in the same UpdateService as its traffic, so the record goes
    exactly when the rollout does.
    """
    return {ROLLOUT_ANNOTATION: ""}


def restore_split(record: RolloutRecord, usable: Iterable[str] | None = None) -> dict[str, int]:
    """The split a rollback puts back: ``before`` without the candidate, renormalised.

    ``usable``: the revisions that may still get traffic (they exist and are
    Ready); the others are left out too and the rest scaled to 100. Empty when
    nothing is left (the candidate, or only gone revisions, served before).
    """
    keep = None if usable is None else set(usable)
    rest = {
        rev: pct
        for rev, pct in record.before.items()
        if rev != record.revision and pct > 0 and (keep is None or rev in keep)
    }
    return renormalise(rest)


def overtaken(record: RolloutRecord, served: dict[str, int]) -> bool:
    """The service no longer serves the record's step (nor the split from before it):
    someone changed its traffic since, so the rollout cannot go on and its holder's next
    write will be refused. Such a record blocks nothing."""
    from deploy_guard.gcp.traffic import renormalise, step_split

    if record.step <= 0:
        return False
    at_step = step_split(record.before, record.revision, record.percent)
    restored = renormalise({r: p for r, p in record.before.items() if r != record.revision})
    return served not in (at_step, restored)


def holder_gone(record: RolloutRecord, *, host: str | None = None) -> bool:
    """The record's holder ran on this host (``host/pid``) and that process is gone.

    A rollout killed on the machine that asks (a laptop, one build VM) need not wait
    for its ``until``; a holder on another host is judged by ``until`` alone.
    """
    import os
    import re
    import socket

    found = re.search(r"([^\s(/]+)/(\d+)\)?$", record.by)
    if found is None or found.group(1) != (host or socket.gethostname()):
        return False
    pid = int(found.group(2))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
