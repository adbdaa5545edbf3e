"""Reports as plain data, the way the driver fills them, with every clock fixed.

Timeline events are built with fixed UTC times and offsets (``Timeline.add``
stamps the wall clock), so a report renders to the same bytes on every run:
the check's renderings are kept in ``golden/`` and compared byte for byte.
"""

from __future__ import annotations

from typing import Any

from deploy_guard.report.model import CheckReport, Timeline, TimelineEvent

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
