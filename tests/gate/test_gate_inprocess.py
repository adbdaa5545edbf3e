"""The gate's Python API, in-process: its log events are tested output."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from structlog.testing import capture_logs

from deploy_guard.report.model import CheckReport
from gates import build_gate


async def test_rollback_events_are_logged_with_their_fields(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=25)
    gate = build_gate(gcp_clients, emulator, cand)
    with capture_logs() as events:
        report = await gate.run()
    assert report.action == "rolled_back"
    assert report.exit_code == 1
    by_name = {e["event"]: e for e in events}
    # Both fail rules see the same 1011 (the probe in-band, the log rule in the server's
    # log line); whichever reports first is the first failure, and it must be a failed rule.
    first = by_name["first_failure_seen"]["rule"]
    assert first in {"chat-held", "no-1011-in-logs"}
    assert {r["rule"]: r["status"] for r in report.rules}[first] == "fail"
    assert by_name["rollback_requested"]["traffic"] == f"{base} 100%"
    assert by_name["rollback_verified"]["traffic"] == f"{base} 100%"
    assert by_name["traffic_write_requested"]["why"] == "rollback"
    assert by_name["check_finished"]["action"] == "rolled_back"
    assert gate.router.calls.get("run", "UpdateService") == 1


class _Recorder:
    """A :class:`deploy_guard.runtime.options.Progress` that keeps what each redraw would show."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[tuple[str, str]]]] = []

    def changed(self, report: CheckReport) -> None:
        rows = [(str(r["rule"]), str(r["status"])) for r in report.rules]
        self.calls.append((report.timeline.elapsed(), rows))


async def test_the_view_lists_every_rule_from_the_start_and_keeps_ticking(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """A held session reports nothing for seconds: the view still lists it and its clock runs."""
    chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "3"})
    view = _Recorder()
    report = await build_gate(gcp_clients, emulator, cand, progress=view, log_interval=30).run()
    assert report.exit_code == 1
    started = report.timeline.first("evidence_started")
    failed = report.timeline.first("first_failure_seen")
    assert started is not None
    assert failed is not None
    before = [rows for t, rows in view.calls if started.t <= t < failed.t]
    # from the first redraw on, both rules are listed, in policy order, the hold pending
    assert [name for name, _ in before[0]] == ["chat-held", "no-1011-in-logs"]
    assert all(("chat-held", "pending") in rows for rows in before)
    # no measurement arrives while the sessions are held, yet redraws keep coming
    times = [t for t, _ in view.calls if t >= started.t]
    assert times[-1] > failed.t
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.5


async def test_after_fail_fast_one_more_log_pass_completes_the_report(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """The probe decides at the 1011; the log rule, still waiting, gets its evidence after."""
    base = chat.first()
    # 1011 at 3 s: the log rule's first pass (at most 0.5 s in) sees nothing; the next
    # would be 30 s later, so only the pass after the decision can see the error lines
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "3"}, percent=25)
    gate = build_gate(gcp_clients, emulator, cand, log_interval=30)
    report = await gate.run()
    assert report.action == "rolled_back"
    assert chat.serving() == {base: 100}
    assert report.deciding == ["chat-held"]  # the verdict stands as decided
    logs_rule = {r["rule"]: r for r in report.rules}["no-1011-in-logs"]
    assert logs_rule["status"] == "fail", logs_rule
    assert "close code 1011" in " ".join(logs_rule["evidence"]), logs_rule
    events = [e.event for e in report.timeline.events]
    assert events.index("rollback_verified") < events.index("evidence_completed")
    completed = report.timeline.first("evidence_completed")
    assert completed is not None
    assert completed.detail["rules"] == {"no-1011-in-logs": "fail"}
    assert report.evidence_passes["logs"] == 2  # the first pass and the completing one


async def test_the_completing_pass_is_bounded_and_never_changes_the_action(
    chat: Any, gcp_clients: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deploy_guard.analysis.engine as engine_module

    monkeypatch.setattr(engine_module, "COMPLETION_BOUND", 0.5)
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=25)
    emulator.faults.delay("ListLogEntries", 3.0)  # Logging answers too slowly for it
    gate = build_gate(gcp_clients, emulator, cand, log_interval=30)
    report = await gate.run()
    assert report.action == "rolled_back"
    assert report.exit_code == 1
    assert chat.serving() == {base: 100}
    missed = report.timeline.first("evidence_not_completed")
    assert missed is not None
    assert missed.detail["rules"] == ["no-1011-in-logs"]
    assert "no answer in 0.5 s" in missed.detail["why"]
    assert report.timeline.first("evidence_completed") is None
