"""Warnings: a valid policy that will not do what it seems to.

An error stops a policy from loading; a warning does not. It is for settings
that work but quietly judge less than their author expects, such as a rollout
step too short for any Cloud Monitoring point to be complete: its metric
rules have no data in that step, every time, and only ``missing_data`` says
what that means; or a ``watch:`` that reads Cloud Monitoring more often than it
has points (see :func:`deploy_guard.policy.watch.watch_warnings`).
``policy validate`` prints warnings beside the problems and still exits 0 for
a valid policy.
"""

from __future__ import annotations

from deploy_guard.policy.model import Policy
from deploy_guard.policy.pacing import rate_out_of_reach
from deploy_guard.policy.problems import Problem, format_path
from deploy_guard.policy.rollout import short_steps
from deploy_guard.policy.watch import watch_warnings


def policy_warnings(policy: Policy) -> list[Problem]:
    """Every warning about a loaded ``policy``, each at its place in the file."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    if policy.rollout is not None:
        for short in short_steps(policy, policy.rollout.steps, policy.rollout.metric_lag):
            found.append((("rollout", "steps", short.index, "duration"), short.describe()))
    found.extend(watch_warnings(policy))
    for index, rule in enumerate(policy.rules):
        ws = rule.websocket
        if ws is not None and (slow := rate_out_of_reach(ws, ws.hold)):
            found.append((("rules", index, "websocket", "rate"), slow))
    file = policy.source or "<policy>"
    return sorted(
        Problem(file, *policy.position(*loc), format_path(loc), message, "warning")
        for loc, message in found
    )
