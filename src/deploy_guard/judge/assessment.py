"""The shape every rule kind's evaluation returns, before severity and limits apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["pass", "fail", "no_data", "pending"]


@dataclass(frozen=True)
class Assessment:
    """One snapshot judged against one rule's threshold.

    ``outcome`` is what the snapshot shows; ``decided`` says the rule's source
    can no longer change it (a probe that ran out of room to recover, a last
    snapshot). Severity, dry-run, failure and error limits are applied later,
    in one place (:mod:`deploy_guard.judge.state`).
    """

    outcome: Outcome
    decided: bool
    observed: float | None
    threshold: str
    counts: str
    evidence: tuple[str, ...] = ()
    message: str = ""


def plural(n: int, word: str) -> str:
    """``1 session``, ``3 sessions``, ``2 passes``, ``5 entries``."""
    if n == 1:
        return f"{n} {word}"
    if word.endswith(("s", "x")):
        return f"{n} {word}es"
    if word.endswith("y"):
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}s"
