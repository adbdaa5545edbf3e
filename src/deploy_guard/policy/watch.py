"""What ``deploy-guard watch`` runs, from the ``watch:`` of the policies that apply.

Everything here is pure: policies in, a :class:`WatchPlan` and the rules the
watch runs out. The policies are already valid (their ``watch:`` fits their
rules, see :func:`~deploy_guard.policy.watch_spec.watch_problems`), so nothing
here raises for a loaded policy.

Several policies, one watch: the most watchful setting wins, so every policy
is watched at least as closely as it asks: the smallest ``window``,
``probe_interval``, ``metric_interval`` and ``heartbeat``. ``sessions`` is the
exception: the *smallest* wins. A watch probes production for hours, so its
sessions are real load and show in the service's own metrics; a round with
fewer sessions is never longer than each policy's ``probe_interval`` check
allowed for; and the canary, not the rounds, is what notices a server that
turns bad within seconds. The canary is the first policy's that has one.

A policy without ``watch:`` gets the defaults, and takes part in the merge
with them (it asked for nothing smaller).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from deploy_guard.policy.model import PROBE_KINDS, Policy, Rule, WebSocketSpec
from deploy_guard.policy.units import format_duration
from deploy_guard.policy.watch_spec import (
    DEFAULT_RENEW,
    DEFAULT_WATCH,
    METRIC_SAMPLING,
    SHORT_RENEW,
    Found,
    WatchSpec,
    canary_rule_index,
    scaled_spec,
    slow_round,
)

__all__ = [
    "CANARY_SUFFIX",
    "WatchPlan",
    "canary_name",
    "watch_plan",
    "watch_probe_rules",
    "watch_warnings",
]

#: The canary's rule is its websocket rule's copy, named ``<rule>-canary``.
CANARY_SUFFIX = "-canary"
#: Rule names are at most this long (the model's ``max_length``).
_NAME_MAX = 63


@dataclass(frozen=True)
class WatchPlan:
    """What the watch runs and how often, merged from the policies' ``watch:``."""

    #: Seconds of the sliding window the logs (and metric) rules are judged over.
    window: float
    #: Seconds between probe rounds' starts (None: no probe rounds).
    probe_interval: float | None
    #: At most this many sessions / requests per probe rule per round.
    sessions: int
    #: The rule the canary runs: a copy of a websocket rule (one session, held ``renew``),
    #: named ``<rule>-canary``; None when no policy has a canary.
    canary: Rule | None
    #: Seconds each canary session is held after its scenario before the next one opens.
    canary_renew: float
    #: Metric rules are read at most once per this many seconds.
    metric_interval: float
    #: Seconds between ``watch_heartbeat`` log events.
    heartbeat: float
    #: ``policy P`` / ``policies P, Q`` (those with a ``watch:``), or ``defaults``.
    source: str


def _where(policy: Policy) -> str:
    return policy.source or policy.name


def canary_name(base: str, taken: Collection[str]) -> str:
    """``<base>-canary``, cut to fit 63 characters, numbered if a rule already has the name."""
    number = 1
    while True:
        suffix = CANARY_SUFFIX if number == 1 else f"{CANARY_SUFFIX}-{number}"
        name = base[: _NAME_MAX - len(suffix)] + suffix
        if name not in taken:
            return name
        number += 1


def _canary(policy: Policy, spec: WatchSpec, taken: Collection[str]) -> Rule | None:
    """The canary's rule for ``policy``: its websocket rule, one session, held ``renew``."""
    index = canary_rule_index(spec, policy.rules)
    if index is None or spec.canary is None:
        return None
    rule = policy.rules[index]
    assert rule.websocket is not None
    websocket = WebSocketSpec.model_validate(
        {**dict(rule.websocket), "sessions": 1, "concurrency": 1, "hold": spec.canary.renew}
    )
    return Rule.model_validate(
        {
            **dict(rule),
            "name": canary_name(rule.name, taken),
            "every_step": True,
            "websocket": websocket,
        }
    )


def watch_plan(policies: Sequence[Policy]) -> WatchPlan:
    """The watch's plan for a service judged by ``policies`` (see the module docstring)."""
    specs = [policy.watching for policy in policies] or [DEFAULT_WATCH]
    intervals = [s.probe_interval for s in specs if s.probe_interval is not None]
    taken = {rule.name for policy in policies for rule in policy.rules}
    canary: Rule | None = None
    renew = DEFAULT_RENEW
    for policy in policies:
        canary = _canary(policy, policy.watching, taken)
        if canary is not None:
            assert policy.watching.canary is not None
            renew = policy.watching.canary.renew
            break
    written = [_where(policy) for policy in policies if policy.watch is not None]
    if not written:
        source = "defaults"
    else:
        source = f"polic{'y' if len(written) == 1 else 'ies'} {', '.join(written)}"
    return WatchPlan(
        window=min(s.window for s in specs),
        probe_interval=min(intervals) if intervals else None,
        sessions=min(s.sessions for s in specs),
        canary=canary,
        canary_renew=renew,
        metric_interval=min(s.metric_interval for s in specs),
        heartbeat=min(s.heartbeat for s in specs),
        source=source,
    )


def scaled_rule(rule: Rule, sessions: int) -> Rule:
    """``rule`` with at most ``sessions`` requests or sessions (and no more users), same name."""
    block = rule.http if rule.http is not None else rule.websocket
    if block is None:
        raise ValueError(f"rule {rule.name} is a {rule.kind} rule, not a probe")
    return Rule.model_validate({**dict(rule), rule.kind: scaled_spec(block, sessions)})


def watch_probe_rules(policies: Sequence[Policy], plan: WatchPlan) -> list[Rule]:
    """The policies' http and websocket rules, scaled down to ``plan.sessions`` for a round.

    Names are kept, so a round's results are reported under the rules' own
    names. Empty when the plan has no probe rounds (``probe_interval: off``).
    """
    if plan.probe_interval is None:
        return []
    return [
        scaled_rule(rule, plan.sessions)
        for policy in policies
        for rule in policy.rules
        if rule.kind in PROBE_KINDS
    ]


def watch_warnings(policy: Policy) -> list[Found]:
    """What ``policy validate`` warns about the policy's watch, each at its place.

    ``watch:`` settings that work but judge less, or cost more, than they seem to.
    """
    spec = policy.watching
    found: list[Found] = []
    canary = spec.canary
    if canary is not None and canary.renew < SHORT_RENEW:
        index = canary_rule_index(spec, policy.rules)
        if index is not None:
            found.append(
                (
                    ("watch", "canary", "renew"),
                    f"renew {format_duration(canary.renew)} is short: each canary session is "
                    f"closed {format_duration(canary.renew)} after its scenario and a new one "
                    f"opened, so the canary mostly measures handshakes and never sees a failure "
                    f"that comes later in a session (a close with 1011 7s in); renew at least "
                    f"{format_duration(SHORT_RENEW)} ({format_duration(DEFAULT_RENEW)} is the "
                    "default)",
                )
            )
    metrics = [rule.name for rule in policy.rules if rule.kind == "metric"]
    if metrics and spec.metric_interval < METRIC_SAMPLING:
        found.append(
            (
                ("watch", "metric_interval"),
                f"metric_interval {format_duration(spec.metric_interval)} is shorter than "
                f"{format_duration(METRIC_SAMPLING)}: Cloud Monitoring's points are a minute "
                "apart; reading more often costs quota and adds nothing",
            )
        )
    slow = slow_round(spec, policy.rules)
    if slow is not None and "probe_interval" not in spec.model_fields_set:
        long = format_duration(slow.seconds)
        found.append(
            (
                ("rules", slow.index),
                f"the watch's default probe_interval, {format_duration(slow.interval)}, is not "
                f"longer than this rule's probe round can take: scaled down to watch.sessions "
                f"{slow.sessions}, it can take {long} ({slow.words}), and the rounds would run "
                f"back to back; set watch.probe_interval longer than {long}, or shorten the "
                "rule's timeouts",
            )
        )
    return found
