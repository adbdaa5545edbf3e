"""One rule's running state: the limits, the severity and the stickiness of decisions.

The kind modules say what one snapshot shows; this module is the only place
that applies the rule's judgement limits, in the manner of argo-rollouts'
analysis runs:

- ``consecutive_error_limit``: source errors in a row before the rule is
  ``error`` (a success in between resets the count);
- ``failure_limit`` (logs, metric): failing passes tolerated before the rule
  fails; probes use their success ratio instead;
- ``severity: warn`` turns a failure into ``warn``;
- a decided result never changes again.
"""

from __future__ import annotations

from deploy_guard.judge.assessment import Assessment, plural
from deploy_guard.judge.logs import assess_logs
from deploy_guard.judge.metric import assess_metric
from deploy_guard.judge.probe import assess_probe
from deploy_guard.judge.results import RuleResult, RuleStatus
from deploy_guard.measurements import (
    LogMeasurement,
    Measurement,
    MetricMeasurement,
    ProbeMeasurement,
)
from deploy_guard.policy.model import Rule

_EXPECTED = {
    "http": ProbeMeasurement,
    "websocket": ProbeMeasurement,
    "logs": LogMeasurement,
    "metric": MetricMeasurement,
}


class RuleState:
    """Everything the judge remembers about one rule between measurements."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.measured = False
        #: The source's last snapshot said complete (or the error limit ended it).
        self.complete = False
        self.errors_in_a_row = 0
        self.last_error = ""
        self.passes = 0
        self.failing_passes = 0
        self.last: Assessment | None = None
        self.latest: Measurement | None = None
        self.result = self._result(
            Assessment("pending", False, None, "", "", message="not measured yet")
        )

    # -- feeding -----------------------------------------------------------------------------
    def observe(self, m: Measurement) -> RuleResult:
        expected = _EXPECTED[self.rule.kind]
        if not isinstance(m, expected) or (
            isinstance(m, ProbeMeasurement) and m.kind != self.rule.kind
        ):
            raise ValueError(
                f"rule {self.rule.name} is a {self.rule.kind} rule; got a {type(m).__name__}"
            )
        self.measured = True
        self.complete = self.complete or m.complete
        if self.result.decided:
            return self.result
        if m.error is not None:
            over = _over_already(self.rule, m)
            if over is None:
                self.result = self._on_error(m.error, complete=m.complete)
                return self.result
            # Counts read before the source stopped already break a limit that more
            # entries could only break further: a failing pass, not missing data.
            self.errors_in_a_row = 0
            self.latest, self.last = m, over
            self.result = self._on_pass(over, complete=m.complete)
            return self.result
        self.errors_in_a_row = 0
        self.latest = m
        if isinstance(m, ProbeMeasurement):
            self.last = assess_probe(self.rule, m, final=False)
            self.result = self._result(self.last)
        else:
            if isinstance(m, LogMeasurement):
                self.last = assess_logs(self.rule, m)
            else:
                self.last = assess_metric(self.rule, m)
            self.result = self._on_pass(self.last, complete=m.complete)
        return self.result

    def final(self) -> RuleResult:
        """The result when no more evidence will come: nothing stays pending."""
        if self.result.decided:
            return self.result
        if not self.measured:
            return self._result(
                Assessment(
                    "no_data",
                    True,
                    None,
                    "",
                    "",
                    message=f"never measured: the check ended before the {self.rule.kind} "
                    "source reported anything (fail_fast, the timeout or a signal stopped it)",
                )
            )
        if self.last is None:
            return self._error(self.last_error)
        if isinstance(self.latest, ProbeMeasurement):
            # Re-judge the last snapshot knowing that no more attempts will finish.
            return self._result(assess_probe(self.rule, self.latest, final=True))
        return self._on_pass(self.last, complete=True, count=False)

    # -- limits ------------------------------------------------------------------------------
    def _on_error(self, error: str, *, complete: bool) -> RuleResult:
        self.errors_in_a_row += 1
        self.last_error = error
        limit = self.rule.consecutive_error_limit
        if self.errors_in_a_row >= limit or complete:
            return self._error(error)
        base = self.last or Assessment("pending", False, None, "", "")
        return self._result(
            Assessment(
                "pending",
                False,
                base.observed,
                base.threshold,
                base.counts,
                base.evidence,
                f"source error {self.errors_in_a_row} of {limit} allowed in a row: {error}",
            )
        )

    def _error(self, error: str) -> RuleResult:
        base = self.last or Assessment("pending", False, None, "", "")
        words = plural(self.errors_in_a_row, "error")
        limit = self.rule.consecutive_error_limit
        why = (
            f"{words} in a row reached consecutive_error_limit {limit}"
            if self.errors_in_a_row >= limit
            else f"{words} in a row and no pass after them; consecutive_error_limit {limit}"
        )
        return self._result(
            Assessment(
                "pending",
                True,
                base.observed,
                base.threshold,
                base.counts,
                base.evidence,
                f"{error} ({why})",
            ),
            status="error",
        )

    def _on_pass(self, a: Assessment, *, complete: bool, count: bool = True) -> RuleResult:
        """Logs and metric rules: each snapshot is one pass, judged against failure_limit."""
        limit = self.rule.failure_limit
        if count:
            self.passes += 1
            if a.outcome == "fail":
                self.failing_passes += 1
        counts = a.counts
        if self.failing_passes and limit:
            counts += (
                f"; {self.failing_passes} of {plural(self.passes, 'pass')} failed, "
                f"failure_limit {limit}"
            )
        if a.outcome == "fail" and self.failing_passes > limit:
            return self._result(_with(a, decided=True, counts=counts))
        if a.outcome == "fail" and complete:
            tolerated = f"{self.failing_passes} failing pass(es) tolerated (failure_limit {limit})"
            return self._result(
                _with(a, outcome="pass", decided=True, counts=counts, message=tolerated)
            )
        if complete:
            return self._result(_with(a, decided=True, counts=counts))
        return self._result(
            _with(a, outcome="pending", decided=False, counts=counts, message=a.message)
        )

    # -- shaping -----------------------------------------------------------------------------
    def _result(self, a: Assessment, status: RuleStatus | None = None) -> RuleResult:
        if status is None:
            status = a.outcome
            if status == "fail" and self.rule.severity == "warn":
                status = "warn"
        return RuleResult(
            rule=self.rule.name,
            kind=self.rule.kind,
            severity=self.rule.severity,
            dry_run=self.rule.dry_run,
            status=status,
            observed=a.observed,
            threshold=a.threshold,
            counts=a.counts,
            evidence=a.evidence,
            message=a.message,
            decided=a.decided,
        )


def _over_already(rule: Rule, m: Measurement) -> Assessment | None:
    """A logs snapshot with an error whose counts, a lower bound, already break a limit.

    A last pass cut short (Cloud Logging's search ran out of time, or more
    entries matched than a pass reads) or a failed read still carries the
    matches counted so far. ``max_count`` and ``max_rate`` can only be exceeded
    further by entries not read, so those counts are proof; a comparison with
    the baseline is not (its count is cut short too) and is left out here.
    """
    if not isinstance(m, LogMeasurement) or not m.total:
        return None
    from dataclasses import replace

    a = assess_logs(rule, replace(m, baseline_matches=None, error=None))
    if a.outcome != "fail":
        return None
    return _with(a, message=f"{a.message}, counting only what was read before: {m.error}")


def _with(a: Assessment, **changes: object) -> Assessment:
    from dataclasses import replace

    return replace(a, **changes)  # type: ignore[arg-type]
