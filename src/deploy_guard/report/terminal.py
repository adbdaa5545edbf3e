"""The live progress view on a terminal (rich): rules, their counts, what happened.

Shown only when stderr is a terminal; in Cloud Build and pipes the check logs
Cloud Logging-shaped JSON events instead (see :mod:`deploy_guard.log`). The view
redraws at most every :data:`MIN_REDRAW` seconds, so a thousand probe snapshots
a second cost nothing, and ends with a static summary that stays on screen.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deploy_guard.log import redact_data
from deploy_guard.report.model import CheckReport

MIN_REDRAW = 0.1
_STYLE = {
    "pass": "green",
    "warn": "yellow",
    "fail": "bold red",
    "inconclusive": "magenta",
    "no_data": "magenta",
    "error": "red",
    "pending": "dim",
}


def _label(report: CheckReport) -> tuple[str, str]:
    """What the view calls the outcome: a check that could not run is an ERROR, not a verdict."""
    if report.verdict == "error" or (report.error and report.exit_code == 2):
        return "ERROR", _STYLE["error"]
    return report.verdict.upper(), _STYLE.get(report.verdict, "")


def render(report: CheckReport, *, events: int = 6, width: int = 100) -> Group:
    """The view as a rich renderable, from the report alone (easy to test).

    While the check runs, a ``pending`` rule shows only its counts (its message,
    "not enough data yet", would be noise); the final view shows every message.
    Event lines are cut to ``width`` so that a long detail never wraps the view.
    """
    done = bool(report.finished_at)
    # What is shown passes through the one redaction step (only what is shown: this runs
    # at every redraw, and the JSON report's to_dict() copies the whole timeline).
    rules = redact_data(report.rules)
    recent = redact_data([asdict(e) for e in report.timeline.events[-events:]])
    head = Text.assemble(
        ("deploy-guard ", "bold"),
        (f"{report.service or '?'}/{report.revision}", "cyan"),
        f"  {report.timeline.elapsed():5.1f} s  ",
        _label(report) if done else ("running", "dim"),
    )
    table = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    for col in ("rule", "kind", "status", "counts", "message"):
        table.add_column(col, overflow="fold", max_width=60 if col == "message" else None)
    for r in rules:
        status = str(r.get("status", ""))
        message = "" if status == "pending" and not done else str(r.get("message", ""))
        table.add_row(
            str(r.get("rule", "")),
            str(r.get("kind", "")),
            Text(status, style=_STYLE.get(status, "")),
            str(r.get("counts", "")),
            message,
        )
    lines = Text()
    for ev in recent:
        head_text = f"{ev['t']:7.2f}s  {ev['event']}  "
        detail = " ".join(f"{k}={v}" for k, v in ev["detail"].items())
        room = max(20, width - len(head_text) - 1)
        if len(detail) > room:
            detail = detail[: room - 1] + "…"
        lines.append(head_text, style="dim")
        lines.append(detail + "\n")
    if not report.rules:  # stopped before any evidence (an unknown revision): no empty table
        return Group(head, lines)
    return Group(head, table, lines)


def summary(report: CheckReport) -> Text:
    """The last lines: verdict, action, traffic after, exit code."""
    label, style = _label(report)
    d = redact_data({"message": report.message, "notes": list(report.notes)})
    text = Text()
    text.append(label, style=style)
    text.append(f"  action={report.action}  exit={report.exit_code}\n")
    if d["message"]:
        text.append(d["message"] + "\n")
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
