"""The ``logs`` and ``metric`` rules: evidence read from Cloud Logging and Cloud Monitoring.

These rules send nothing; they judge what the candidate logged and served. Their
settings are checked against what the real APIs accept: a pattern must be RE2
(Cloud Logging's engine), a filter fragment must parse and leave the guard's own
scope alone, and a metric threshold is written in the metric's own unit.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from deploy_guard.policy.base import PositiveDuration, _err, _Model
from deploy_guard.policy.units import (
    DURATION_PATTERN,
    PERCENT_PATTERN,
    in_policy_file,
    parse_duration,
    parse_ratio,
    shown,
)

#: Python regex features that RE2 (Cloud Logging's ``=~``) does not have, by the
#: opcode of Python's own regex parser: the compiled pattern says what it uses.
_NOT_RE2 = {
    "ASSERT": "look-around or back-references",
    "ASSERT_NOT": "look-around or back-references",
    "GROUPREF": "look-around or back-references",
    "GROUPREF_EXISTS": "a conditional group (?(1)...)",
    "ATOMIC_GROUP": "an atomic group (?>...)",
    "POSSESSIVE_REPEAT": "a possessive quantifier (*+, ++, ?+)",
    "AT_END_STRING": "\\Z (write $ instead)",
}
#: Fields the guard's own scope sets in every Logging query; a rule's fragment may not.
_SCOPE_FIELDS = frozenset(
    {
        "timestamp",
        "resource.type",
        "resource.labels.service_name",
        "resource.labels.revision_name",
    }
)
#: What a policy's logs rules may take of the one Cloud Logging query (20,000 characters at
#: most); the rest is room for the guard's scope: resource type, service, revisions, timestamp.
MAX_LOG_QUERY = 19_000


# --------------------------------------------------------------------------- logs


def _not_re2(node: Any) -> str | None:
    """The first feature of a parsed Python regex that RE2 lacks (see :data:`_NOT_RE2`)."""
    from re import _parser  # type: ignore[attr-defined]

    if isinstance(node, _parser.SubPattern):
        for op, arg in node:
            what = _NOT_RE2.get(str(op)) or _NOT_RE2.get(str(arg) if str(op) == "AT" else "")
            if what or (what := _not_re2(arg)):
                return what
    elif isinstance(node, tuple | list):
        for item in node:
            if what := _not_re2(item):
                return what
    return None


def _check_regex(pattern: str) -> str:
    """A pattern must compile, and use nothing RE2 (Cloud Logging's engine) lacks."""
    from re import _parser  # type: ignore[attr-defined]

    try:
        re.compile(pattern)
        what = _not_re2(_parser.parse(pattern))
    except re.error as exc:
        raise _err("regex", f"{shown(pattern)} is not a regular expression: {exc}") from None
    if what:
        raise _err(
            "regex", f"{shown(pattern)} uses {what}, which Cloud Logging (RE2) does not support"
        )
    return pattern


def _check_pattern(pattern: str) -> str:
    if not pattern:
        raise _err(
            "regex",
            "an empty pattern matches every entry: to count every entry the filter selects, "
            "leave patterns out",
        )
    return _check_regex(pattern)


def _check_log_filter(fragment: str | None) -> str | None:
    """A filter fragment must parse: the guard evaluates it on each entry it reads."""
    if fragment is None:
        return None
    from deploy_guard.logfilter import FilterError, parse

    try:
        parsed = parse(fragment)
    except FilterError as exc:
        raise _err(
            "log_filter",
            f"{shown(fragment)} is not a Cloud Logging filter deploy-guard can read: {exc.message}"
            " (docs/emulator.md lists the supported query language)",
        ) from None
    owned = sorted(parsed.fields & _SCOPE_FIELDS)
    if owned:
        raise _err(
            "log_filter",
            f"{owned[0]} is deploy-guard's to set: every query already keeps to the service, "
            "its candidate and baseline revisions and the time since the rollout, and a rule "
            f"that narrows them never sees what it should; drop the {owned[0]} term",
        )
    return fragment


class LogsSpec(_Model):
    """A ``logs`` rule: count pattern matches in the candidate revision's entries.

    With no ``patterns`` every entry the filter returns counts. With none of
    ``max_count``, ``max_rate`` and ``relative_to_baseline`` the limit is
    ``max_count: 0``.
    """

    _MULTILINE = frozenset({"filter", "patterns"})

    #: Cloud Logging filter fragment, ANDed with the revision scope and time bound.
    filter: Annotated[str | None, AfterValidator(_check_log_filter)] = None
    #: Regular expressions (RE2 syntax: Cloud Logging evaluates them).
    patterns: list[Annotated[str, AfterValidator(_check_pattern)]] = Field(default_factory=list)
    max_count: int | None = Field(default=None, ge=0)
    #: Matches per minute.
    max_rate: float | None = Field(default=None, ge=0)
    #: The candidate's match rate may be at most this times the baseline's.
    relative_to_baseline: float | None = Field(default=None, gt=0)

    @property
    def limit_count(self) -> int | None:
        """The count limit in force (0 when no limit is written at all)."""
        if self.max_count is None and self.max_rate is None and self.relative_to_baseline is None:
            return 0
        return self.max_count


def _log_query_chars(spec: LogsSpec) -> int:
    """About how much of the one Cloud Logging query a logs rule takes (quotes escaped)."""
    size = len(spec.filter or "") + 8
    for pattern in spec.patterns:
        literal = len(pattern) + pattern.count("\\") + pattern.count('"') + 2
        size += 2 * literal + len("textPayload=~ OR jsonPayload.message=~ OR ")
    return size


# --------------------------------------------------------------------------- metric


def _quantity(value: Any, metric: str | None, strict: bool) -> float:
    """A threshold in the metric's own unit: ratio, duration or request count."""
    if metric == "error_rate":
        try:
            return parse_ratio(value)
        except ValueError as exc:
            raise _err("ratio", f"{exc}; error_rate is a share of requests") from None
    if metric == "latency":
        try:
            return parse_duration(value, strict=strict)
        except ValueError:
            raise _err("duration", f"{shown(value)} is not a duration (use 800ms, 1.5s)") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _err("number", f"{shown(value)} is not a request count (use a number like 100)")
    return float(value)


_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": f"{DURATION_PATTERN}|{PERCENT_PATTERN}"},
        {"type": "null"},
    ],
    "description": "in the metric's unit: a percentage (1%) for error_rate, a duration "
    "(800ms) for latency, a number for request_count",
}


class BaselineRelative(_Model):
    """``value <= baseline * factor + plus``; ``plus`` is in the metric's unit."""

    factor: float = Field(default=1.0, gt=0)
    #: A number, a duration (``50ms``) or a percentage (``1%``), matching the metric.
    plus: Annotated[float, WithJsonSchema(_QUANTITY_SCHEMA)] = 0.0

    @field_validator("plus", mode="before")
    @classmethod
    def _plus(cls, value: Any) -> float:
        if isinstance(value, str):
            text = value.strip()
            try:
                return parse_ratio(text) if text.endswith("%") else parse_duration(text)
            except ValueError:
                raise _err(
                    "quantity", f"{shown(value)} is not a number, a duration (50ms) or a percentage"
                ) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _err("quantity", f"{shown(value)} is not a number")
        if value < 0:
            raise _err(
                "quantity",
                f"{shown(value)} is negative: the rule would fail whenever the baseline is "
                "near zero (use factor below 1 to demand better than the baseline)",
            )
        return float(value)


class MetricSpec(_Model):
    """A ``metric`` rule: one Cloud Monitoring figure of the candidate revision."""

    type: Literal["error_rate", "latency", "request_count"]
    #: Latency only.
    percentile: Literal[50, 95, 99] | None = None
    window: PositiveDuration = 300.0
    #: Fewer requests than this in the window: the rule has no data.
    min_requests: int = Field(default=20, ge=0)
    #: Absolute ceiling: error_rate ratio, latency seconds, request_count number.
    max: Annotated[float | None, WithJsonSchema(_QUANTITY_SCHEMA)] = None
    #: request_count only: a floor.
    min: Annotated[float | None, WithJsonSchema(_QUANTITY_SCHEMA)] = None
    baseline: BaselineRelative | None = None

    @field_validator("max", "min", mode="before")
    @classmethod
    def _in_unit(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        strict = in_policy_file(info)
        return _quantity(value, info.data.get("type"), strict)

    @model_validator(mode="after")
    def _coherent(self) -> MetricSpec:
        if self.max is None and self.min is None and self.baseline is None:
            raise _err("threshold", "give max, min or baseline: the rule needs a threshold")
        if self.percentile is not None and self.type != "latency":
            raise _err("percentile", "percentile applies to latency only", "percentile")
        if self.min is not None and self.type != "request_count":
            raise _err("min", "min applies to request_count only (a traffic floor)", "min")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _err(
                "min",
                f"min {self.min:g} is above max {self.max:g}: no request count can pass",
                "min",
            )
        if self.type == "error_rate" and self.max is not None and self.max >= 1:
            raise _err(
                "max",
                "an error rate of 100% passes even when every request fails: give the share "
                "of errors to tolerate (1%)",
                "max",
            )
        return self

    @property
    def effective_percentile(self) -> int:
        """The latency percentile in force (99 unless written)."""
        return self.percentile if self.percentile is not None else 99
