"""Validation problems: where in which file, and what is allowed instead.

A :class:`Problem` is data, so a command can print every one of them, a test
can compare them, and an editor integration could jump to them. Its text form
is the compiler-style line editors and CI logs understand::

    policies/chat.yaml:14:7: rules[2].websocket.hold: "sixty" is not a duration (use 60s, 2m)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deploy_guard.errors import PolicyError

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a policy file. ``line`` and ``column`` count from 1."""

    file: str
    line: int
    column: int
    #: Where inside the document: ``rules[2].websocket.hold``; "" for the whole document.
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def format_path(parts: Iterable[str | int]) -> str:
    """``("rules", 2, "websocket", "hold")`` -> ``rules[2].websocket.hold``.

    Keys that are not plain names are quoted: ``expect.json["$.status"]``.
    """
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.match(part):
            text += f"[{json.dumps(part)}]"  # a user's key such as "$.status" or "X.Y"
        else:
            text += f".{part}" if text else part
    return text


def policy_error(problems: Sequence[Problem]) -> PolicyError:
    """A :class:`PolicyError` carrying ``problems``, its message naming them all."""
    ordered = sorted(set(problems))
    count = len(ordered)
    head = f"{count} problem{'s' if count != 1 else ''} in policy files"
    return PolicyError("\n".join([head, *map(str, ordered)]), problems=ordered)
