"""The gate's Python API, in-process: its log events are tested output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from deploy_guard.gate import CheckOptions, Gate, cloud_sources
from deploy_guard.gcp.cloudrun import CloudRun
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.policy import load_file
from deploy_guard.report.model import CheckReport

POLICY = Path(__file__).parent / "policies" / "chat-hold.yaml"


async def test_rollback_events_are_logged_with_their_fields(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=25)
    calls = ApiCalls()
    router = CloudRun(gcp_clients, emulator.project, emulator.region, calls=calls)
    options = CheckOptions(
        project=emulator.project, region=emulator.region, revision=cand, log_interval=0.5
    )
    report = CheckReport(revision=cand)
    gate = Gate([load_file(POLICY)], options, router, cloud_sources(gcp_clients, calls), report)
    with capture_logs() as events:
        await gate.run()
    assert report.action == "rolled_back"
    assert report.exit_code == 1
    by_name = {e["event"]: e for e in events}
    assert by_name["first_failure_seen"]["rule"] == "chat-held"
    assert by_name["rollback_requested"]["traffic"] == f"{base} 100%"
    assert by_name["rollback_verified"]["traffic"] == f"{base} 100%"
    assert by_name["traffic_write_requested"]["why"] == "rollback"
    assert by_name["check_finished"]["action"] == "rolled_back"
    assert calls.get("run", "UpdateService") == 1
