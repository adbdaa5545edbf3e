"""Per-session templating of what a WebSocket scenario sends.

Only three placeholders exist, ``{user}``, ``{session}`` and ``{n}``, and they
are replaced by plain string substitution: a policy file is data, so no format
spec, attribute access or expression is ever evaluated (``str.format`` would
allow ``{user.__class__}``). JSON bodies are rendered recursively, values only.
"""

from __future__ import annotations

import json
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

    def json_safe(self) -> bool:
        """Whether these ids need no escaping inside a JSON string (see :func:`json_template`)."""
        both = self.user + self.session
        return both.isascii() and both.isprintable() and '"' not in both and "\\" not in both

    def render_json(self, value: Any) -> Any:
        """A copy of ``value`` with every string (at any depth) rendered."""
        if isinstance(value, str):
            return self.render(value)
        if isinstance(value, dict):
            return {k: self.render_json(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.render_json(v) for v in value]
        return value


def json_template(value: Any) -> str | None:
    """``value`` as JSON text that :meth:`SessionIds.render` fills in, or None when it cannot.

    The placeholders are ASCII with nothing JSON escapes, so they stand in the text
    as written, and ids that need no escaping (:meth:`SessionIds.json_safe`) replace
    them there exactly as :meth:`SessionIds.render_json` would in the values: one
    dump per rule instead of a walk and a dump per session. Only values are
    rendered, never keys, so a key holding a ``{`` gets None (render per session).
    """
    if _braced_key(value):
        return None
    return json.dumps(value)


def _braced_key(value: Any) -> bool:
    if isinstance(value, dict):
        return any("{" in str(k) or _braced_key(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_braced_key(v) for v in value)
    return False
