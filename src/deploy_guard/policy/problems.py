"""Validation problems: where in which file, and what is allowed instead.

A :class:`Problem` is data, so a command can print every one of them, a test
can compare them, and an editor integration could jump to them. Its text form
is the compiler-style line editors and CI logs understand::

    policies/chat.yaml:14:7: rules[2].websocket.hold: "sixty" is not a duration (use 60s, 2m)

A warning is a Problem too, of severity ``warning``: the policy is valid and
loads, but part of it will not do what it seems to (a rollout step too short
for its metric rules). Its line says so after the path, as compilers do::

    policies/chat.yaml:9:31: rollout.steps[0].duration: warning: 2m is too short for ...
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from deploy_guard.errors import PolicyError

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Unicode categories never echoed raw: controls (line breaks, ESC, BEL), format characters
#: (bidi overrides reorder what a reader sees), lone surrogates, line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: How much of a long value a message echoes.
SHOWN_CHARS = 120


def escaped(text: str, *, quote: str = "") -> str:
    """``text`` with every character that could break or disguise a line escaped.

    Line breaks, ESC and the other controls, bidi overrides and lone surrogates
    become ``\\n``, ``\\x1b``, ``\\u202e``, ``\\ud83d``; a backslash and ``quote``
    are escaped too, so the result reads back unambiguously. Printed problems
    stay one line each: a value cannot forge a ``file:line:col`` line.
    """
    out: list[str] = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "\\" or (quote and char == quote):
            out.append("\\" + char)
        elif unicodedata.category(char) in _HIDDEN:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def quoted(text: str, limit: int = SHOWN_CHARS) -> str:
    """A user's text as messages echo it: ``"..."``, escaped, cut after ``limit`` characters."""
    if len(text) > limit:
        return f'"{escaped(text[:limit], quote=chr(34))}"... ({len(text)} characters)'
    return f'"{escaped(text, quote=chr(34))}"'


def _one_line(text: str) -> str:
    """Escape only what breaks or disguises a line; messages keep their own quotes."""
    if text.isprintable():
        return text
    return "".join(
        escaped(c) if (c in _ESCAPES or unicodedata.category(c) in _HIDDEN) else c for c in text
    )


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a policy file. ``line`` and ``column`` count from 1."""

    file: str
    line: int
    column: int
    #: Where inside the document: ``rules[2].websocket.hold``; "" for the whole document.
    path: str
    message: str
    #: ``error``: the policy cannot be used; ``warning``: it can, but see the message.
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        """One line, whatever the file name, path or message hold (see :func:`escaped`)."""
        where = _one_line(self.file)
        if self.line:  # 0: about the whole file (missing, unreadable), no place in it
            where += f":{self.line}:{self.column}"
        message = _one_line(self.message)
        if self.severity == "warning":
            message = f"warning: {message}"
        return f"{where}: {_one_line(self.path)}: {message}" if self.path else f"{where}: {message}"


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
