"""Reports as plain data, the way the driver fills them, with every clock fixed.

Timeline events are built with fixed UTC times and offsets (``Timeline.add``
stamps the wall clock), so a report renders to the same bytes on every run:
the check's renderings are kept in ``golden/`` and compared byte for byte.
"""

from __future__ import annotations

from typing import Any

from deploy_guard.report.model import CheckReport, StepRecord, Timeline, TimelineEvent

SECRET = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.sig"
BASE, CANDIDATE = "chat-00001-aaa", "chat-00002-bbb"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def at(seconds: float) -> str:
    """An ISO 8601 UTC time ``seconds`` after 20:00:00 (seconds < 3600)."""
    minutes, rest = divmod(seconds, 60)
    return f"2026-12-04T20:{int(minutes):02d}:{rest:06.3f}+00:00"


def timeline(clock: Clock, events: list[tuple[float, str, dict[str, Any]]]) -> Timeline:
    line = Timeline(clock)
    line.events = [TimelineEvent(name, at(t), t, detail) for t, name, detail in events]
    return line


def rule(
    name: str,
    kind: str,
    status: str,
    observed: float | None,
    threshold: str,
    counts: str,
    message: str = "",
    evidence: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A judge ``RuleResult`` as ``rule_dict`` stores it."""
    return {
        "rule": name,
        "kind": kind,
        "status": status,
        "observed": observed,
        "threshold": threshold,
        "counts": counts,
        "evidence": list(evidence),
        "message": message,
    }


def check_report() -> CheckReport:
    """A failed check that rolled back: rules of every kind, notes, evidence, API calls."""
    clock = Clock()
    report = CheckReport(
        revision=CANDIDATE,
        project="p",
        region="r",
        service="chat",
        policies=["chat-agent", "errors"],
        timeline=timeline(
            clock,
            [
                (0.0, "check_started", {"service": "chat"}),
                (1.25, "evidence_started", {"rules": ["ws", "http", "errors", "p99"]}),
                (7.2, "first_failure_seen", {"rule": "ws", "token": SECRET}),
                (7.5, "rollback_verified", {"traffic": f"{BASE} 100%"}),
                (7.6, "check_finished", {"verdict": "fail", "exit_code": 1}),
            ],
        ),
        started_at="2026-12-04T20:00:00+00:00",
        finished_at="2026-12-04T20:00:08+00:00",
    )
    clock.now += 7.6
    report.rules = [
        rule(
            "ws",
            "websocket",
            "fail",
            0.8,
            "1011 closes <= 0",
            "1 of 5 sessions closed with 1011, limit 0",
            f"Authorization: Bearer {SECRET}",
            (f"GET /ws?access_token={SECRET}", "close 1011 after 7.1 s"),
        ),
        rule("http", "http", "pass", 1.0, "success ratio >= 95%", "20 of 20 ok", "ok"),
        rule("errors", "logs", "pass", 0.5, "matches/min <= 2", "1 match in 2m", "ok"),
        rule("p99", "metric", "no_data", None, "p99 latency <= 1s", "0 requests", "no requests"),
    ]
    report.verdict, report.action, report.exit_code = "fail", "rolled_back", 1
    report.message = "fail: ws: 1 of 5 sessions closed with 1011, limit 0 | traffic rolled back"
    report.reasons = ["ws: 1 of 5 sessions closed with 1011, limit 0"]
    report.deciding = ["ws"]
    report.traffic_before = {BASE: 90, CANDIDATE: 10}
    report.traffic_after = {BASE: 100}
    report.baseline = [BASE]
    report.target_url = "https://dg-1---chat-xyz.a.run.app"
    report.temporary_tag = "dg-1"
    report.notes = [f"rollback target {BASE}: the last known good revision"]
    report.api_calls = {"logging": {"ListLogEntries": 2}, "run": {"GetService": 4}}
    report.evidence_passes = {"logs": 2, "metrics": 1}
    return report


def rollout_report() -> CheckReport:
    """A rollout of four stages stopped at its second traffic step and put back.

    tag (probes through the tag URL) passed, 10 % for 2m passed, 50 % for 5m
    failed after 41 s (fail_fast on the error rate) with a secret echoed in a
    reason, promotion never reached.
    """
    clock = Clock()
    before = {BASE: 100}
    report = CheckReport(
        revision=CANDIDATE,
        project="p",
        region="r",
        service="chat",
        policies=["chat-agent"],
        command="rollout",
        timeline=timeline(
            clock,
            [
                (0.0, "rollout_started", {"steps": "10:2m,50:5m"}),
                (9.0, "traffic_verified", {"step": 1, "traffic": f"{CANDIDATE} 10%"}),
                (130.0, "traffic_verified", {"step": 2, "traffic": f"{CANDIDATE} 50%"}),
                (171.0, "first_failure_seen", {"rule": "error-rate"}),
                (171.6, "rollback_verified", {"traffic": f"{BASE} 100%"}),
            ],
        ),
        started_at="2026-12-04T20:00:00+00:00",
        finished_at="2026-12-04T20:02:52+00:00",
    )
    clock.now += 171.6
    probes = [
        rule("ws", "websocket", "pass", 1.0, "1011 closes <= 0", "5 of 5 sessions ok", "ok"),
        rule("http", "http", "pass", 1.0, "success ratio >= 95%", "20 of 20 ok", "ok"),
    ]
    error_rate_ok = rule(
        "error-rate", "metric", "pass", 0.002, "error rate <= 1%", "1 of 500 requests failed"
    )
    error_rate_bad = rule(
        "error-rate",
        "metric",
        "fail",
        0.041,
        "error rate <= 1%",
        "41 of 1000 requests failed",
        "4.1% of requests to chat-00002-bbb failed, limit 1%",
        ("POST /tool 500 x 38", f"GET /session?access_token={SECRET} 500"),
    )
    report.steps = [
        StepRecord(
            index=0,
            phase="tag",
            percent=0,
            status="pass",
            started_at="2026-12-04T20:00:00.000+00:00",
            finished_at="2026-12-04T20:00:08.200+00:00",
            rules=probes,
        ),
        StepRecord(
            index=1,
            phase="step",
            percent=10,
            duration_s=120.0,
            status="pass",
            traffic_written={BASE: 90, CANDIDATE: 10},
            traffic_verified={BASE: 90, CANDIDATE: 10},
            started_at="2026-12-04T20:00:09.000+00:00",
            finished_at="2026-12-04T20:02:09.400+00:00",
            rules=[probes[0], error_rate_ok],
        ),
        StepRecord(
            index=2,
            phase="step",
            percent=50,
            duration_s=300.0,
            status="fail",
            traffic_written={BASE: 50, CANDIDATE: 50},
            traffic_verified={BASE: 50, CANDIDATE: 50},
            started_at="2026-12-04T20:02:10.000+00:00",
            finished_at="2026-12-04T20:02:51.000+00:00",
            reasons=[
                "error-rate: 41 of 1000 requests failed, limit 1%",
                f"the app answered Authorization: Bearer {SECRET}",
            ],
            rules=[probes[0], error_rate_bad],
            stopped="error-rate failed (fail_fast): traffic put back, verified",
        ),
        StepRecord(index=3, phase="promote", percent=100),
    ]
    report.verdict, report.action, report.exit_code = "fail", "rolled_back", 1
    report.message = "fail at step 2/2 (50 %): error-rate 4.1%, limit 1% | traffic put back"
    report.reasons = ["error-rate: 41 of 1000 requests failed, limit 1%"]
    report.deciding = ["error-rate"]
    report.traffic_before = dict(before)
    report.traffic_after = dict(before)
    report.baseline = [BASE]
    report.api_calls = {"logging": {"ListLogEntries": 12}, "run": {"UpdateService": 3}}
    return report
