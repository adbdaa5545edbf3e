"""The ``watch:`` block: how ``deploy-guard watch`` judges what serves, window after window.

Every key is optional, and a policy without ``watch:`` gets the defaults, so
any policy can be watched. The shape of each value is checked here (ranges,
``off``); whether the block fits the policy's rules (the canary's rule exists
and is a websocket rule, a canary session fits Cloud Run's request timeout, a
probe round fits in ``probe_interval``) is checked by :func:`watch_problems`,
which :class:`~deploy_guard.policy.model.Policy` calls once its rules are valid.
The numbers behind those checks (what a probe rule scaled down for a round is,
and how long it can take) live here too, so the check, the plan
(:mod:`deploy_guard.policy.watch`) and ``policy explain`` say the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, WithJsonSchema

from deploy_guard.policy.base import PositiveDuration, _err, _Model
from deploy_guard.policy.pacing import Pacing
from deploy_guard.policy.probes import HttpSpec
from deploy_guard.policy.units import (
    DURATION_PATTERN,
    MAX_DURATION,
    Duration,
    format_duration,
    in_policy_file,
    parse_duration,
    shown,
)
from deploy_guard.policy.websocket import ExpectStep, WebSocketSpec

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    from deploy_guard.policy.model import Rule

#: The defaults, as the docs' table gives them.
DEFAULT_WINDOW = 300.0
DEFAULT_PROBE_INTERVAL = 300.0
DEFAULT_SESSIONS = 5
DEFAULT_RENEW = 30.0
DEFAULT_METRIC_INTERVAL = 60.0
DEFAULT_HEARTBEAT = 60.0
#: A window shorter than this holds too few log lines to mean anything; longer than a
#: day cannot be meant (and memory grows with the window).
MIN_WINDOW = 10.0
MAX_WINDOW = MAX_DURATION
MIN_METRIC_INTERVAL = 1.0
#: Cloud Run's request metrics are sampled every 60 s: reading more often sees nothing new.
METRIC_SAMPLING = 60.0
MIN_HEARTBEAT = 1.0
MAX_HEARTBEAT = 3600.0
#: Cloud Run ends every request, WebSocket sessions included, by its request timeout,
#: which is at most 60 minutes: a canary session must end before.
MAX_REQUEST = 3600.0
#: A canary renewed more often than this mostly measures its own handshakes.
SHORT_RENEW = 5.0
MAX_SESSIONS = 100_000
#: How ``off`` is written, for messages.
OFF = "off"


# --------------------------------------------------------------------------- values


def _probe_interval(value: Any, info: ValidationInfo) -> Any:
    """``off``, ``false``, ``0`` and ``0s`` all mean: no probe rounds (None)."""
    in_file = in_policy_file(info)
    if value is None and in_file:
        raise _err(
            "off", "give a duration (5m) or off: leave probe_interval out for the default (5m)"
        )
    if value is None or value is False or (isinstance(value, str) and value.strip() == OFF):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return None
    try:
        seconds = parse_duration(value, strict=in_file)
    except ValueError as exc:
        raise _err("duration", f"{exc}, or off") from None
    return None if seconds == 0 else seconds


def _window_range(value: float) -> float:
    if value < MIN_WINDOW:
        raise _err(
            "window",
            f"{format_duration(value)} is too short: a window is {format_duration(MIN_WINDOW)} "
            f"to {format_duration(MAX_WINDOW)} (a few log lines and probe results must fit)",
        )
    return value


def _metric_interval_range(value: float) -> float:
    if value < MIN_METRIC_INTERVAL:
        raise _err(
            "metric_interval",
            f"{format_duration(value)} is too short: read metrics at most once a second "
            "(Cloud Monitoring's points are a minute apart; 1m is the default)",
        )
    return value


def _heartbeat_range(value: float) -> float:
    if not MIN_HEARTBEAT <= value <= MAX_HEARTBEAT:
        raise _err(
            "heartbeat",
            f"{format_duration(value)} cannot work: the heartbeat is "
            f"{format_duration(MIN_HEARTBEAT)} to {format_duration(MAX_HEARTBEAT)} (a log-based "
            "alert waits for it: a longer one would leave a silent watcher unnoticed for hours)",
        )
    return value


def _canary(value: Any, info: ValidationInfo) -> Any:
    """``off`` / ``false``: no canary; ``true`` or ``{}``: the defaults.

    An empty ``canary:`` in a file is refused: off or the default, it cannot say
    which. From Python, None is off.
    """
    if value is False or (isinstance(value, str) and value.strip() == OFF):
        return None
    if value is True:
        return {}
    if value is None and in_policy_file(info):
        raise _err(
            "off",
            "write canary: off for no canary, or leave canary out for the default (the "
            "policy's first websocket rule)",
        )
    return value


_OFF_SCHEMA: list[dict[str, Any]] = [{"const": OFF}, {"const": False}]
#: A rule name (``model.NAME_PATTERN``, which cannot be imported here: model imports this).
_RULE_NAME = r"^[a-z0-9][a-z0-9_-]*$"
ProbeInterval = Annotated[
    float | None,
    BeforeValidator(_probe_interval),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                *_OFF_SCHEMA,
                {"const": 0},
            ],
            "description": "a duration (5m), or off for no probe rounds",
        }
    ),
]


def _canary_schema(schema: dict[str, Any]) -> None:
    """The file form: a mapping, or off / false (never null)."""
    members = schema.get("anyOf", [])
    schema["anyOf"] = [m for m in members if m.get("type") != "null"] + _OFF_SCHEMA
    schema["anyOf"].append({"const": True})
    schema["description"] = "the canary user: a mapping, or off (true: the defaults)"


class CanarySpec(_Model):
    """``watch.canary``: one WebSocket session kept open and renewed, running a rule's scenario."""

    #: A websocket rule of the same policy (None: its first websocket rule).
    rule: str | None = Field(default=None, pattern=_RULE_NAME, max_length=63)
    #: Each canary session is held this long after its scenario, then a new one opens.
    renew: PositiveDuration = DEFAULT_RENEW


class WatchSpec(_Model):
    """``watch:``: the window, the probe rounds, the canary, the metric reads, the heartbeat."""

    #: The sliding window the logs (and metric) rules are judged over.
    window: Annotated[Duration, AfterValidator(_window_range)] = DEFAULT_WINDOW
    #: The probe rules run every this often (None: never).
    probe_interval: ProbeInterval = DEFAULT_PROBE_INTERVAL
    #: At most this many sessions (websocket) or requests (http) per probe rule per round.
    sessions: int = Field(default=DEFAULT_SESSIONS, ge=1, le=MAX_SESSIONS)
    #: None: no canary.
    canary: Annotated[
        CanarySpec | None,
        BeforeValidator(_canary),
        Field(json_schema_extra=_canary_schema),
    ] = Field(default_factory=CanarySpec)
    #: Metric rules are read at most once per this interval.
    metric_interval: Annotated[Duration, AfterValidator(_metric_interval_range)] = (
        DEFAULT_METRIC_INTERVAL
    )
    #: The ``watch_heartbeat`` log event's period.
    heartbeat: Annotated[Duration, AfterValidator(_heartbeat_range)] = DEFAULT_HEARTBEAT


#: What a policy without ``watch:`` gets.
DEFAULT_WATCH = WatchSpec()


# --------------------------------------------------------------------------- rounds


def scaled_counts(count: int, concurrency: int, cap: int) -> tuple[int, int]:
    """A probe's (count, concurrency) for one watch round: at most ``cap``, never more users
    than attempts."""
    count = min(count, cap)
    return count, min(concurrency, count)


def scaled_spec(spec: HttpSpec | WebSocketSpec, cap: int) -> HttpSpec | WebSocketSpec:
    """A probe rule's block with at most ``cap`` requests or sessions, validated anew.

    Only the counts change: timeouts, expectations and ``success_ratio`` stay the
    rule's own (a ratio is of the attempts made, however many).
    """
    if isinstance(spec, HttpSpec):
        requests, concurrency = scaled_counts(spec.requests, spec.concurrency, cap)
        return HttpSpec.model_validate(
            {**dict(spec), "requests": requests, "concurrency": concurrency}
        )
    sessions, concurrency = scaled_counts(spec.sessions, spec.concurrency, cap)
    return WebSocketSpec.model_validate(
        {**dict(spec), "sessions": sessions, "concurrency": concurrency}
    )


def scenario_timeouts(spec: WebSocketSpec) -> float:
    """Seconds a session's scenario may take: the sum of its expect steps' timeouts."""
    return float(sum(step.timeout for step in spec.scenario if isinstance(step, ExpectStep)))


def round_bound(spec: HttpSpec | WebSocketSpec) -> tuple[float, str]:
    """The longest one run of a probe block can take, and the sum behind it in words.

    Attempts run ``concurrency`` at a time, so there are ``ceil(count / concurrency)``
    batches, each as long as one attempt may be: an http request's ``timeout``; a
    session's ``connect_timeout``, its expect steps' timeouts and its ``hold``.
    """
    if isinstance(spec, HttpSpec):
        batches = math.ceil(spec.requests / spec.concurrency)
        count = f"{spec.requests} request{'s' if spec.requests != 1 else ''}"
        each = f"timeout {format_duration(spec.timeout)}"
        one = spec.timeout
    else:
        batches = math.ceil(spec.sessions / spec.concurrency)
        count = f"{spec.sessions} session{'s' if spec.sessions != 1 else ''}"
        parts = [f"connect_timeout {format_duration(spec.connect_timeout)}"]
        if spec.scenario:
            parts.append(f"expect timeouts {format_duration(scenario_timeouts(spec))}")
        if spec.hold:
            parts.append(f"hold {format_duration(spec.hold)}")
        each = " + ".join(parts)
        one = spec.connect_timeout + spec.longest_session
    at_a_time = "one at a time" if spec.concurrency == 1 else f"{spec.concurrency} at a time"
    if batches == 1:
        words = f"{count}, {at_a_time}: {each}"
    else:
        words = f"{count}, {at_a_time}: {batches} x ({each})"
    pacing = Pacing.of(spec)  # a ramp and a rate hold starts back: their waits add up
    if pacing.paced and (paced := pacing.bound_words()):
        words += f" + {paced}"
    return batches * one + pacing.most, words


def canary_session(spec: WebSocketSpec, renew: float) -> float:
    """Seconds one canary session may stay open: its scenario's timeouts, then ``renew``."""
    return scenario_timeouts(spec) + renew


# --------------------------------------------------------------------------- problems

#: A problem's place in the document, and its message.
Found = tuple[tuple[str | int, ...], str]


def _a(kind: str) -> str:
    """``an http``, ``a logs``: the article for a rule kind."""
    return f"an {kind}" if kind == "http" else f"a {kind}"


def _websocket_names(rules: Sequence[Rule]) -> list[str]:
    return [rule.name for rule in rules if rule.kind == "websocket"]


def canary_rule_index(spec: WatchSpec, rules: Sequence[Rule]) -> int | None:
    """The index of the rule the canary runs (named, or the first websocket rule), or None."""
    if spec.canary is None:
        return None
    for index, rule in enumerate(rules):
        wanted = spec.canary.rule is None or rule.name == spec.canary.rule
        if wanted and rule.kind == "websocket":
            return index
    return None


def _canary_problems(spec: WatchSpec, rules: Sequence[Rule], written: bool) -> list[Found]:
    canary = spec.canary
    if canary is None:
        return []
    names = _websocket_names(rules)
    if canary.rule is not None:
        choices = (
            f"its websocket rules are {', '.join(names)}"
            if names
            else "it has no websocket rule: write canary: off"
        )
        matching = [rule for rule in rules if rule.name == canary.rule]
        if not matching:
            return [
                (
                    ("watch", "canary", "rule"),
                    f"{shown(canary.rule)} is not a rule of this policy; the canary runs a "
                    f"websocket rule's scenario: {choices}",
                )
            ]
        if matching[0].kind != "websocket":
            return [
                (
                    ("watch", "canary", "rule"),
                    f"{shown(canary.rule)} is {_a(matching[0].kind)} rule; the canary runs a "
                    f"websocket rule's scenario: {choices}",
                )
            ]
    index = canary_rule_index(spec, rules)
    if index is None:
        return []
    ws = rules[index].websocket
    assert ws is not None
    longest = canary_session(ws, canary.renew)
    if longest < MAX_REQUEST:
        return []
    loc: tuple[str | int, ...] = (
        ("watch", "canary", "renew") if written else ("rules", index, "websocket")
    )
    fix = "shorten renew" if written else "write watch: {canary: off} or give a shorter renew"
    return [
        (
            loc,
            f"a canary session of rule {rules[index].name} may stay open "
            f"{format_duration(longest)} (expect timeouts "
            f"{format_duration(scenario_timeouts(ws))} + renew "
            f"{format_duration(canary.renew)}): Cloud Run cuts every request, WebSocket "
            f"sessions included, at its request timeout, at most "
            f"{format_duration(MAX_REQUEST)}; {fix} so that it stays under "
            f"{format_duration(MAX_REQUEST)}",
        )
    ]


@dataclass(frozen=True)
class SlowRound:
    """A probe rule whose scaled-down run can outlast ``probe_interval``."""

    #: The rule's position in the policy's rules.
    index: int
    rule: str
    #: The longest the scaled-down run can take, and the sum behind it in words.
    seconds: float
    words: str
    interval: float
    sessions: int


def slowest_round(spec: WatchSpec, rules: Sequence[Rule]) -> tuple[int, float, str] | None:
    """The probe rule whose scaled-down run can take longest: (index, seconds, words)."""
    slowest: tuple[int, float, str] | None = None
    for index, rule in enumerate(rules):
        block = rule.http if rule.http is not None else rule.websocket
        if block is None:
            continue
        seconds, words = round_bound(scaled_spec(block, spec.sessions))
        if slowest is None or seconds > slowest[1]:
            slowest = (index, seconds, words)
    return slowest


def slow_round(spec: WatchSpec, rules: Sequence[Rule]) -> SlowRound | None:
    """The slowest probe rule when ``probe_interval`` is not longer than its round, else None.

    Rounds never overlap: one that outlasts the interval is followed by the next at
    once, so the interval would not be what the watch does.
    """
    slowest = slowest_round(spec, rules)
    if spec.probe_interval is None or slowest is None:
        return None
    index, seconds, words = slowest
    if spec.probe_interval > seconds:
        return None
    return SlowRound(index, rules[index].name, seconds, words, spec.probe_interval, spec.sessions)


def watch_problems(spec: WatchSpec, rules: Sequence[Rule], *, written: bool) -> list[Found]:
    """Every way ``spec`` does not fit ``rules`` (``written``: the policy has ``watch:``).

    A policy without ``watch:`` is only refused where the defaults cannot work
    at all (a canary session longer than Cloud Run allows); a default
    ``probe_interval`` that a round outlasts is a warning
    (:func:`deploy_guard.policy.watch.watch_warnings`), not an error.
    """
    found = _canary_problems(spec, rules, written)
    slow = slow_round(spec, rules) if "probe_interval" in spec.model_fields_set else None
    if written and slow is not None:
        found.append(
            (
                ("watch", "probe_interval"),
                f"{format_duration(slow.interval)} is not longer than a probe round can take: "
                f"rule {slow.rule}, scaled down to watch.sessions {slow.sessions}, can take "
                f"{format_duration(slow.seconds)} ({slow.words}); make probe_interval longer "
                f"than {format_duration(slow.seconds)}, or shorten the rule's timeouts",
            )
        )
    return found
