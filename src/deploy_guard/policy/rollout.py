"""The steps a rollout walks: from ``--steps`` or from the policies, checked alike.

``deploy-guard rollout`` takes its traffic steps from ``--steps 10:2m,50:5m``
or, without it, from the ``rollout:`` of the policies that apply to the
service. Both go through the same model (:class:`RolloutSpec`), so a step
written on the command line is held to exactly the rules a policy's is:
percents 1..99 going up, durations above zero and at most a day, 20 steps at
most. Everything here is pure: text and policies in, a plan or a
:class:`~deploy_guard.errors.ConfigError` (exit 2) out, before anything is
read from or written to Cloud Run.

It also knows what a step is too short for. Cloud Run's request metrics are
sampled every 60 s and shown up to 180 s later (``metric_lag``), so a metric
rule sees one complete point in a step only when the step lasts at least
``metric_lag + 60 s``; shorter, the rule has no data there, and its
``missing_data`` decides. :func:`short_steps` names each such step and rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from deploy_guard.errors import ConfigError
from deploy_guard.policy.load import parse_at
from deploy_guard.policy.messages import describe
from deploy_guard.policy.model import (
    DEFAULT_METRIC_LAG,
    NOTHING_AT_STEPS,
    Policy,
    RolloutSpec,
    RolloutStep,
    Rule,
)
from deploy_guard.policy.problems import quoted
from deploy_guard.policy.units import format_duration

#: Cloud Monitoring's smallest alignment period: one point covers 60 s of requests.
METRIC_ALIGNMENT = 60.0
#: What ``--steps`` looks like, for messages.
STEPS_EXAMPLE = "10:2m,50:5m"


@dataclass(frozen=True)
class RolloutPlan:
    """The steps a rollout walks, the metric lag its steps honour, and where they come from."""

    steps: tuple[RolloutStep, ...]
    #: Seconds a Cloud Monitoring point must be old to count in a step (the largest asked for).
    metric_lag: float
    #: ``--steps``, or the policy files whose ``rollout.steps`` these are.
    source: str


@dataclass(frozen=True)
class ShortStep:
    """A step too short for a metric rule to see one complete Monitoring point."""

    #: 0-based position of the step.
    index: int
    step: RolloutStep
    rule: Rule
    #: The shortest duration in which the rule decides: metric_lag + 60 s.
    needed: float

    def describe(self) -> str:
        """What goes wrong and the fix, in a policy author's words."""
        need = format_duration(self.needed)
        lag = format_duration(self.needed - METRIC_ALIGNMENT)
        return (
            f"step {self.index + 1} ({self.step.percent}% for "
            f"{format_duration(self.step.duration)}) is too short for metric rule "
            f'"{self.rule.name}": it sees no complete data in a step shorter than {need} '
            f"(metric_lag {lag} + {METRIC_ALIGNMENT:g}s, Cloud Monitoring's smallest "
            f"alignment), so it has no data in this step and its missing_data "
            f"({self.rule.missing_data}) decides; make the step at least {need}"
        )


def step_text(steps: Sequence[RolloutStep]) -> str:
    """Steps in ``--steps`` syntax: ``10:2m,50:5m``."""
    return ",".join(f"{s.percent}:{format_duration(s.duration)}" for s in steps)


def shortest_step_for_metrics(metric_lag: float) -> float:
    """How long a step must last for a metric rule to see one complete point in it."""
    return metric_lag + METRIC_ALIGNMENT


def short_steps(policy: Policy, steps: Sequence[RolloutStep], metric_lag: float) -> list[ShortStep]:
    """Every (step, metric rule) pair in which the rule can see no complete data.

    Dry-run rules are left out: nothing relies on them.
    """
    needed = shortest_step_for_metrics(metric_lag)
    rules = [r for r in policy.rules if r.kind == "metric" and not r.dry_run]
    return [
        ShortStep(index, step, rule, needed)
        for index, step in enumerate(steps)
        if step.duration < needed
        for rule in rules
    ]


def _where(policy: Policy) -> str:
    return policy.source or policy.name


def _spec_errors(exc: ValidationError, items: Sequence[str] | None) -> list[str]:
    """One message per error, naming the item (``item 2 "50:5m"``) when there are items."""
    out: list[str] = []
    for error in exc.errors(include_url=False):
        loc: tuple[str | int, ...] = tuple(error["loc"])
        at = (error.get("ctx") or {}).get("at")
        if isinstance(at, str):  # "steps[1].percent": the spec's own order check
            loc = (*loc, *parse_at(at))
        message = describe(error, loc, None)
        if items is not None and len(loc) >= 2 and isinstance(loc[1], int):
            index = loc[1]
            field = f" {loc[2]}" if len(loc) > 2 else ""
            message = f"item {index + 1} {quoted(items[index])}{field}: {message}"
        out.append(message)
    return out


def parse_steps(text: str) -> list[RolloutStep]:
    """``--steps 10:2m,50:5m`` -> steps, validated like a policy's ``rollout.steps``.

    Durations are written as in policy files (``90s``, ``2m``, ``1m30s``; a bare
    number is refused). Raises ConfigError naming every bad item.
    """
    if not text.strip():
        raise ConfigError(
            f"--steps is empty: give PERCENT:DURATION items, e.g. --steps {STEPS_EXAMPLE}"
        )
    items = [item.strip() for item in text.split(",")]
    raw: list[dict[str, str]] = []
    bad: list[str] = []
    for number, item in enumerate(items, 1):
        percent, colon, duration = item.partition(":")
        if not colon or not percent.strip() or not duration.strip():
            bad.append(
                f"item {number} {quoted(item)} is not PERCENT:DURATION (e.g. {STEPS_EXAMPLE})"
            )
        raw.append({"percent": percent.strip(), "duration": duration.strip()})
    if bad:
        raise ConfigError(f"--steps {quoted(text)}: " + "; ".join(bad))
    try:
        spec = RolloutSpec.model_validate({"steps": raw}, context={"strict_units": True})
    except ValidationError as exc:
        raise ConfigError(
            f"--steps {quoted(text)}: " + "; ".join(_spec_errors(exc, items))
        ) from None
    return list(spec.steps)


def _checked(steps: Sequence[RolloutStep]) -> tuple[RolloutStep, ...]:
    """Steps built in Python (not by :func:`parse_steps`) still go through the spec's checks."""
    try:
        return tuple(RolloutSpec(steps=list(steps)).steps)
    except ValidationError as exc:
        raise ConfigError("--steps: " + "; ".join(_spec_errors(exc, None))) from None


def rollout_plan(policies: Sequence[Policy], override: list[RolloutStep] | None) -> RolloutPlan:
    """The steps to walk for a service judged by ``policies``.

    ``override`` (``--steps``) wins; else the policies' ``rollout.steps``, which
    must agree when several policies give them. ``metric_lag`` is the largest
    any policy asks for (a step must honour the slowest view of Monitoring).
    Raises ConfigError when there are no steps, when policies disagree, or when
    a policy would judge nothing in a step.
    """
    for policy in policies:
        if not policy.step_rules:
            raise ConfigError(f"policy {_where(policy)}: {NOTHING_AT_STEPS}")
    given = [(policy, policy.rollout) for policy in policies if policy.rollout is not None]
    metric_lag = max((spec.metric_lag for _, spec in given), default=DEFAULT_METRIC_LAG)
    if override is not None:
        return RolloutPlan(_checked(override), metric_lag, "--steps")
    if not given:
        where = ", ".join(_where(p) for p in policies)
        target = f"add rollout.steps to policy {where} or " if where else ""
        raise ConfigError(f"no rollout steps: {target}pass --steps {STEPS_EXAMPLE}")
    first, spec = given[0]
    for other, other_spec in given[1:]:
        if other_spec.steps != spec.steps:
            raise ConfigError(
                f"the policies give different rollout steps: {_where(first)} says "
                f"{step_text(spec.steps)}, {_where(other)} says {step_text(other_spec.steps)}; "
                "make them the same, keep rollout.steps in one policy only, or pass --steps"
            )
    source = ", ".join(_where(policy) for policy, _ in given)
    return RolloutPlan(tuple(spec.steps), metric_lag, source)


def plan_warnings(policies: Sequence[Policy], plan: RolloutPlan) -> list[str]:
    """What ``policy validate`` would warn about these steps, for the rollout to log.

    With ``--steps`` the steps are not in any file, so nothing checked them
    against the policies' metric rules before this.
    """
    return [
        f"policy {_where(policy)}: {short.describe()}"
        for policy in policies
        for short in short_steps(policy, plan.steps, plan.metric_lag)
    ]
