"""Durations and ratios as people write them in policy files.

A policy says ``hold: 60s`` and ``success_ratio: 95%``; the rest of the guard
works in float seconds and float ratios. These parsers are the only place that
knows the written forms, so every message about a bad value reads the same.

Bare numbers are refused for durations *in files* (is ``timeout: 5`` seconds or
minutes?) but accepted from Python, where the models are built with seconds
directly: the loader passes ``context={"strict_units": True}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, LiteralString

from pydantic import BeforeValidator, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from deploy_guard.policy.problems import quoted

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
PERCENT_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*%$"
#: The longest duration a policy may write (a day): longer cannot be meant, and a
#: window of 10**20 s would overflow the date arithmetic that looks back over it.
MAX_DURATION = 86_400.0


def shown(value: Any) -> str:
    """Quote a value the way the user wrote it, for messages (one place for all of them).

    Text is quoted and escaped (``"a\\nb"``), and long text is cut, so a value
    can never forge a line of ``policy validate`` output.
    """
    if isinstance(value, str):
        return quoted(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def parse_duration(value: Any, *, strict: bool = True) -> float:
    """``"7s"``, ``"500ms"``, ``"2m"``, ``"1m30s"`` -> float seconds.

    With ``strict=False`` a bare non-negative number is taken as seconds.
    Raises :class:`ValueError` with a message that shows the accepted forms.
    """
    hint = f"{shown(value)} is not a duration (use 60s, 2m)"
    if isinstance(value, bool):
        raise ValueError(hint)
    if isinstance(value, int | float):
        if strict or not math.isfinite(value) or value < 0:
            raise ValueError(hint)
        seconds = float(value)
    elif not isinstance(value, str):
        raise ValueError(hint)
    else:
        text = value.strip().replace(" ", "")
        if not _DURATION.match(text):
            raise ValueError(hint)
        seconds = sum(float(n) * _SECONDS[unit] for n, unit in _PART.findall(text))
    if not seconds <= MAX_DURATION:  # also inf, from "1e400"-sized digits
        raise ValueError(
            f"{shown(value)} is longer than {format_duration(MAX_DURATION)}, the longest "
            "duration a policy may use"
        )
    return seconds


def parse_ratio(value: Any) -> float:
    """``"95%"`` or ``0.95`` -> 0.95; anything outside 0..1 is refused."""
    hint = f"{shown(value)} is not a ratio (use 95% or 0.95)"
    if isinstance(value, bool):
        raise ValueError(hint)
    if isinstance(value, int | float):
        ratio = float(value)
    elif isinstance(value, str) and (m := _PERCENT.match(value.strip())):
        ratio = float(m.group(1)) / 100.0
    else:
        raise ValueError(hint)
    if not math.isfinite(ratio) or not 0.0 <= ratio <= 1.0:
        raise ValueError(hint if not isinstance(value, str) else f"{shown(value)} is over 100%")
    return ratio


def format_duration(seconds: float) -> str:
    """Float seconds -> a written form: 0.5 -> ``500ms``, 60 -> ``60s``, 120 -> ``2m``."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 120 and seconds % 60 == 0:  # 60s stays 60s: it reads as the user wrote it
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def format_measured(seconds: float) -> str:
    """A *measured* duration, rounded for reading (three significant digits).

    :func:`format_duration` writes a policy's own values exactly as the user
    wrote them; a clock reading such as 1.39799 s is noise past its third
    digit: 1.39799 -> ``1.4s``, 16.6564 -> ``16.7s``, 0.82041 -> ``820ms``,
    150.4 -> ``2m30s``.
    """
    if not math.isfinite(seconds):
        return f"{seconds}s"
    if seconds < 0:
        return "-" + format_measured(-seconds)
    millis = float(f"{seconds * 1000:.3g}")
    if seconds > 0 and millis < 1000:
        return f"{millis:g}ms"
    if seconds < 99.95:
        return f"{float(f'{seconds:.3g}'):g}s"
    whole = round(seconds)
    if whole < 120:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


def format_ratio(ratio: float) -> str:
    """0.95 -> ``95%``."""
    return f"{ratio * 100:g}%"


def in_policy_file(info: ValidationInfo) -> bool:
    """True when the loader validates a file (``context={"strict_units": True}``), where
    bare numbers and Python-only shorthands are refused; False for models built in Python."""
    return bool(info.context and info.context.get("strict_units"))


def written_unit(
    parse: Callable[..., float], kind: LiteralString
) -> Callable[[Any, ValidationInfo], float]:
    """A before-validator for a value written with a unit: ``parse(value, strict=...)``
    (strict in a policy file), its ValueError the ``kind`` error at the value's place."""

    def validate(value: Any, info: ValidationInfo) -> float:
        try:
            return parse(value, strict=in_policy_file(info))
        except ValueError as exc:
            raise PydanticCustomError(kind, str(exc)) from None

    return validate


_duration = written_unit(parse_duration, "duration")


def _ratio(value: Any) -> float:
    try:
        return parse_ratio(value)
    except ValueError as exc:
        raise PydanticCustomError("ratio", str(exc)) from None


#: Float seconds; written ``7s``, ``500ms``, ``2m``, ``1m30s`` in files.
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "description": "a duration: 500ms, 7s, 2m"}
    ),
]

#: Float 0..1; written ``95%`` or ``0.95``.
Ratio = Annotated[
    float,
    BeforeValidator(_ratio),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PERCENT_PATTERN},
                {"type": "number", "minimum": 0, "maximum": 1},
            ],
            "description": "a ratio: 95% or 0.95",
        }
    ),
]
