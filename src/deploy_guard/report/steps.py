"""A rollout's stages read for people: names, times, traffic, where it stopped and why.

The Markdown summary and the terminal view say the same things about a
rollout's steps, so they say them through these small pure functions. Each
takes the steps as ``to_dict()`` gives them (plain dicts, secrets already
redacted), never the :class:`~deploy_guard.report.model.StepRecord` objects, so
nothing here can show a value that skipped redaction. Times are the steps' UTC
stamps; the terminal passes its own ``now`` for a step still running (tests
pass a fixed one).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from deploy_guard.policy.units import format_duration

#: Statuses that end a rollout at their stage (``warn`` and ``pass`` let it go on).
STOPPING = ("fail", "inconclusive", "interrupted", "error")

Step = dict[str, Any]


def stage_names(steps: Sequence[Step]) -> list[str]:
    """``tag``, ``step 1/3`` ... ``step 3/3``, ``promote``: numbered among the traffic steps.

    The number is the step's place among the policy's traffic steps (what
    ``--steps`` and the rollout annotation count), whatever other stages surround it.
    """
    total = sum(1 for s in steps if s.get("phase") == "step")
    names, seen = [], 0
    for s in steps:
        phase = str(s.get("phase", ""))
        if phase == "step":
            seen += 1
            names.append(f"step {seen}/{total}")
        else:
            names.append(phase or "?")
    return names


def percent(step: Step) -> str:
    """The candidate's planned share at this stage: ``50 %``."""
    return f"{step.get('percent', 0)} %"


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 stamp (UTC when it names no zone), or None when there is none to read."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def elapsed(step: Step, until: datetime | None = None) -> float | None:
    """Seconds the stage ran: to its ``finished_at``, else to ``until`` (a running stage)."""
    start = parse_time(step.get("started_at"))
    end = parse_time(step["finished_at"]) if step.get("finished_at") else until
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def span(seconds: float) -> str:
    """A clock reading: ``8.2s``, ``41s``, ``1m12s``, ``5m00s``, ``1h03m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m"


def planned(step: Step) -> str:
    """The stage's planned duration as a policy writes it (``5m``); "" when it has none."""
    seconds = float(step.get("duration_s") or 0.0)
    return format_duration(seconds) if seconds > 0 else ""


def how_long(step: Step, until: datetime | None = None) -> str:
    """``1m12s of 5m`` (ran, of planned), ``8.2s`` (no plan), ``5m planned`` (not reached)."""
    ran, plan = elapsed(step, until), planned(step)
    if ran is None:
        return f"{plan} planned" if plan and step.get("status") == "pending" else ""
    return f"{span(ran)} of {plan}" if plan else span(ran)


def traffic_check(step: Step) -> str:
    """How the written split compares with the split read back.

    ``verified`` (the same), ``differs`` (Cloud Run serves something else),
    ``not verified`` (written, never read back as written), ``""`` (nothing written).
    """
    written, verified = step.get("traffic_written") or {}, step.get("traffic_verified") or {}
    if not written:
        return ""
    if not verified:
        return "not verified"
    return "verified" if dict(written) == dict(verified) else "differs"


def current(steps: Sequence[Step]) -> int | None:
    """The index of the stage running now, or None (between stages, or over)."""
    return next((i for i, s in enumerate(steps) if s.get("status") == "running"), None)


def stopped_at(steps: Sequence[Step]) -> int | None:
    """The index of the stage where the rollout ended early, or None (it went on, or is done).

    The stage the driver marked ``stopped``, else the last one whose status
    ends a rollout (an interrupted step, a failed one).
    """
    marked = [i for i, s in enumerate(steps) if s.get("stopped")]
    if marked:
        return marked[0]
    ended = [i for i, s in enumerate(steps) if s.get("status") in STOPPING]
    return ended[-1] if ended else None


def why(step: Step) -> str:
    """Why a stage ended the rollout: its ``stopped`` text, else its reasons."""
    text = str(step.get("stopped") or "")
    reasons = [str(r) for r in step.get("reasons") or () if str(r) not in text]
    return "; ".join([t for t in (text, *reasons) if t])


def stop_line(steps: Sequence[Step], action: str = "") -> str:
    """Where the rollout stopped and why, in one sentence ("" while it has not).

    ``stopped at step 2/3 (50 %): fail: error-rate 4.1% > 1%``; a held one says
    where traffic stays (``held at step 2/3 (50 %): inconclusive: ...``); a
    rollout whose promotion passed reads ``completed: 100 % on the candidate``.
    """
    names = stage_names(steps)
    at = stopped_at(steps)
    if at is not None:
        step = steps[at]
        reason = why(step)
        where = held_at(steps) if action == "held" else f"stopped at {names[at]} ({percent(step)})"
        head = f"{where}: {step.get('status', '?')}"
        return f"{head}: {reason}" if reason else head
    if steps and steps[-1].get("phase") == "promote" and steps[-1].get("status") == "pass":
        return "completed: 100 % on the candidate"
    return held_at(steps) if action == "held" else ""


def held_at(steps: Sequence[Step]) -> str:
    """``held at step 2/3 (50 %)``: the last stage whose traffic was verified (what serves)."""
    last = last_verified(steps)
    if last is None:
        return "held before any traffic step"
    return f"held at {stage_names(steps)[last]} ({percent(steps[last])})"


def last_verified(steps: Sequence[Step]) -> int | None:
    """The last stage whose written traffic was read back as written."""
    done = [i for i, s in enumerate(steps) if traffic_check(s) == "verified"]
    return done[-1] if done else None


def now_line(steps: Sequence[Step], until: datetime) -> str:
    """The live view's first line: ``step 2/3: 50 % for 5m, 1m12s in``.

    Between stages (a write in flight) it names the next one: ``next: step 3/3: 90 % for 5m``.
    """
    names = stage_names(steps)
    at = current(steps)
    if at is None:
        nxt = next((i for i, s in enumerate(steps) if s.get("status") == "pending"), None)
        if nxt is None:
            return ""
        return f"next: {names[nxt]}: {_stage(steps[nxt])}"
    step = steps[at]
    ran = elapsed(step, until)
    return f"{names[at]}: {_stage(step)}" + (f", {span(ran)} in" if ran is not None else "")


def _stage(step: Step) -> str:
    if step.get("phase") == "tag":
        return "probes through the tag URL, 0 % of traffic"
    plan = planned(step)
    return f"{percent(step)} for {plan}" if plan else percent(step)
