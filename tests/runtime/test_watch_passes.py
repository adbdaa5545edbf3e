"""``failure_limit`` in a watch: failing passes counted over the window, one per pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deploy_guard.judge.combine import Judges
from deploy_guard.measurements import LogMeasurement, Measurement, MetricMeasurement
from deploy_guard.policy.load import parse_policy
from deploy_guard.policy.model import Policy
from deploy_guard.runtime.watch_passes import FailingPasses

POLICY = """
version: 1
name: tolerant
services: ["chat"]
rules:
  - name: errors
    kind: logs
    failure_limit: 1
    logs: {patterns: ['close code 1011'], max_count: 0}
  - name: error-rate
    kind: metric
    failure_limit: 1
    metric: {type: error_rate, window: 1m, min_requests: 5, max: 5%}
  - name: strict
    kind: logs
    logs: {patterns: ['Traceback'], max_count: 0}
"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def policy() -> Policy:
    return parse_policy(POLICY)


def status(measured: list[Measurement], rule: str) -> str:
    """What the watch's judge says of ``rule`` on one look (a fresh judge each time)."""
    judges = Judges([policy()])
    for m in measured:
        judges.observe(m)
    return next(r.status for r in judges.final().rules if r.rule == rule)


def lines(rule: str, count: int) -> LogMeasurement:
    return LogMeasurement(
        rule=rule,
        entries_scanned=count,
        matches={"close code 1011": count} if rule == "errors" else {"Traceback": count},
        window_seconds=300.0,
        complete=True,
    )


def read(at: float, rate: float) -> MetricMeasurement:
    end = T0 + timedelta(seconds=at)
    return MetricMeasurement(
        rule="error-rate",
        metric="error_rate",
        value=rate,
        requests=100,
        window_seconds=60.0,
        complete=True,
        start=end - timedelta(minutes=1),
        end=end,
    )


def test_a_metric_fails_on_its_second_failing_read_not_on_its_first_looked_at_twice() -> None:
    passes = FailingPasses(policy().rules, window=300, log_interval=10)
    first = read(0, 0.5)
    assert status(passes.feed([first], now=1), "error-rate") == "pass"  # tolerated
    assert status(passes.feed([first], now=2), "error-rate") == "pass"  # the same read again
    assert status(passes.feed([read(60, 0.5)], now=61), "error-rate") == "fail"


def test_a_logs_rule_counts_one_pass_per_log_interval() -> None:
    passes = FailingPasses(policy().rules, window=300, log_interval=10)
    assert status(passes.feed([lines("errors", 1)], now=0), "errors") == "pass"
    assert status(passes.feed([lines("errors", 1)], now=9), "errors") == "pass"
    assert status(passes.feed([lines("errors", 1)], now=10), "errors") == "fail"


def test_a_passing_pass_in_between_does_not_forget_the_failing_ones() -> None:
    passes = FailingPasses(policy().rules, window=300, log_interval=10)
    assert status(passes.feed([read(0, 0.5)], now=1), "error-rate") == "pass"
    assert status(passes.feed([read(60, 0.0)], now=61), "error-rate") == "pass"
    assert status(passes.feed([read(120, 0.5)], now=121), "error-rate") == "fail"


def test_failing_passes_older_than_the_window_are_forgotten() -> None:
    """Rare blips over a week never add up to a rollback."""
    passes = FailingPasses(policy().rules, window=300, log_interval=10)
    assert status(passes.feed([read(0, 0.5)], now=1), "error-rate") == "pass"
    assert status(passes.feed([read(600, 0.5)], now=601), "error-rate") == "pass"


def test_rules_without_a_limit_and_errors_pass_through() -> None:
    passes = FailingPasses(policy().rules, window=300, log_interval=10)
    strict = lines("strict", 1)
    broken = MetricMeasurement(rule="error-rate", metric="error_rate", value=None, error="down")
    assert passes.feed([strict, broken], now=0) == [strict, broken]
    assert status([strict], "strict") == "fail"
    passes.clear()
    assert status(passes.feed([read(0, 0.5)], now=1), "error-rate") == "pass"
