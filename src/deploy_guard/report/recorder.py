"""Where a running check says what happened: the report's timeline, the log, the view.

The engine, the executor and the driver all write through one
:class:`Recorder`, so an event lands in the report (which survives any ending)
and in the structured log with the same fields, and the live view redraws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deploy_guard.log import get_logger
from deploy_guard.report.model import CheckReport

#: One logger for the whole check (the name predates the split: log filters use it).
log = get_logger("deploy_guard.gate")


class Recorder:
    """Timeline + log + redraw, for one check's :class:`CheckReport`."""

    def __init__(
        self,
        report: CheckReport,
        *,
        fields: Callable[[], dict[str, Any]],
        calls: Callable[[], dict[str, dict[str, int]]],
        changed: Callable[[CheckReport], None],
    ) -> None:
        self.report = report
        self._fields = fields
        self._calls = calls
        self._changed = changed

    def event(self, name: str, **detail: Any) -> None:
        """A step of the check: in the timeline, logged at info, and redrawn."""
        self.report.timeline.add(name, **detail)
        log.info(name, **{**self._fields(), **detail})
        self.sync()

    def error(self, name: str, **detail: Any) -> None:
        """A step that went wrong: in the timeline and logged at error (no redraw)."""
        self.report.timeline.add(name, **detail)
        log.error(name, **{**self._fields(), **detail})

    def sync(self) -> None:
        """Copy the API call counts into the report and redraw the view."""
        self.report.api_calls = self._calls()
        self._changed(self.report)
