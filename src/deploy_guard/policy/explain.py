"""A policy in plain words (``deploy-guard policy explain FILE``).

Reviewers read policies in pull requests; this says what a file will *do*,
with every default made visible, so "what happens if Logging is down?" has an
answer without reading the reference.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from deploy_guard.judge.metric import format_value
from deploy_guard.policy.model import (
    PROBE_KINDS,
    ExpectStep,
    HttpSpec,
    LogsSpec,
    MetricSpec,
    Policy,
    RolloutStep,
    Rule,
    SendStep,
    WebSocketSpec,
)
from deploy_guard.policy.pacing import explain_pacing
from deploy_guard.policy.rollout import STEPS_EXAMPLE, shortest_step_for_metrics
from deploy_guard.policy.units import format_duration as dur
from deploy_guard.policy.units import format_ratio as pct
from deploy_guard.policy.units import shown
from deploy_guard.policy.watch import watch_plan
from deploy_guard.policy.watch_spec import canary_rule_index, scenario_timeouts, slowest_round

_MISSING = {
    "fail": "counts as a failure",
    "inconclusive": "makes the check inconclusive",
    "ignore": "is ignored (the rule is skipped)",
}
_ON_FAIL = {
    "rollback": "put traffic back on the revisions that served before",
    "none": "change nothing (the exit code still says fail)",
}
_ON_INCONCLUSIVE = {
    "hold": "leave traffic as it is and exit 3 for a human to decide",
    "rollback": "roll back, as on failure",
    "pass": "treat it as a pass",
}
_ON_PASS = {"promote": "send 100% of traffic to the new revision", "none": "change nothing"}


def _list(items: list[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _http(spec: HttpSpec) -> Iterator[str]:
    yield (
        f"Sends {spec.requests} {spec.method} request{'s' if spec.requests != 1 else ''} "
        f"to {spec.path}, {spec.concurrency} at a time, each within {dur(spec.timeout)}."
    )
    yield from explain_pacing(spec, noun="request")
    expect = spec.expect
    # "HTTP status" and "JSON field": a body field may well be named status too
    checks = [f"the HTTP status is {_list([str(s) for s in expect.status], 'or')}"]
    if expect.body_contains is not None:
        checks.append(f"the body contains {shown(expect.body_contains)}")
    for path, value in expect.json.items():
        checks.append(f"the JSON body's field {path} is {json.dumps(value)}")
    if expect.max_latency is not None:
        checks.append(f"it answers within {dur(expect.max_latency)}")
    yield f"A request succeeds when {_list(checks)}; {pct(spec.success_ratio)} must succeed."


def _step(step: SendStep | ExpectStep) -> str:
    if isinstance(step, SendStep):
        what = "a JSON message" if step.json is not None else f"the text {shown(step.text)}"
        return f"send {what}"
    order = " then ".join(step.events)
    extra = "other events may come between" if step.allow_extra else "no other events allowed"
    return f"expect {order} (each within {dur(step.timeout)}; {extra})"


def _websocket(spec: WebSocketSpec) -> Iterator[str]:
    yield (
        f"Opens {spec.sessions} WebSocket session{'s' if spec.sessions != 1 else ''} on "
        f"{spec.path}, {spec.concurrency} user{'s' if spec.concurrency != 1 else ''} at a time "
        f"(user-1..user-{spec.concurrency})."
    )
    yield from explain_pacing(spec, spec.hold)
    if spec.scenario:
        yield "In each session: " + "; ".join(_step(s) for s in spec.scenario) + "."
    if spec.hold:
        yield (
            f"Then it keeps the connection open for {dur(spec.hold)}; a close during the hold "
            "fails the session."
        )
    if spec.scenario or spec.hold:
        yield (
            f"A session may last {dur(spec.longest_session)} (expect timeouts + hold): the "
            "candidate's request timeout must be longer, or Cloud Run cuts the session "
            "(check refuses such a revision with exit 2; the timeout is 300s unless set)."
        )
    codes = _list([str(c) for c in spec.close_codes.fail], "or")
    yield f"A session fails when the server closes with {codes}, or a step is not met."
    if spec.isolation is not None:
        yield (
            f"Isolation: every event carrying {spec.isolation.field} must carry the session's "
            "own user."
        )
    yield f"{pct(spec.success_ratio)} of sessions must succeed."


def _logs(spec: LogsSpec, window: float) -> Iterator[str]:
    scope = f" matching {spec.filter}" if spec.filter else ""
    what = (
        f"those matching {_list([repr(p) for p in spec.patterns], 'or')}"
        if spec.patterns
        else "every one"
    )
    yield (
        f"Reads the new revision's log entries{scope} since the rollout (at most "
        f"{dur(window)} back) and counts {what}."
    )
    limits: list[str] = []
    if spec.limit_count is not None:
        noun = ("match", "matches") if spec.patterns else ("entry", "entries")
        n = spec.limit_count
        limits.append(f"any {noun[0]}" if n == 0 else f"more than {n} {noun[n != 1]}")
    if spec.max_rate is not None:
        limits.append(f"more than {spec.max_rate:g} per minute")
    if spec.relative_to_baseline is not None:
        limits.append(f"a rate above {spec.relative_to_baseline:g}x the previous revision's")
    yield f"Fails on {_list(limits, 'or')}."


def _metric(spec: MetricSpec) -> Iterator[str]:
    name = {
        "error_rate": "share of 5xx responses",
        "latency": f"p{spec.effective_percentile} request latency",
        "request_count": "request count",
    }[spec.type]

    def value(v: float) -> str:
        return format_value(spec, v)  # the judge's own wording, so both say the same

    yield f"Reads the new revision's {name} over the last {dur(spec.window)} (Cloud Monitoring)."
    limits: list[str] = []
    if spec.max is not None:
        limits.append(f"above {value(spec.max)}")
    if spec.min is not None:
        limits.append(f"below {value(spec.min)}")
    if spec.baseline is not None:
        plus = f" + {value(spec.baseline.plus)}" if spec.baseline.plus else ""
        limits.append(f"above {spec.baseline.factor:g} x the previous revision's {name}{plus}")
    yield f"Fails {_list(limits, 'or')}."
    yield f"With fewer than {spec.min_requests} requests in the window it has no data."


def _names(rules: list[Rule]) -> str:
    return _list([r.name for r in rules])


def _step_judges(policy: Policy, step: RolloutStep, needed: float) -> str:
    """What one traffic step judges; metric rules only when the step is long enough."""
    rules = policy.step_rules
    groups = [
        ([r for r in rules if r.kind in PROBE_KINDS], "probe", "probes"),
        ([r for r in rules if r.kind == "logs"], "logs", "logs"),
    ]
    metrics = [r for r in rules if r.kind == "metric"]
    if step.duration >= needed:
        groups.append((metrics, "metric", "metrics"))
    judged = [f"{_names(g)} ({one if len(g) == 1 else many})" for g, one, many in groups if g]
    text = f"judging {', '.join(judged)}" if judged else "judging no rule"
    if metrics and step.duration < needed:
        text += f"; {_names(metrics)} {'has' if len(metrics) == 1 else 'have'} no data in a step "
        text += "this short"
    return text


def _rollout(policy: Policy) -> Iterator[str]:
    """The ``deploy-guard rollout`` steps, and what each one judges."""
    spec = policy.rollout
    if spec is None:
        yield (
            "Rollout: no steps in this policy; deploy-guard rollout needs --steps "
            f"(e.g. --steps {STEPS_EXAMPLE})."
        )
        return
    count = len(spec.steps)
    yield f"Rollout (deploy-guard rollout): {count} step{'s' if count != 1 else ''}, then 100%."
    probes = [r for r in policy.rules if r.kind in PROBE_KINDS]
    if probes:
        yield f"   Before the first step: {_names(probes)} through the tag URL, as check does."
    needed = shortest_step_for_metrics(spec.metric_lag)
    for index, step in enumerate(spec.steps, 1):
        yield (
            f"   Step {index}: {step.percent}% of traffic for {dur(step.duration)}, "
            f"{_step_judges(policy, step, needed)}."
        )
    yield "   Then 100% to the new revision, pinned by name."
    if any(r.kind == "metric" for r in policy.rules):
        yield (
            f"   Metric points count in a step once {dur(spec.metric_lag)} old (metric_lag) and "
            f"cover 60s: a step shorter than {dur(needed)} gives metric rules no data."
        )
    yield (
        "   A step passes when its time is over and no fail rule failed; a failure at any "
        "step puts traffic back on the split from before the rollout."
    )


def _every(seconds: float) -> str:
    """``every minute``, ``every 2s``."""
    return "every minute" if seconds == 60 else f"every {dur(seconds)}"


def _watch(policy: Policy) -> Iterator[str]:
    """What ``deploy-guard watch`` does with this policy alone."""
    plan = watch_plan([policy])
    spec = policy.watching
    defaults = ", with the defaults: the policy has no watch:" if policy.watch is None else ""
    yield (
        f"Watch (deploy-guard watch{defaults}): judges whatever serves the service over a "
        f"sliding {dur(plan.window)} window, window after window."
    )
    logs = [r for r in policy.rules if r.kind == "logs"]
    if logs:
        yield (
            f"   Logs: {_names(logs)} {'is' if len(logs) == 1 else 'are'} judged on the serving "
            f"revision's entries, streamed live, counted over the window."
        )
    probes = [r for r in policy.rules if r.kind in PROBE_KINDS]
    if probes and plan.probe_interval is None:
        yield f"   Probe rounds: none (probe_interval: off); {_names(probes)} never run."
    elif probes and plan.probe_interval is not None:
        slowest = slowest_round(spec, policy.rules)
        bound = f"; a round can take up to {dur(slowest[1])}" if slowest is not None else ""
        yield (
            f"   Probe rounds: every {dur(plan.probe_interval)}, {_names(probes)}, each with at "
            f"most {plan.sessions} session{'s' if plan.sessions != 1 else ''} or "
            f"request{'s' if plan.sessions != 1 else ''} (concurrency capped to it){bound}."
        )
    canary = plan.canary
    if canary is not None and canary.websocket is not None:
        ws = canary.websocket
        index = canary_rule_index(spec, policy.rules)
        source = policy.rules[index].name if index is not None else canary.name
        yield (
            f"   Canary ({canary.name}): one WebSocket session always open: it runs "
            f"{source}'s scenario, holds the session {dur(plan.canary_renew)} after it, then "
            "closes it and opens a new one at once, so a server that starts closing sessions is "
            "seen within seconds."
        )
        yield (
            f"   A canary session may stay open {dur(scenario_timeouts(ws) + plan.canary_renew)} "
            f"(expect timeouts {dur(scenario_timeouts(ws))} + renew {dur(plan.canary_renew)}): "
            "the service's request timeout must be longer."
        )
    elif spec.canary is None:
        yield "   Canary: off."
    else:
        yield "   Canary: none (the policy has no websocket rule)."
    metrics = [r for r in policy.rules if r.kind == "metric"]
    if metrics:
        often = "a minute" if plan.metric_interval == 60 else f"every {dur(plan.metric_interval)}"
        yield (
            f"   Metrics: {_names(metrics)} read at most once {often}, counting only points "
            "Cloud Monitoring has complete."
        )
    yield f"   Heartbeat: a watch_heartbeat log event {_every(plan.heartbeat)}."
    act = (
        "roll back to the last known good revision"
        if policy.on_fail == "rollback"
        else "change nothing (on_fail: none)"
    )
    yield (
        f"   On a fail: {act}. A Logging, Monitoring or Run API outage makes the watch "
        "degraded, never a rollback."
    )


def explain_rule(rule: Rule, policy: Policy) -> list[str]:
    """The lines for one rule: a heading, then what it does and how it is judged."""
    flags = [rule.kind, rule.severity if not rule.dry_run else f"{rule.severity}, dry run"]
    lines = [f"{rule.name} ({', '.join(flags)})"]
    spec = rule.spec
    if isinstance(spec, HttpSpec):
        lines += _http(spec)
    elif isinstance(spec, WebSocketSpec):
        lines += _websocket(spec)
    elif isinstance(spec, LogsSpec):
        lines += _logs(spec, policy.evidence_window)
    else:
        lines += _metric(spec)
    if rule.kind in ("logs", "metric"):
        n, e = rule.failure_limit, rule.consecutive_error_limit
        tolerated = (
            "no failing pass is tolerated"
            if n == 0
            else f"{n} failing pass{'es are' if n != 1 else ' is'} tolerated"
        )
        errors = (
            "a single source error makes it an error"
            if e == 1
            else f"{e} source errors in a row make it an error"
        )
        lines.append(f"Measured repeatedly: {tolerated}; {errors}.")
    if not rule.at_every_step:
        lines.append(
            "Rollout: runs only before the first traffic step, through the tag URL "
            "(every_step: false)."
        )
    lines.append(f"No data or a source error {_MISSING[rule.missing_data]}.")
    if rule.dry_run:
        lines.append("Dry run: it is judged and reported but never decides.")
    elif rule.severity == "warn":
        lines.append("Severity warn: a failure makes the verdict warn, never fail.")
    return lines


def explain(policy: Policy) -> str:
    """The whole policy in plain words."""
    out = [f"Policy {policy.name}" + (f" ({policy.source})" if policy.source else "")]
    if policy.description:
        out.append(policy.description.strip())
    out.append(f"Applies to services: {', '.join(policy.services)}.")
    stop = (
        "stops at the first failing fail rule (fail_fast)"
        if policy.fail_fast
        else "runs every rule to the end (fail_fast: false)"
    )
    out.append(
        f"Runs {len(policy.rules)} rule{'s' if len(policy.rules) != 1 else ''}, {stop}; a check "
        f"takes at most {dur(policy.timeout)}."
    )
    auth = policy.auth
    if auth.token_env:
        out.append(f"Probes send a bearer token read from ${auth.token_env}.")
    elif auth.token_file:
        out.append(f"Probes send a bearer token read from the file {auth.token_file}.")
    elif auth.id_token == "auto":
        audience = auth.audience or "the service URL"
        out.append(f"Probes send a Google ID token for {audience} when credentials allow.")
    else:
        out.append("Probes send no credentials.")
    for index, rule in enumerate(policy.rules, 1):
        head, *body = explain_rule(rule, policy)
        out.append("")
        out.append(f"{index}. {head}")
        out.extend(f"   {line}" for line in body)
    out.append("")
    out.extend(_rollout(policy))
    out.append("")
    out.extend(_watch(policy))
    out.append("")
    out.append("Verdict: any failing fail rule fails the check; missing data follows each rule's")
    out.append("missing_data; warn rules can only warn.")
    out.append(f"On fail: {_ON_FAIL[policy.on_fail]}.")
    out.append(f"On inconclusive: {_ON_INCONCLUSIVE[policy.on_inconclusive]}.")
    out.append(f"On pass: {_ON_PASS[policy.on_pass]}.")
    for spec in policy.notify:  # who hears of it (the secrets' variables, never values)
        out.append(f"Notifies {spec.where} of {_list(list(spec.on), 'or')}.")
    return "\n".join(out)
