"""The pure decision core, branch by branch, with plain data."""

from __future__ import annotations

from typing import Any

import pytest

from deploy_guard.judge import Judge, evaluate
from deploy_guard.measurements import (
    Attempt,
    LogMeasurement,
    MetricMeasurement,
    ProbeMeasurement,
)
from deploy_guard.policy import (
    BaselineRelative,
    HttpSpec,
    LogsSpec,
    MetricSpec,
    Policy,
    Rule,
    WebSocketSpec,
)


def ws_rule(name: str = "ws", sessions: int = 1000, ratio: float = 1.0, **kw: Any) -> Rule:
    spec = WebSocketSpec(path="/ws", sessions=sessions, concurrency=1, success_ratio=ratio)
    return Rule(name=name, kind="websocket", websocket=spec, **kw)


def http_rule(name: str = "health", requests: int = 10, **kw: Any) -> Rule:
    return Rule(name=name, kind="http", http=HttpSpec(path="/health", requests=requests), **kw)


def logs_rule(name: str = "logs", **kw: Any) -> Rule:
    spec = {k: kw.pop(k) for k in ("max_count", "max_rate", "relative_to_baseline") if k in kw}
    patterns = kw.pop("patterns", ["close code 1011"])
    return Rule(name=name, kind="logs", logs=LogsSpec(patterns=patterns, **spec), **kw)


def metric_rule(name: str = "metric", **kw: Any) -> Rule:
    keys = ("type", "max", "min", "baseline", "min_requests", "percentile", "window")
    spec = {k: kw.pop(k) for k in keys if k in kw}
    spec.setdefault("type", "error_rate")
    return Rule(name=name, kind="metric", metric=MetricSpec(**spec), **kw)


def policy(*rules: Rule, **kw: Any) -> Policy:
    return Policy(name="p", services=["svc"], rules=list(rules), **kw)


def ws(
    done: int,
    failed: int = 0,
    *,
    planned: int = 1000,
    rule: str = "ws",
    causes: dict[str, int] | None = None,
    codes: dict[int, int] | None = None,
    complete: bool = False,
    error: str | None = None,
    **kw: Any,
) -> ProbeMeasurement:
    if causes is None and failed:
        causes = {"close_code": failed}
        codes = {1011: failed, 1000: done - failed}
    return ProbeMeasurement(
        rule=rule,
        kind="websocket",
        planned=planned,
        done=done,
        succeeded=done - failed,
        failures_by_cause=causes or {},
        close_codes=codes or {},
        complete=complete,
        error=error,
        **kw,
    )


def http(done: int, failed: int = 0, *, planned: int = 10, **kw: Any) -> ProbeMeasurement:
    causes = {"status": failed} if failed else {}
    return ProbeMeasurement(
        rule=kw.pop("rule", "health"),
        kind="http",
        planned=planned,
        done=done,
        succeeded=done - failed,
        failures_by_cause=causes,
        **kw,
    )


def logs(matches: int = 0, scanned: int = 100, **kw: Any) -> LogMeasurement:
    return LogMeasurement(
        rule=kw.pop("rule", "logs"),
        entries_scanned=scanned,
        matches=kw.pop("matches_by", {"close code 1011": matches}),
        window_seconds=kw.pop("window", 120.0),
        **kw,
    )


def metric(value: float | None, requests: int = 100, **kw: Any) -> MetricMeasurement:
    return MetricMeasurement(
        rule=kw.pop("rule", "metric"),
        metric=kw.pop("metric", "error_rate"),
        value=value,
        requests=requests,
        window_seconds=kw.pop("window", 300.0),
        **kw,
    )


# -- probes ------------------------------------------------------------------------------------


def test_100_percent_fails_on_the_first_failed_session_of_1000() -> None:
    judge = Judge(policy(ws_rule()))
    assert judge.observe(ws(2)).status == "pending"
    assert judge.early_verdict() is None
    result = judge.observe(ws(3, 1, first_failure_after=7.0))
    assert result.status == "fail"
    assert result.decided
    assert result.counts == "1 of 3 sessions closed with 1011; limit 0 (3 of 1000 run)"
    assert "first failure after 7s" in result.evidence
    verdict = judge.early_verdict()
    assert verdict is not None
    assert (verdict.status, verdict.action, verdict.deciding) == ("fail", "rollback", ("ws",))
    assert verdict.reasons == ("ws: 1 of 3 sessions closed with 1011; limit 0 (3 of 1000 run)",)


def test_95_percent_fails_only_once_more_than_5_percent_have_failed() -> None:
    judge = Judge(policy(ws_rule(ratio=0.95)))
    assert judge.observe(ws(100, 50)).status == "pending"
    assert judge.early_verdict() is None
    result = judge.observe(ws(101, 51))
    assert result.status == "fail"
    assert result.counts.endswith("; limit 50 (101 of 1000 run)")


def test_counts_name_the_dominant_cause_as_in_the_issue() -> None:
    result = Judge(policy(ws_rule(sessions=200))).observe(ws(200, 3, planned=200, complete=True))
    assert result.counts == "3 of 200 sessions closed with 1011; limit 0"
    assert result.observed == pytest.approx(197 / 200)
    assert result.threshold == "success ratio >= 100%"


def test_counts_with_several_causes_and_evidence_from_samples() -> None:
    samples = (
        Attempt(ok=False, cause="close_code", detail="close code 1011 after 7.0 s", session="s-1"),
        Attempt(ok=False, cause="missing_event", detail="no agent_completed", user="user-2"),
    )
    m = ws(
        10,
        5,
        planned=10,
        causes={"close_code": 3, "missing_event": 2},
        codes={1011: 2, 1006: 1, 1000: 7},
        samples=samples,
        complete=True,
    )
    result = Judge(policy(ws_rule(sessions=10))).observe(m)
    assert result.counts == (
        "5 of 10 sessions failed: 3 closed with 1011, 2 missed an expected event; limit 0"
    )
    assert result.evidence == ("s-1: close code 1011 after 7.0 s", "user-2: no agent_completed")


def test_http_counts_and_pass_with_enough_successes() -> None:
    judge = Judge(policy(http_rule()))
    result = judge.observe(http(10, 2, complete=True))
    assert result.counts == "2 of 10 requests answered an unexpected status; limit 0"
    assert result.status == "fail"
    judge = Judge(policy(http_rule(), on_pass="promote"))
    assert judge.observe(http(10, complete=True)).status == "pass"
    verdict = judge.early_verdict()
    assert verdict is not None
    assert (verdict.status, verdict.action, verdict.deciding) == ("pass", "promote", ("health",))


def test_a_pass_is_early_only_when_every_rule_is_complete() -> None:
    judge = Judge(policy(ws_rule(ratio=0.5, sessions=10), logs_rule()))
    # 5 of 10 succeeded: the rule cannot fail any more, but the probe is not complete.
    assert judge.observe(ws(5, planned=10)).status == "pass"
    assert judge.early_verdict() is None
    judge.observe(ws(10, planned=10, complete=True))
    assert judge.early_verdict() is None  # the logs rule has not finished
    judge.observe(logs(0, complete=False))
    assert judge.early_verdict() is None
    judge.observe(logs(0, complete=True))
    verdict = judge.early_verdict()
    assert verdict is not None
    assert verdict.status == "pass"


def test_probe_that_never_ran_an_attempt_has_no_data() -> None:
    result = Judge(policy(ws_rule())).observe(ws(0, complete=True))
    assert result.status == "no_data"
    assert (
        result.message
        == "no sessions finished: the probe stopped before any did; is /ws reachable?"
    )


def test_unfinished_probe_at_the_end_is_no_data_never_a_pass() -> None:
    judge = Judge(policy(ws_rule(sessions=100)))
    judge.observe(ws(10, planned=100))
    verdict = judge.verdict()
    [result] = verdict.rules
    assert result.status == "no_data"
    assert result.message == (
        "only 10 of 100 sessions finished before the check ended; 10 succeeded, 100 needed"
    )
    assert verdict.status == "inconclusive"
    assert verdict.action == "hold"


def test_decided_results_do_not_change() -> None:
    judge = Judge(policy(ws_rule()))
    judge.observe(ws(3, 1))
    assert judge.observe(ws(1000, 1, complete=True)).status == "fail"
    assert judge.results()[0].counts.startswith("1 of 3 sessions")


# -- missing data, errors, dry run, severity -------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "status", "action"),
    [
        ("fail", "fail", "rollback"),
        ("inconclusive", "inconclusive", "hold"),
        ("ignore", "pass", "none"),
    ],
)
def test_missing_data_modes(missing: str, status: str, action: str) -> None:
    judge = Judge(policy(http_rule(), ws_rule(missing_data=missing)))
    judge.observe(http(10, complete=True))
    result = judge.observe(ws(0, error="cannot resolve host", complete=True))
    assert result.status == "error"
    assert "cannot resolve host" in result.message
    verdict = judge.verdict()
    assert (verdict.status, verdict.action) == (status, action)
    if missing == "ignore":
        assert verdict.deciding == ("health",)
        assert "ws: skipped, error (missing_data: ignore)" in verdict.reasons
    else:
        assert verdict.deciding == ("ws",)


def test_a_failure_gives_its_deciding_rules_as_reasons_not_the_ignored_ones() -> None:
    judge = Judge(policy(http_rule(), ws_rule(missing_data="ignore")))
    judge.observe(http(10, 10, complete=True))
    judge.observe(ws(0, error="cannot resolve host", complete=True))
    verdict = judge.verdict()
    assert verdict.status == "fail"
    assert verdict.deciding == ("health",)
    assert len(verdict.reasons) == 1
    assert verdict.reasons[0].startswith("health: ")


def test_missing_data_fail_decides_early_with_fail_fast() -> None:
    judge = Judge(policy(ws_rule(missing_data="fail"), http_rule()))
    judge.observe(ws(0, error="no token", complete=True))
    verdict = judge.early_verdict()
    assert verdict is not None
    assert verdict.status == "fail"


def test_never_measured_rules_count_as_no_data() -> None:
    judge = Judge(policy(http_rule(), logs_rule()))
    judge.observe(http(10, complete=True))
    verdict = judge.verdict()
    assert verdict.status == "inconclusive"
    logs_result = verdict.rules[1]
    assert logs_result.status == "no_data"
    assert "the check ended before the logs source reported" in logs_result.message


def test_dry_run_rules_never_decide() -> None:
    judge = Judge(policy(http_rule(), ws_rule(dry_run=True)))
    judge.observe(ws(3, 1))
    assert judge.early_verdict() is None  # a dry-run failure stops nothing
    judge.observe(http(10, complete=True))
    verdict = judge.early_verdict()
    assert verdict is not None
    assert verdict.status == "pass"
    assert verdict.deciding == ("health",)
    assert verdict.reasons[-1].startswith("(dry run) ws: 1 of 3 sessions closed with 1011")
    assert verdict.reasons[-1].endswith("(would fail)")


def test_warn_severity_only_warns() -> None:
    judge = Judge(policy(http_rule(), ws_rule(severity="warn"), on_pass="promote"))
    judge.observe(http(10, complete=True))
    result = judge.observe(ws(3, 1))
    assert result.status == "warn"
    assert judge.early_verdict() is None  # not a fail: the probe still has to finish
    verdict = judge.verdict()
    assert (verdict.status, verdict.action, verdict.deciding) == ("warn", "promote", ("ws",))


def test_warn_severity_missing_data_fail_only_warns() -> None:
    judge = Judge(policy(http_rule(), ws_rule(severity="warn", missing_data="fail")))
    judge.observe(http(10, complete=True))
    judge.observe(ws(0, error="boom", complete=True))
    assert judge.verdict().status == "warn"


@pytest.mark.parametrize(
    ("setting", "status", "action"),
    [
        ("hold", "inconclusive", "hold"),
        ("rollback", "inconclusive", "rollback"),
        ("pass", "pass", "promote"),
    ],
)
def test_on_inconclusive(setting: str, status: str, action: str) -> None:
    verdict = evaluate(
        policy(ws_rule(), on_inconclusive=setting, on_pass="promote"),
        [ws(0, error="unreachable", complete=True)],
    )
    assert (verdict.status, verdict.action) == (status, action)
    if setting == "pass":
        assert "inconclusive evidence treated as pass (on_inconclusive: pass)" in verdict.reasons


def test_on_fail_none_still_fails() -> None:
    verdict = evaluate(policy(ws_rule(), on_fail="none"), [ws(3, 1)])
    assert (verdict.status, verdict.action) == ("fail", "none")


def test_without_fail_fast_nothing_is_early_until_all_complete() -> None:
    judge = Judge(policy(ws_rule(), http_rule(), fail_fast=False))
    judge.observe(ws(3, 1))
    assert judge.early_verdict() is None
    judge.observe(http(10, complete=True))
    assert judge.early_verdict() is None  # the failed probe has not reported complete yet
    judge.observe(ws(3, 1, complete=True))
    verdict = judge.early_verdict()
    assert verdict is not None
    assert verdict.status == "fail"


def test_unknown_rule_and_wrong_kind_are_programming_errors() -> None:
    judge = Judge(policy(ws_rule()))
    with pytest.raises(KeyError, match="no rule named 'nope'"):
        judge.observe(ws(1, rule="nope"))
    with pytest.raises(ValueError, match="is a websocket rule; got a LogMeasurement"):
        judge.observe(logs(rule="ws"))
    with pytest.raises(ValueError, match="is a websocket rule"):
        judge.observe(http(1, rule="ws"))


# -- logs ---------------------------------------------------------------------------------------


def test_logs_zero_entries_scanned_is_a_pass() -> None:
    result = Judge(policy(logs_rule())).observe(logs(0, scanned=0, complete=True))
    assert result.status == "pass"
    assert result.observed == 0
    assert result.counts == "0 matches in 0 entries over 2m; limit 0"


def test_logs_over_the_limit_fail_with_evidence() -> None:
    sample = {"timestamp": "2026-01-01T00:00:07Z", "severity": "ERROR", "text": "close code 1011"}
    result = Judge(policy(logs_rule())).observe(logs(2, scanned=40, samples=(sample,)))
    assert result.status == "fail"
    assert result.decided  # failure_limit 0: the first failing pass decides
    assert result.counts.startswith("2 matches in 40 entries over 2m; limit 0")
    assert result.evidence == (
        "2 entries matching 'close code 1011'",
        "2026-01-01T00:00:07Z ERROR close code 1011",
    )
    assert result.message == "log matches over the limit (matches <= 0)"


def test_a_pattern_less_logs_rule_says_what_its_count_is_of() -> None:
    rule = Rule(name="logs", kind="logs", logs=LogsSpec(filter="severity>=ERROR", max_count=0))
    result = Judge(policy(rule)).observe(logs(scanned=3, matches_by={"*": 3}))
    assert result.status == "fail"
    assert result.evidence[0] == "3 entries selected by the rule's filter"


def test_logs_failure_limit_tolerates_failing_passes() -> None:
    judge = Judge(policy(logs_rule(failure_limit=1)))
    first = judge.observe(logs(1))
    assert first.status == "pending"
    assert first.counts.endswith("; 1 of 1 pass failed, failure_limit 1")
    second = judge.observe(logs(1))
    assert second.status == "fail"
    assert second.counts.endswith("; 2 of 2 passes failed, failure_limit 1")


def test_logs_tolerated_failure_on_the_last_pass_passes() -> None:
    judge = Judge(policy(logs_rule(failure_limit=1)))
    judge.observe(logs(0))
    result = judge.observe(logs(1, complete=True))
    assert result.status == "pass"
    assert result.message == "1 failing pass(es) tolerated (failure_limit 1)"


def test_logs_consecutive_errors_make_an_error_after_the_limit() -> None:
    judge = Judge(policy(logs_rule(consecutive_error_limit=3)))
    assert judge.observe(logs(error="UNAVAILABLE")).status == "pending"
    assert judge.observe(logs(0)).status == "pending"  # a success resets the count
    assert judge.observe(logs(error="UNAVAILABLE")).status == "pending"
    second = judge.observe(logs(error="UNAVAILABLE"))
    assert second.message == "source error 2 of 3 allowed in a row: UNAVAILABLE"
    third = judge.observe(logs(error="UNAVAILABLE"))
    assert third.status == "error"
    assert third.decided
    assert third.message == "UNAVAILABLE (3 errors in a row reached consecutive_error_limit 3)"


def test_logs_errors_cut_short_by_the_end_do_not_claim_the_limit() -> None:
    judge = Judge(policy(logs_rule(consecutive_error_limit=3)))
    judge.observe(logs(error="UNAVAILABLE"))
    last = judge.observe(logs(error="UNAVAILABLE", complete=True))
    assert last.status == "error"
    assert last.message == (
        "UNAVAILABLE (2 errors in a row and no pass after them; consecutive_error_limit 3)"
    )


def test_logs_error_before_the_limit_then_the_end_uses_the_last_good_pass() -> None:
    judge = Judge(policy(logs_rule()))
    judge.observe(logs(0))
    judge.observe(logs(error="DEADLINE_EXCEEDED"))
    assert judge.verdict().status == "pass"


def test_logs_error_with_no_good_pass_is_an_error_at_the_end() -> None:
    judge = Judge(policy(logs_rule()))
    judge.observe(logs(error="PERMISSION_DENIED: roles/logging.viewer"))
    [result] = judge.verdict().rules
    assert result.status == "error"
    assert "roles/logging.viewer" in result.message


def test_logs_max_rate_per_minute() -> None:
    rule = logs_rule(max_rate=1.0)
    assert Judge(policy(rule)).observe(logs(2, window=120.0, complete=True)).status == "pass"
    result = Judge(policy(rule)).observe(logs(3, window=120.0, complete=True))
    assert result.status == "fail"
    assert result.observed == pytest.approx(1.5)
    # A short window counts as one minute: 1 match in 5 s is not 12 per minute.
    assert Judge(policy(rule)).observe(logs(1, window=5.0, complete=True)).status == "pass"


def test_logs_relative_to_baseline() -> None:
    rule = logs_rule(relative_to_baseline=2.0)
    base = {"baseline_matches": {"close code 1011": 2}, "baseline_window_seconds": 120.0}
    ok = Judge(policy(rule)).observe(logs(4, complete=True, **base))
    assert ok.status == "pass"
    assert "(2.00/min vs baseline 1.00/min (2 matches))" in ok.counts
    bad = Judge(policy(rule)).observe(logs(5, complete=True, **base))
    assert bad.status == "fail"
    missing = Judge(policy(rule)).observe(logs(5, complete=True))
    assert missing.status == "no_data"
    assert "no baseline log entries were read" in missing.message


def test_logs_without_patterns_count_the_entries_their_own_filter_selected() -> None:
    rule = logs_rule(patterns=[], max_count=5)
    own = logs(scanned=6, matches_by={"*": 6}, complete=True)
    assert Judge(policy(rule)).observe(own).status == "fail"
    # six entries read, all brought in by another rule's filter: none is this rule's
    others = logs(scanned=6, matches_by={"*": 0}, complete=True)
    assert Judge(policy(rule)).observe(others).status == "pass"


# -- metrics ------------------------------------------------------------------------------------


def test_metric_below_min_requests_has_no_data_naming_the_revision() -> None:
    judge = Judge(policy(metric_rule(max=0.01, min_requests=20)))
    result = judge.observe(metric(0.0, requests=3, revision="chat-00002-abc", complete=True))
    assert result.status == "no_data"
    assert result.message == (
        "only 3 requests reached revision chat-00002-abc in 5m; min_requests is 20; "
        "is it receiving traffic?"
    )
    assert judge.verdict().status == "inconclusive"


def test_metric_no_data_in_a_window_shorter_than_monitorings_lag_names_the_lag() -> None:
    judge = Judge(policy(metric_rule(max=0.01, min_requests=20)))
    result = judge.observe(metric(None, requests=0, window=45.0, complete=True))
    assert result.status == "no_data"
    assert result.message.endswith(
        "is it receiving traffic? (Cloud Monitoring shows a request up to 3 minutes after it "
        "ends; 45s is too short to count on it)"
    )


def test_metric_value_none_is_no_data_and_pending_until_complete() -> None:
    judge = Judge(policy(metric_rule(max=0.01)))
    assert judge.observe(metric(None)).status == "pending"
    assert judge.observe(metric(None, complete=True)).status == "no_data"


def test_metric_error_rate_over_max_fails() -> None:
    result = Judge(policy(metric_rule(max=0.01))).observe(metric(0.05, complete=True))
    assert result.status == "fail"
    assert result.threshold == "error rate <= 1%"
    assert result.message == "5% is over 1%"
    assert result.counts == "error rate 5% over 100 requests in 5m"
    assert Judge(policy(metric_rule(max=0.01))).observe(metric(0.01, complete=True)).status == (
        "pass"
    )


def test_metric_latency_relative_to_baseline() -> None:
    rule = metric_rule(type="latency", baseline=BaselineRelative(factor=1.2, plus=0.05))
    kw = {"metric": "latency", "baseline_requests": 100, "complete": True}
    ok = Judge(policy(rule)).observe(metric(0.29, baseline_value=0.2, **kw))
    assert ok.status == "pass"
    assert ok.threshold == "p99 latency <= baseline x 1.2 + 50ms"
    bad = Judge(policy(rule)).observe(metric(0.3, baseline_value=0.2, **kw))
    assert bad.status == "fail"
    assert bad.message == "300ms is over baseline's limit 290ms"


def test_metric_baseline_without_traffic_is_no_data() -> None:
    rule = metric_rule(type="latency", baseline=BaselineRelative(factor=1.2))
    result = Judge(policy(rule)).observe(
        metric(0.3, metric="latency", baseline_value=0.1, baseline_requests=2, complete=True)
    )
    assert result.status == "no_data"
    assert "the baseline revision had 2 requests" in result.message


def test_metric_baseline_without_traffic_falls_back_to_absolute_max() -> None:
    rule = metric_rule(type="latency", max=1.0, baseline=BaselineRelative(factor=1.2))
    result = Judge(policy(rule)).observe(metric(0.3, metric="latency", complete=True))
    assert result.status == "pass"
    assert result.counts.endswith("; baseline: too few requests, not compared")


def test_metric_request_count_floor() -> None:
    rule = metric_rule(type="request_count", min=50, min_requests=0)
    result = Judge(policy(rule)).observe(metric(10, requests=10, complete=True))
    assert result.status == "fail"
    assert result.message == "10 is under 50"


def test_metric_failure_limit_and_warn() -> None:
    judge = Judge(policy(metric_rule(max=0.01, failure_limit=1, severity="warn")))
    assert judge.observe(metric(0.5)).status == "pending"
    assert judge.observe(metric(0.5)).status == "warn"


def test_counts_wording_edge_cases() -> None:
    codes = {"fail": [1011, 1012], "clean": [1000]}
    spec = WebSocketSpec(sessions=10, close_codes=codes)
    judge = Judge(policy(Rule(name="ws", kind="websocket", websocket=spec)))
    two_codes = judge.observe(
        ws(10, 4, planned=10, causes={"close_code": 4}, codes={1011: 3, 1012: 1}, complete=True)
    )
    assert two_codes.counts == "4 of 10 sessions closed with 1011 (3), 1012 (1); limit 0"
    rule = Rule(
        name="ws",
        kind="websocket",
        websocket=WebSocketSpec(sessions=10, close_codes={"fail": [1012], "clean": [1000]}),
    )
    no_code = Judge(policy(rule)).observe(
        ws(10, 1, planned=10, causes={"close_code": 1}, codes={}, complete=True)
    )
    assert no_code.counts == "1 of 10 sessions closed with a failing close code; limit 0"
    no_cause = Judge(policy(ws_rule(sessions=10))).observe(
        ws(10, 2, planned=10, causes={}, codes={}, complete=True)
    )
    assert no_cause.counts == "2 of 10 sessions failed; limit 0"

    # the verb agrees with the count: "1 ... was too slow", "3 ... were too slow"
    def failed_http(causes: dict[str, int]) -> ProbeMeasurement:
        done = sum(causes.values())
        return ProbeMeasurement(
            rule="health", kind="http", planned=10, done=done, succeeded=0, failures_by_cause=causes
        )

    one = Judge(policy(http_rule())).observe(failed_http({"latency": 1}))
    assert one.counts == "1 of 1 request was too slow; limit 0 (1 of 10 run)"
    mixed = Judge(policy(http_rule())).observe(failed_http({"latency": 3, "handshake_rejected": 1}))
    assert mixed.counts == (
        "4 of 4 requests failed: 3 were too slow, 1 was refused at the handshake; limit 0 "
        "(4 of 10 run)"
    )


def test_metric_and_logs_reasons_quote_message_and_counts() -> None:
    verdict = evaluate(policy(metric_rule(max=0.01)), [metric(0.05, complete=True)])
    assert verdict.reasons == ("metric: 5% is over 1% (error rate 5% over 100 requests in 5m)",)


def test_the_core_imports_nothing_that_does_io() -> None:
    """Purity by construction: every judge module imports only pure modules.

    A client, a clock, a socket or a logger creeping into the core would make
    verdicts depend on the world; this reads the imports, so it fails at once.
    """
    import deploy_guard.judge as judge_pkg
    from purity import assert_imports_only

    seen = assert_imports_only(
        judge_pkg.__file__,
        {"__future__", "math", "dataclasses", "typing", "collections.abc", "enum"},
        (
            "deploy_guard.judge",
            "deploy_guard.measurements",
            "deploy_guard.policy.model",
            "deploy_guard.policy.units",
        ),
        min_files=5,
        what="the judge",
    )
    assert "deploy_guard.measurements" in seen  # the walk really read the imports


def test_measured_durations_and_values_are_rounded_for_reading() -> None:
    """A clock reading is noise past its third digit: "16.7s", never "16.6564s"."""
    latency = metric_rule(type="latency", max=1.0, min_requests=5)
    slow = Judge(policy(latency)).observe(
        metric(1.39799, metric="latency", requests=10, window=1.6869, complete=True)
    )
    assert slow.counts == "p99 latency 1.4s over 10 requests in 1.69s"
    assert slow.message == "1.4s is over 1s"
    few = Judge(policy(metric_rule(max=0.01))).observe(metric(0.0, requests=10, window=7.45896))
    assert few.counts == "10 requests in 7.46s; min_requests 20"
    rate = Judge(policy(metric_rule(max=0.5))).observe(metric(1 / 3, complete=True))
    assert rate.counts == "error rate 33.3% over 100 requests in 5m"
    log_pass = Judge(policy(logs_rule())).observe(logs(0, scanned=0, window=16.6564))
    assert log_pass.counts == "0 matches in 0 entries over 16.7s; limit 0"
    held = Judge(policy(ws_rule(sessions=5))).observe(
        ws(1, 1, planned=5, first_failure_after=7.0512)
    )
    assert held.message.endswith("(first after 7.05s)")
    assert "first failure after 7.05s" in held.evidence


def test_rounding_never_hides_a_breach() -> None:
    """Just over the limit still reads as over it, with the digits that show it."""
    latency = metric_rule(type="latency", max=1.0)
    result = Judge(policy(latency)).observe(metric(1.0004, metric="latency", complete=True))
    assert result.status == "fail"
    assert result.message == "1.0004s is over 1s"
    rate = Judge(policy(metric_rule(max=0.01))).observe(metric(0.0100004, complete=True))
    assert rate.message == "1.00004% is over 1%"


@pytest.mark.fault("probes", "verdict on close codes in neither list", "fail naming the code")
def test_a_close_code_in_neither_list_is_named_in_the_counts() -> None:
    m = ws(
        10,
        2,
        planned=10,
        causes={"close_code": 2},
        codes={1000: 8, 4001: 2},
        complete=True,
    )
    result = Judge(policy(ws_rule(sessions=10))).observe(m)
    assert result.status == "fail"
    assert result.counts == "2 of 10 sessions closed with 4001; limit 0"


def test_websocket_protocol_failures_are_worded_for_websocket_and_http() -> None:
    m = ws(
        10,
        3,
        planned=10,
        causes={"too_large": 2, "protocol_error": 1},
        codes={1000: 7, 1009: 2, 1002: 1},
        complete=True,
    )
    result = Judge(policy(ws_rule(sessions=10))).observe(m)
    assert result.counts == (
        "3 of 10 sessions failed: 2 sent a message over the probe's size limit (1009), "
        "1 broke the WebSocket protocol (1002, 1007); limit 0"
    )
    big = ProbeMeasurement(
        rule="health",
        kind="http",
        planned=10,
        done=1,
        succeeded=0,
        failures_by_cause={"too_large": 1},
    )
    words = Judge(policy(http_rule())).observe(big).counts
    assert words == (
        "1 of 1 request answered more than the probe reads (body or headers); limit 0 (1 of 10 run)"
    )
