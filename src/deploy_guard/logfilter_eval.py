"""How a parsed Cloud Logging filter judges one entry: the language's type rules.

:mod:`deploy_guard.logfilter` parses a filter into predicates built from the
functions here; this module holds what those predicates do on an entry (its
camelCase JSON form), with no parsing and no I/O:

- A field path resolves into the entry; lists fan out (any element may match)
  and a comparison on a field the entry lacks is false, so ``NOT x=1`` and
  ``x!=1`` (which is defined as ``NOT x=1``) match it.
- ``severity`` compares by rank (``DEFAULT`` < ``DEBUG`` < ... < ``EMERGENCY``,
  names or numbers); ``timestamp`` and ``receiveTimestamp`` compare as
  instants; two values that both read as numbers compare numerically (a
  duration's ``s`` is dropped); everything else compares as case-insensitive
  text. ``:`` (has) is a case-insensitive substring test over every scalar
  inside the value.
- A comparison's right-hand side is read once, in every type it may compare as
  (:class:`Want`), so the per-entry work is the comparison alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

#: LogSeverity numbers; names compare by these ranks.
SEVERITY_RANK: Final = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}
TIME_FIELDS: Final = frozenset({"timestamp", "receiveTimestamp"})

Entry = dict[str, Any]
Predicate = Callable[[Entry], bool]


def severity_rank(value: Any) -> int | None:
    """A severity name or number as its LogSeverity rank (None if it is neither)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().upper()
    if text in SEVERITY_RANK:
        return SEVERITY_RANK[text]
    try:
        return int(text)
    except ValueError:
        return None


def parse_time(value: str) -> datetime | None:
    """RFC 3339 (``Z`` or an offset, any fraction digits) as an aware datetime."""
    text = value.strip()
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)(?:[Tt ](\d\d:\d\d(?::\d\d)?)(\.\d+)?)?(.*)", text)
    if m is None:
        return None
    date, clock, frac, zone = m.groups()
    frac = (frac or "")[:7].ljust(7, "0") if frac else ""
    zone = zone.strip()
    if zone in ("Z", "z"):
        zone = "+00:00"
    try:
        when = datetime.fromisoformat(f"{date}T{clock or '00:00:00'}{frac}{zone}")
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).removesuffix("s")) if str(value).strip() else None
    except ValueError:
        return None


def leaves(value: Any) -> Iterator[Any]:
    """Every scalar inside a JSON value (dicts and lists flattened)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    else:
        yield value


def resolve(entry: Entry, path: tuple[str, ...]) -> list[Any]:
    """The values at ``path``; lists fan out (any element may match)."""
    node: Any = entry
    for key in path:  # fast path: dicts all the way down (nearly every lookup)
        if not isinstance(node, dict):
            break
        if key not in node:
            return []
        node = node[key]
    else:
        return [node]
    current: list[Any] = [entry]
    for key in path:
        nxt: list[Any] = []
        for node in current:
            items = node if isinstance(node, list) else [node]
            for item in items:
                if isinstance(item, dict) and key in item:
                    nxt.append(item[key])
        current = nxt
        if not current:
            break
    return current


@dataclass(frozen=True)
class Want:
    """A comparison's right-hand side, read once in every type it may compare as."""

    text: str
    lower: str
    number: float | None
    rank: int | None  # severity fields only
    when: datetime | None  # time fields only

    @classmethod
    def of(cls, field: str, text: str) -> Want:
        return cls(
            text=text,
            lower=text.lower(),
            number=as_number(text),
            rank=severity_rank(text) if field == "severity" else None,
            when=parse_time(text) if field in TIME_FIELDS else None,
        )


def compare_value(actual: Any, op: str, want: Want) -> bool:
    """One scalar comparison with the language's type rules."""
    if op == ":":
        return any(want.lower in text_of(leaf).lower() for leaf in leaves(actual))
    if isinstance(actual, dict | list):
        return any(compare_value(leaf, op, want) for leaf in leaves(actual))
    if want.rank is not None:
        rank = severity_rank(actual)
        if rank is not None:
            return _ordered(rank, op, want.rank)
    if want.when is not None:
        when = parse_time(text_of(actual))
        if when is not None:
            return _ordered(when, op, want.when)
    if want.number is not None:
        number = as_number(actual)
        if number is not None:
            return _ordered(number, op, want.number)
    return _ordered(text_of(actual).lower(), op, want.lower)


def text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _ordered(a: Any, op: str, b: Any) -> bool:
    if op == "=":
        return bool(a == b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)  # ">="


# ---------------------------------------------------------------- predicates
# What the parser combines a filter's terms with.


def always(_entry: Entry) -> bool:
    return True


def global_match(text: str) -> Predicate:
    needle = text.lower()
    return lambda e: any(needle in text_of(leaf).lower() for leaf in leaves(e))


def all_of(terms: list[Predicate]) -> Predicate:
    return lambda e: all(t(e) for t in terms)


def any_of(terms: list[Predicate]) -> Predicate:
    return lambda e: any(t(e) for t in terms)


__all__ = [
    "SEVERITY_RANK",
    "TIME_FIELDS",
    "Entry",
    "Predicate",
    "Want",
    "all_of",
    "always",
    "any_of",
    "as_number",
    "compare_value",
    "global_match",
    "leaves",
    "parse_time",
    "resolve",
    "severity_rank",
    "text_of",
]
