"""Judging ``http`` and ``websocket`` rules from a probe's cumulative snapshot.

A probe plans P attempts and needs ``ceil(success_ratio * P)`` of them to
succeed, so it may lose at most ``P - needed`` ("the limit"). The rule fails
the moment more than that have failed, even with attempts still to run:
with 100 % a single 1011 in session 3 of 1,000 decides; with 95 % only the
51st failure does. It passes, decided, once enough attempts have succeeded
that the rest cannot matter.
"""

from __future__ import annotations

import math
from dataclasses import replace

from deploy_guard.judge.assessment import Assessment, plural
from deploy_guard.measurements import ProbeMeasurement
from deploy_guard.policy.model import HttpSpec, Rule, WebSocketSpec
from deploy_guard.policy.units import format_measured, format_ratio

#: How many failed attempts a result quotes as evidence.
EVIDENCE = 3
_RATIO_EPSILON = 1e-9
_CAUSE_WORDS = {
    "handshake_rejected": "were refused at the handshake",
    "connect_error": "could not connect",
    "timeout": "timed out",
    "wrong_order": "saw events out of order",
    "missing_event": "missed an expected event",
    "unexpected_event": "saw an unexpected event",
    "isolation_breach": "saw another user's events",
    "connection_reset": "dropped without a close frame (1006)",
    "status": "answered an unexpected status",
    "body": "answered an unexpected body",
    "latency": "were too slow",
    "too_large": "answered more than the probe reads (body or headers)",
    "protocol_error": "broke HTTP",
    "error": "failed",
}


def needed_successes(planned: int, ratio: float) -> int:
    """Successes needed out of ``planned`` for ``ratio`` (rounded up, float-safe)."""
    return min(planned, max(0, math.ceil(ratio * planned - _RATIO_EPSILON)))


#: What a WebSocket session's failure means where the HTTP words do not fit.
_WEBSOCKET_WORDS = {
    "too_large": "sent a message over the probe's size limit (1009)",
    "protocol_error": "broke the WebSocket protocol (1002, 1007)",
}


def _close_words(m: ProbeMeasurement, spec: WebSocketSpec) -> str:
    """The failing close codes seen: those in ``fail`` and those in neither list."""
    fail, clean = spec.close_codes.fail, spec.close_codes.clean
    codes = sorted(
        (code for code in m.close_codes if code != 1006 and (code in fail or code not in clean)),
        key=lambda code: (-m.close_codes[code], code),
    )
    if not codes:
        return "closed with a failing close code"
    if len(codes) == 1:
        return f"closed with {codes[0]}"
    return "closed with " + ", ".join(f"{c} ({m.close_codes[c]})" for c in codes)


def _cause_words(
    cause: str, m: ProbeMeasurement, spec: HttpSpec | WebSocketSpec, count: int
) -> str:
    if cause == "close_code" and isinstance(spec, WebSocketSpec):
        return _close_words(m, spec)
    words = _CAUSE_WORDS.get(cause, f"failed ({cause})")
    if isinstance(spec, WebSocketSpec):
        words = _WEBSOCKET_WORDS.get(cause, words)
    # "1 of 10 requests was too slow", "3 of 10 requests were too slow"
    return "was" + words[len("were") :] if count == 1 and words.startswith("were ") else words


def counts_text(m: ProbeMeasurement, spec: HttpSpec | WebSocketSpec, limit: int) -> str:
    """``3 of 200 sessions closed with 1011; limit 0``, naming the dominant causes."""
    unit = "session" if isinstance(spec, WebSocketSpec) else "request"
    failed = m.failed
    causes = sorted(
        ((n, cause) for cause, n in m.failures_by_cause.items() if n > 0),
        key=lambda item: (-item[0], item[1]),
    )
    head = f"{failed} of {plural(m.done, unit)}"
    if failed == 0:
        text = f"{head} failed"
    elif len(causes) == 1:
        text = f"{head} {_cause_words(causes[0][1], m, spec, failed)}"
    elif causes:
        parts = ", ".join(f"{n} {_cause_words(cause, m, spec, n)}" for n, cause in causes[:3])
        text = f"{head} failed: {parts}"
    else:
        text = f"{head} failed"
    text += f"; limit {limit}"
    if m.done < m.planned:
        text += f" ({m.done} of {m.planned} run)"
    return text


def evidence(m: ProbeMeasurement) -> tuple[str, ...]:
    """A few failed attempts in words, and when the first failure came."""
    lines: list[str] = []
    for attempt in m.samples[:EVIDENCE]:
        who = attempt.session or attempt.user or "attempt"
        lines.append(f"{who}: {attempt.detail or attempt.cause or 'failed'}")
    if m.first_failure_after is not None:
        lines.append(f"first failure after {format_measured(m.first_failure_after)}")
    return tuple(lines)


def assess_probe(rule: Rule, m: ProbeMeasurement, *, final: bool) -> Assessment:
    """Judge a probe snapshot; ``final`` means no later snapshot will come."""
    spec = rule.spec
    assert isinstance(spec, HttpSpec | WebSocketSpec)
    unit = "session" if isinstance(spec, WebSocketSpec) else "request"
    planned = max(m.planned, m.done)
    needed = needed_successes(planned, spec.success_ratio)
    limit = planned - needed
    observed = m.succeeded / m.done if m.done else None
    threshold = f"success ratio >= {format_ratio(spec.success_ratio)}"
    counts = counts_text(m, spec, limit)
    base = Assessment("pending", False, observed, threshold, counts)
    if m.failed > limit:
        return replace(
            base, outcome="fail", decided=True, evidence=evidence(m), message=_fail_message(m, spec)
        )
    if m.succeeded >= needed and m.done > 0:
        return replace(base, outcome="pass", decided=True)
    if not (m.complete or final):
        return replace(base, message=f"{m.done} of {plural(planned, unit)} run")
    ended = "the probe stopped" if m.complete else "the check ended"
    if m.done == 0:
        hint = f"; is {spec.path} reachable?" if m.complete else ""
        message = f"no {unit}s finished: {ended} before any did{hint}"
        return replace(base, outcome="no_data", decided=True, message=message)
    return replace(
        base,
        outcome="no_data",
        decided=True,
        evidence=evidence(m),
        message=f"only {m.done} of {plural(planned, unit)} finished before {ended}; "
        f"{m.succeeded} succeeded, {needed} needed",
    )


def _fail_message(m: ProbeMeasurement, spec: HttpSpec | WebSocketSpec) -> str:
    unit = "session" if isinstance(spec, WebSocketSpec) else "request"
    ratio = format_ratio(spec.success_ratio)
    when = (
        f" (first after {format_measured(m.first_failure_after)})"
        if m.first_failure_after is not None
        else ""
    )
    return f"too many failed {unit}s for a {ratio} success ratio{when}"
