"""``deploy-guard probe``'s load flags: ``--sessions``, ``--concurrency``, ``--rate``, ``--ramp``.

They override the policy for one run, so a policy written to guard deploys
becomes a load test without editing it (``--sessions 10000 --concurrency 1000
--rate 200/s``). A flag applies to every rule the run probes; ``--rule NAME``
narrows the run to the rules meant (one value per flag keeps the command line
readable, and a load test is usually one rule). ``--sessions`` sets an http
rule's ``requests``. Given alone, ``--sessions`` caps each rule's concurrency to
it, as the watch's rounds do; a ``--concurrency`` above ``--sessions`` is
refused, as in a file.

The overridden blocks are validated by the same models as a policy file, but
not against the policy's ``timeout``: ``probe`` has no overall bound (a load
test may run for as long as it takes; SIGINT stops it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
from pydantic import ValidationError

from deploy_guard.errors import ConfigError
from deploy_guard.policy.model import HttpSpec, Rule, WebSocketSpec
from deploy_guard.policy.pacing import format_rate, parse_rate
from deploy_guard.policy.units import format_duration, parse_duration

#: What ``--rate off`` and ``--ramp off`` say: drop the policy's own.
OFF = "off"


@dataclass(frozen=True)
class LoadFlags:
    """The flags given (None: keep the policy's); ``rate``/``ramp`` :data:`OFF` drops it."""

    sessions: int | None = None
    concurrency: int | None = None
    rate: float | str | None = None
    ramp: float | str | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.sessions, self.concurrency, self.rate, self.ramp))

    def words(self) -> str:
        """``sessions 10000, concurrency 1000, rate 200/s`` for the run's first line."""
        parts = []
        if self.sessions is not None:
            parts.append(f"sessions {self.sessions}")
        if self.concurrency is not None:
            parts.append(f"concurrency {self.concurrency}")
        if isinstance(self.rate, float):
            parts.append(f"rate {format_rate(self.rate)}")
        elif self.rate == OFF:
            parts.append("no rate")
        if isinstance(self.ramp, float):
            parts.append(f"ramp {format_duration(self.ramp)}")
        elif self.ramp == OFF:
            parts.append("no ramp")
        return ", ".join(parts)


def _rate(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | str | None:
    if value is None:
        return None
    if value.strip().lower() == OFF:
        return OFF
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _ramp(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | str | None:
    if value is None:
        return None
    if value.strip().lower() == OFF:
        return OFF
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"{value} cannot work: give a duration above 0 (or off)")
    return seconds


_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--sessions",
        type=click.IntRange(1, 1_000_000),
        metavar="N",
        help="Run N sessions (websocket) or requests (http) per rule instead of the "
        "policy's; each rule's concurrency is capped to N unless --concurrency is given.",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(1, 10_000),
        metavar="N",
        help="N concurrent users (websocket) or workers (http) per rule; at most --sessions.",
    ),
    click.option(
        "--rate",
        callback=_rate,
        metavar="RATE",
        help="Start at most RATE sessions or requests per rule, evenly spaced: 200/s, 30/m "
        "(off: drop the policy's rate).",
    ),
    click.option(
        "--ramp",
        callback=_ramp,
        metavar="DURATION",
        help="Grow each rule's concurrent users linearly from 1 to its concurrency over "
        "DURATION: 2m (off: drop the policy's ramp).",
    ),
]


def load_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the four load flags to a click command (they arrive as keyword arguments)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def _changes(spec: HttpSpec | WebSocketSpec, flags: LoadFlags) -> dict[str, Any]:
    count_field = "sessions" if isinstance(spec, WebSocketSpec) else "requests"
    changes: dict[str, Any] = {}
    if flags.sessions is not None:
        changes[count_field] = flags.sessions
        if flags.concurrency is None:
            changes["concurrency"] = min(spec.concurrency, flags.sessions)
    if flags.concurrency is not None:
        changes["concurrency"] = flags.concurrency
    for name in ("rate", "ramp"):
        value = getattr(flags, name)
        if value is not None:
            changes[name] = None if value == OFF else value
    return changes


def override(rule: Rule, flags: LoadFlags) -> Rule:
    """``rule`` with the load flags applied, validated as a file's would be (ConfigError)."""
    spec = rule.http if rule.http is not None else rule.websocket
    if spec is None or not flags.given:
        return rule
    try:
        block = type(spec).model_validate({**dict(spec), **_changes(spec, flags)})
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise ConfigError(f"rule {rule.name} with {flags.words()}: {reasons}") from None
    return rule.model_copy(update={rule.kind: block})


def apply_load_flags(rules: Sequence[Rule], flags: LoadFlags) -> list[Rule]:
    """Every rule with the flags applied (the same rules when no flag was given)."""
    return [override(rule, flags) for rule in rules]
