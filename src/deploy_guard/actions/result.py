"""How an action ended, as plain data (pure: strategies read it from their history)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionResult:
    """How an action ended: what the report says and the exit code a pipeline reads."""

    kind: str  # "rollback" or "promote"
    action: str  # the report's action: rolled_back, promoted, none, superseded, failed, ...
    exit_code: int
    message: str
    #: The verdict the action settles on, or None to keep the analysis' verdict.
    verdict: str | None = None
