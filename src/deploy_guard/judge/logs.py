"""Judging ``logs`` rules: pattern matches in the candidate revision's entries.

Zero entries scanned is a valid measurement: the query worked and found
nothing to count, which is a pass. Only a source ``error`` is missing data.
Every limit written (``max_count``, ``max_rate``, ``relative_to_baseline``)
must hold; rates are per minute over the query window, counted over at least
one minute so that one match in a 5-second window is not "12 per minute".
"""

from __future__ import annotations

from deploy_guard.judge.assessment import Assessment, plural
from deploy_guard.measurements import LogMeasurement
from deploy_guard.policy.model import Rule
from deploy_guard.policy.units import format_measured

EVIDENCE = 3
_TEXT_LIMIT = 200


def _per_minute(count: int, seconds: float) -> float:
    return count / (max(seconds, 60.0) / 60.0)


def _counted(pattern: str, n: int) -> str:
    """What one count is of: a pattern's matches, or (``*``) the entries the rule selects."""
    if pattern == "*":  # a rule with no patterns counts the entries its filter selects
        return f"{plural(n, 'entry')} selected by the rule's filter"
    return f"{plural(n, 'entry')} matching {pattern!r}"


def _evidence(m: LogMeasurement) -> tuple[str, ...]:
    lines = [_counted(pattern, n) for pattern, n in sorted(m.matches.items()) if n]
    for sample in m.samples[:EVIDENCE]:
        text = str(sample.get("text", ""))[:_TEXT_LIMIT]
        stamp = sample.get("timestamp", "")
        severity = sample.get("severity", "")
        lines.append(" ".join(str(p) for p in (stamp, severity, text) if p))
    return tuple(lines)


def assess_logs(rule: Rule, m: LogMeasurement) -> Assessment:
    """Judge one pass of a logs rule (``decided`` is left to the caller's limits)."""
    spec = rule.logs
    assert spec is not None
    # Pattern matches, or the entries the rule's own filter selected when it has no
    # patterns (the source counts those under "*"). Never ``entries_scanned``: one
    # query serves every logs rule, so that counts entries only another rule wanted.
    count = m.total
    window = format_measured(m.window_seconds) if m.window_seconds else "the window"
    what = "matches" if spec.patterns else "entries"
    checks: list[tuple[bool, str]] = []  # (exceeded, threshold words)
    observed: float = float(count)
    notes: list[str] = []
    if spec.limit_count is not None:
        checks.append((count > spec.limit_count, f"{what} <= {spec.limit_count}"))
    if spec.max_rate is not None:
        rate = _per_minute(count, m.window_seconds)
        observed = rate
        checks.append((rate > spec.max_rate, f"{what}/min <= {spec.max_rate:g}"))
        notes.append(f"{rate:.2f}/min")
    if spec.relative_to_baseline is not None:
        if m.baseline_matches is None:
            notes.append("no baseline to compare with")
        else:
            base = sum(m.baseline_matches.values())
            base_rate = _per_minute(base, m.baseline_window_seconds or m.window_seconds)
            rate = _per_minute(count, m.window_seconds)
            allowed = base_rate * spec.relative_to_baseline
            checks.append(
                (rate > allowed, f"{what}/min <= {spec.relative_to_baseline:g} x baseline")
            )
            notes.append(f"{rate:.2f}/min vs baseline {base_rate:.2f}/min ({base} {what})")
    threshold = ", ".join(words for _, words in checks) or (
        f"{what}/min <= {spec.relative_to_baseline:g} x baseline"
    )
    limit = spec.limit_count if spec.limit_count is not None else "by rate"
    scanned = f" in {plural(m.entries_scanned, 'entry')}" if spec.patterns else ""
    counts = f"{count} {what}{scanned} over {window}; limit {limit}"
    if notes:
        counts += f" ({'; '.join(notes)})"
    if not checks:
        return Assessment(
            "no_data",
            m.complete,
            observed,
            threshold,
            counts,
            message="the rule compares with the baseline revision, and no baseline log "
            "entries were read (is there a previous revision serving traffic?)",
        )
    exceeded = [words for bad, words in checks if bad]
    if exceeded:
        return Assessment(
            "fail",
            m.complete,
            observed,
            threshold,
            counts,
            _evidence(m),
            f"log {what} over the limit ({'; '.join(exceeded)})",
        )
    return Assessment("pass", m.complete, observed, threshold, counts, _evidence(m))
