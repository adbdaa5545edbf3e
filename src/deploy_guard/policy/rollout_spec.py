"""The ``rollout:`` block: the traffic steps ``deploy-guard rollout`` walks before 100 %.

Only the shape of the steps is checked here (percents 1 to 99, going up, at most
:data:`MAX_STEPS`; a bounded ``metric_lag``). Whether the policy's rules can
judge them, and the ``--steps`` flag, are :mod:`deploy_guard.policy.rollout`'s.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from deploy_guard.policy.base import PositiveDuration, _err, _Model
from deploy_guard.policy.units import Duration, format_duration, shown

# --------------------------------------------------------------------------- rollout


#: At most this many steps: each is a verified traffic write and a judged window.
MAX_STEPS = 20
#: Cloud Run's request metrics: "Sampled every 60 seconds. After sampling, data is not
#: visible for up to 180 seconds" (Cloud Monitoring's metric list; gcp-facts.md).
DEFAULT_METRIC_LAG = 180.0
#: A lag beyond an hour cannot be meant: no step could wait for its data.
MAX_METRIC_LAG = 3600.0


def _step_percent(value: Any) -> Any:
    """Before int parsing: ``true`` is not 1 %, and ``10%`` says how to write it."""
    if isinstance(value, bool):
        raise _err("percent", f"{shown(value)} is not a whole number")
    if isinstance(value, str) and value.strip().endswith("%"):
        raise _err(
            "percent",
            f"{shown(value)} is not a whole number: write the percent without % (10, not 10%)",
        )
    return value


def _percent_in_range(value: int) -> int:
    if value < 1:
        raise _err(
            "percent",
            f"{value}% gives the candidate no traffic to judge: a step's percent is 1 to 99",
        )
    if value > 99:
        raise _err(
            "percent",
            f"{value}% is not a step: after its last step the rollout sends 100% to the "
            "candidate itself; a step's percent is 1 to 99",
        )
    return value


def _lag_at_most_an_hour(value: float) -> float:
    if value > MAX_METRIC_LAG:
        raise _err(
            "metric_lag",
            f"{format_duration(value)} is longer than 1h: Cloud Monitoring shows a Cloud Run "
            "point at most 3m after sampling it, and no step could wait this long for its data "
            "(the default, 3m, matches Cloud Run)",
        )
    return value


class RolloutStep(_Model):
    """One traffic step of ``deploy-guard rollout``: the candidate's share and how long."""

    percent: Annotated[
        int,
        BeforeValidator(_step_percent),
        AfterValidator(_percent_in_range),
        Field(json_schema_extra={"minimum": 1, "maximum": 99}),
    ]
    duration: PositiveDuration


class RolloutSpec(_Model):
    """``rollout:``: the steps ``deploy-guard rollout`` walks before 100 %.

    Each step gives the candidate more traffic than the one before: a step that
    went back down would judge less traffic than was already judged.
    """

    steps: list[RolloutStep] = Field(min_length=1, max_length=MAX_STEPS)
    #: How old a Cloud Monitoring point must be to count in a step (complete data).
    metric_lag: Annotated[Duration, AfterValidator(_lag_at_most_an_hour)] = DEFAULT_METRIC_LAG

    @model_validator(mode="after")
    def _steps_go_up(self) -> RolloutSpec:
        for index in range(1, len(self.steps)):
            before, step = self.steps[index - 1].percent, self.steps[index].percent
            if step <= before:
                raise _err(
                    "steps_order",
                    f"step {index + 1} ({step}%) is not above step {index} ({before}%): each "
                    "step gives the candidate more traffic than the one before (10, 50, ...)",
                    f"steps[{index}].percent",
                )
        return self
