"""Per-session templating of what a WebSocket scenario sends.

Only three placeholders exist, ``{user}``, ``{session}`` and ``{n}``, and they
are replaced by plain string substitution: a policy file is data, so no format
spec, attribute access or expression is ever evaluated (``str.format`` would
allow ``{user.__class__}``). JSON bodies are rendered recursively, values only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SessionIds:
    """Who a session is: ``user-<k>``, a unique session id, and its index ``n``."""

    user: str
    session: str
    n: int

    def render(self, text: str) -> str:
        if "{" not in text:
            return text
        return (
            text.replace("{user}", self.user)
            .replace("{session}", self.session)
            .replace("{n}", str(self.n))
        )

    def render_json(self, value: Any) -> Any:
        """A copy of ``value`` with every string (at any depth) rendered."""
        if isinstance(value, str):
            return self.render(value)
        if isinstance(value, dict):
            return {k: self.render_json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.render_json(v) for v in value]
        return value
