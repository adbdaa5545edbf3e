"""What the judge answers: one result per rule, one verdict per policy.

Plain frozen dataclasses so the report, the gate and the tests can hold them
without knowing how they were reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RuleStatus = Literal["pass", "fail", "warn", "no_data", "error", "pending"]
VerdictStatus = Literal["pass", "warn", "fail", "inconclusive"]
Action = Literal["rollback", "promote", "hold", "none"]


@dataclass(frozen=True)
class RuleResult:
    """One rule's evaluation, as of the last measurement the judge saw.

    ``status`` is ``pending`` while more evidence could still change it;
    ``decided`` is True once nothing can. A warn-severity rule that fails is
    ``warn``. For ``no_data`` and ``error`` the ``message`` names the likely cause.
    """

    rule: str
    kind: str
    severity: str
    dry_run: bool
    status: RuleStatus
    #: Success ratio (probes), matches or matches/min (logs), the metric's value.
    observed: float | None
    #: The limit in words: "success ratio >= 100%", "matches <= 0", "p99 <= 1s".
    threshold: str
    #: The counts behind it: "3 of 200 sessions closed with 1011; limit 0".
    counts: str
    #: A few concrete pieces of evidence: failed sessions, matching log lines.
    evidence: tuple[str, ...]
    message: str
    decided: bool


@dataclass(frozen=True)
class Verdict:
    """A policy's outcome and the action it asks for."""

    status: VerdictStatus
    action: Action
    rules: tuple[RuleResult, ...]
    #: One line per rule that mattered: "chat-cycles: 3 of 200 sessions closed with 1011; limit 0".
    reasons: tuple[str, ...]
    #: Names of the rules that decided it.
    deciding: tuple[str, ...]
