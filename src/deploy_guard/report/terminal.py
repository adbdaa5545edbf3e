"""The live progress view on a terminal (rich): rules, their counts, what happened.

Shown only when stderr is a terminal; in Cloud Build and pipes the check logs
Cloud Logging-shaped JSON events instead (see :mod:`deploy_guard.log`). The view
redraws at most every :data:`MIN_REDRAW` seconds, so a thousand probe snapshots
a second cost nothing, and ends with a static summary that stays on screen.
A rollout's view (the report's ``command`` is ``rollout``) adds where it is now
and every stage; a check's view is drawn exactly as before rollouts existed.
Cells are :class:`~rich.text.Text`, never markup: a server's ``[/]`` is text.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deploy_guard.log import redact_data
from deploy_guard.report.cloud_deploy import phase_line
from deploy_guard.report.model import CheckReport, utc_now
from deploy_guard.report.steps import (
    current,
    how_long,
    now_line,
    percent,
    stage_names,
    stop_line,
    stopped_at,
    traffic_check,
)

MIN_REDRAW = 0.1
_STYLE = {
    "pass": "green",
    "warn": "yellow",
    "fail": "bold red",
    "inconclusive": "magenta",
    "no_data": "magenta",
    "error": "red",
    "skipped": "dim",
    "pending": "dim",
    "running": "bold cyan",
    "interrupted": "yellow",
}


def _label(report: CheckReport) -> tuple[str, str]:
    """What the view calls the outcome: a check that could not run is an ERROR, not a verdict."""
    if report.verdict == "error" or (report.error and report.exit_code == 2):
        return "ERROR", _STYLE["error"]
    return report.verdict.upper(), _STYLE.get(report.verdict, "")


def render(
    report: CheckReport, *, events: int = 6, width: int = 100, now: datetime | None = None
) -> Group:
    """The view as a rich renderable, from the report alone (easy to test).

    While the check runs, a ``pending`` rule shows only its counts (its message,
    "not enough data yet", would be noise); the final view shows every message.
    Event lines are cut to ``width`` so that a long detail never wraps the view.
    A rollout's view (:func:`render_rollout`) adds its stages; ``now`` is the
    wall clock its running stage is timed against (tests pass a fixed one).
    """
    if report.command == "rollout":
        return render_rollout(report, events=events, width=width, now=now or utc_now())
    done = bool(report.finished_at)
    # What is shown passes through the one redaction step (only what is shown: this runs
    # at every redraw, and the JSON report's to_dict() copies the whole timeline).
    rules = redact_data(report.rules)
    watch = report.command == "watch"
    elapsed = report.timeline.elapsed()
    head = Text.assemble(
        ("deploy-guard watch " if watch else "deploy-guard ", "bold"),
        (f"{report.service or '?'}/{report.revision}", "cyan"),
        f"  {_clock(elapsed) if watch else f'{elapsed:5.1f} s'}  ",
        _label(report) if done else ("watching" if watch else "running", "dim"),
    )
    parts: list[Any] = [head]
    if line := phase_line(redact_data(report.cloud_deploy)):  # a Cloud Deploy verify job
        parts.append(Text(f"Cloud Deploy {line}", style="dim"))
    if watch and not done and report.watch.get("degraded_now"):
        episodes = report.watch.get("degraded") or [{}]
        why = redact_data(str(episodes[-1].get("why", "")))
        parts.append(Text(f"degraded (never a rollback): {why}", style=_STYLE["inconclusive"]))
    if report.rules:  # stopped before any evidence (an unknown revision): no empty table
        parts.append(_rules(rules, done))
    parts.append(_events(report, events, width))
    return Group(*parts)


def _clock(seconds: float) -> str:
    """A watch's running time: ``12.3 s`` under a minute, then ``4m05s``, ``26h03m``."""
    if seconds < 60:
        return f"{seconds:4.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _rules(rules: list[dict[str, Any]], done: bool) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    for col in ("rule", "kind", "status", "counts", "message"):
        table.add_column(col, overflow="fold", max_width=60 if col == "message" else None)
    for r in rules:
        status = str(r.get("status", ""))
        message = "" if status == "pending" and not done else str(r.get("message", ""))
        table.add_row(  # Text, never markup: "[/]" in a message must not break the view
            Text(str(r.get("rule", ""))),
            Text(str(r.get("kind", ""))),
            Text(status, style=_STYLE.get(status, "")),
            Text(str(r.get("counts", ""))),
            Text(message),
        )
    return table


def _events(report: CheckReport, events: int, width: int) -> Text:
    """The last ``events`` timeline events, one line each, cut (never wrapped) to ``width``."""
    recent = redact_data([asdict(e) for e in report.timeline.events[-events:]])
    lines = Text()
    for ev in recent:
        head_text = f"{ev['t']:7.2f}s  {ev['event']}  "
        detail = " ".join(f"{k}={v}" for k, v in ev["detail"].items())
        room = max(20, width - len(head_text) - 1)
        if len(detail) > room:
            detail = detail[: room - 1] + "…"
        lines.append(head_text, style="dim")
        lines.append(detail + "\n")
    return lines


def render_rollout(report: CheckReport, *, events: int, width: int, now: datetime) -> Group:
    """A rollout: where it is now, every stage with its traffic and status, rules, events.

    Live, the first line says the stage running and how far in it is ("step
    2/3: 50 % for 5m, 1m12s in") and the rules are that stage's; the final view
    says where the rollout stopped and why, and shows the rules of that stage.
    """
    done = bool(report.finished_at)
    steps: list[dict[str, Any]] = redact_data([asdict(s) for s in report.steps])
    head = Text.assemble(
        ("deploy-guard rollout ", "bold"),
        (f"{report.service or '?'}/{report.revision}", "cyan"),
        f"  {report.timeline.elapsed():5.1f} s  ",
        _label(report) if done else ("running", "dim"),
    )
    parts: list[Any] = [head]
    where = "" if done else now_line(steps, now)  # when done, summary() says where it stopped
    if where:
        parts.append(Text(where, style="bold"))
    if steps:
        parts.append(_stages(steps, report.revision, now=None if done else now))
    rules = redact_data(_rules_of(report, steps, done))
    if rules:
        parts.append(_rules(rules, done))
    parts.append(_events(report, events, width))
    return Group(*parts)


def _stages(steps: list[dict[str, Any]], candidate: str, now: datetime | None) -> Table:
    """One row per stage: the candidate's share written and read back, status, time, and
    the reasons of a stage that did not pass."""
    table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    for col in ("stage", "percent", "written", "verified", "status", "time", "reasons"):
        table.add_column(col, overflow="fold", max_width=50 if col == "reasons" else None)
    for name, step in zip(stage_names(steps), steps, strict=True):
        status = str(step.get("status", ""))
        written = step.get("traffic_written") or {}
        table.add_row(
            name,
            percent(step),
            f"{written.get(candidate, 0)} %" if written else "",
            _verified(step, candidate),
            Text(status, style=_STYLE.get(status, "")),
            how_long(step, now),
            # a stage that passed lists every rule's counts: noise here (the rules table has them)
            Text("" if status == "pass" else "; ".join(str(r) for r in step.get("reasons") or ())),
        )
    return table


def _verified(step: dict[str, Any], candidate: str) -> Text:
    check = traffic_check(step)
    if check == "not verified":
        return Text("not verified", style="bold yellow")
    verified = step.get("traffic_verified") or {}
    share = f"{verified.get(candidate, 0)} %"
    return (
        Text(f"{share} ≠ written", style="bold red")
        if check == "differs"
        else Text(share if check else "")
    )


def _rules_of(report: CheckReport, steps: list[dict[str, Any]], done: bool) -> list[Any]:
    """The rules worth a table: the running stage's (live) or the deciding stage's (final).

    A stage's rules are filled when its analysis reports; until then, and for
    a rollout that stopped before any stage, the report's own rules stand in.
    """
    at = stopped_at(steps) if done else current(steps)
    if at is None and done:
        at = next((i for i in reversed(range(len(steps))) if steps[i].get("rules")), None)
    if at is not None and steps[at].get("rules"):
        return list(steps[at]["rules"])
    return list(report.rules)


def summary(report: CheckReport) -> Text:
    """The last lines: verdict, action, traffic after, exit code (a rollout: where it stopped)."""
    label, style = _label(report)
    d = redact_data({"message": report.message, "notes": list(report.notes)})
    text = Text()
    text.append(label, style=style)
    text.append(f"  action={report.action}  exit={report.exit_code}\n")
    if d["message"]:
        text.append(d["message"] + "\n")
    if report.command == "rollout":
        stop = stop_line(redact_data([asdict(s) for s in report.steps]), report.action)
        text.append(f"{stop}\n" if stop else "")
    if line := phase_line(redact_data(report.cloud_deploy)):
        text.append(f"Cloud Deploy {line}\n")
    if report.traffic_after:
        split = ", ".join(f"{k} {v}%" for k, v in report.traffic_after.items())
        text.append(f"traffic now: {split}\n")
    for note in d["notes"]:
        text.append(f"note: {note}\n")
    return text


class TerminalView:
    """A :class:`deploy_guard.runtime.options.Progress` drawing :func:`render` live."""

    def __init__(self, console: Console | None = None, out: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        #: Where the outcome lines go: stdout, the command's output (the view is on stderr).
        self.out = out or Console(soft_wrap=True)
        self._live: Live | None = None
        self._last = 0.0

    def __enter__(self) -> TerminalView:
        self._live = Live(console=self.console, auto_refresh=False, transient=True)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def changed(self, report: CheckReport) -> None:
        now = time.monotonic()
        if self._live is None or now - self._last < MIN_REDRAW:
            return
        self._last = now
        self._live.update(render(report, width=self.console.width), refresh=True)

    def final(self, report: CheckReport) -> None:
        self.__exit__(None, None, None)
        self.console.print(render(report, events=50, width=self.console.width))
        self.out.print(summary(report))
