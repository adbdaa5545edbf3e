"""The outcome a check reports is the one the gate decided, whichever layer ends it.

``deploy-guard check`` runs the gate under :func:`deploy_guard.commands.launch._main`,
which maps an error that ends the check to the report and the exit code. These
tests go through that seam (the one the command uses) against the emulator, so
an outcome the gate gives (``unverified``) cannot be renamed on the way out.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import websockets

from deploy_guard.commands.launch import _main
from deploy_guard.gcp.cloudrun import CloudRun
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.gcp.logs import CloudLogging
from deploy_guard.gcp.traffic import ServiceState
from deploy_guard.judge import Judge
from deploy_guard.policy.model import Policy, Rule
from deploy_guard.report.markdown import render_markdown
from gates import build_gate


@pytest.mark.fault(
    "traffic",
    "the temporary tag's write is not read back, seen through the check command",
    "report action 'unverified' (not 'failed'), exit 4, the summary says what to check",
)
async def test_a_tag_write_not_read_back_stays_unverified_in_the_commands_report(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)

    class _ReadFailsAfterTheTag(CloudRun):
        async def _update(self, service: Any, **kw: Any) -> ServiceState:
            written = await super()._update(service, **kw)
            if any(t.startswith("dg-") for t in chat.tags()):  # the tag landed: lose the re-read
                emulator.faults.fail("GetService", grpc.StatusCode.PERMISSION_DENIED, nth=1)
            return written

    router = _ReadFailsAfterTheTag(gcp_clients, emulator.project, emulator.region, calls=ApiCalls())
    gate = build_gate(gcp_clients, emulator, cand, router=router)
    code = await _main(gate, gate.report, echo_errors=False)
    report = gate.report.to_dict()
    assert (code, report["exit_code"], report["action"]) == (4, 4, "unverified"), report
    assert "NOT verified" in render_markdown(gate.report)
    assert not any(t.startswith("dg-") for t in chat.tags())  # the clean-up still removed it


@pytest.mark.fault(
    "cli",
    "a revision name that does not say its service, and no --service",
    "exit 2 with verdict 'error' in the report (nothing was judged), not 'inconclusive'",
)
def test_a_revision_name_without_its_service_is_an_error_verdict(check: Any) -> None:
    code, report = check("not_a_revision_name", policy="chat-fast.yaml")
    assert (code, report["exit_code"], report["verdict"]) == (2, 2, "error"), report
    assert "pass --service" in report["error"]
    assert "not in Cloud Run's SERVICE-00002-abc form (a named revision" in report["error"]


@pytest.mark.fault(
    "traffic",
    "the rollback write gets no answer (UNAVAILABLE until the retry bound), landed or not",
    "re-read: landed is verified (rolled back, exit 1); not landed is 'failed', exit 4",
)
@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
async def test_a_write_left_unanswered_is_read_back_before_it_is_called_failed(
    chat: Any, gcp_clients: Any, emulator: Any, landed: bool
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)  # tagged: one write
    emulator.faults.reset_counts()
    if landed:  # applied, then the answer is lost (a retry, if any, is refused as stale)
        emulator.faults.lose("UpdateService", grpc.StatusCode.UNAVAILABLE, nth=1)
    else:  # never applied, however often it is tried
        emulator.faults.fail("UpdateService", grpc.StatusCode.UNAVAILABLE, times=100)
    # a retry bound shorter than the back-off: the write ends unanswered at once
    router = CloudRun(
        gcp_clients, emulator.project, emulator.region, calls=ApiCalls(), retry_deadline=0.01
    )
    report = await build_gate(gcp_clients, emulator, cand, router=router).run()
    assert report.verdict == "fail"
    if landed:
        assert (report.action, report.exit_code) == ("rolled_back", 1), report.message
        assert chat.serving() == {base: 100}
    else:
        assert (report.action, report.exit_code) == ("failed", 4), report.message
        assert "Do it by hand" in report.message
        assert chat.serving() == {base: 80, cand: 20}
    assert report.traffic_after == chat.serving()


@pytest.mark.fault(
    "logs",
    "the last log pass stops at its page bound with matches already over max_count",
    "fail (a count read so far can only grow), not error/inconclusive; under it: error",
)
@pytest.mark.parametrize(
    ("max_count", "status"), [(0, "fail"), (5, "error")], ids=["over-the-limit", "under-it"]
)
async def test_a_cut_short_last_log_pass_that_already_exceeds_max_count_is_a_fail(
    chat: Any, gcp_clients: Any, emulator: Any, max_count: int, status: str
) -> None:
    chat.first()
    cand = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    url = next(t.uri for t in chat.get().traffic_statuses if t.tag == "candidate")
    async with websockets.connect(url.replace("http", "ws") + "/ws/chat") as ws:
        for i in range(3):  # each message logs one ERROR "tool call failed"
            await ws.send(json.dumps({"type": "message", "user_id": "u", "session_id": f"s{i}"}))
            while json.loads(await ws.recv())["type"] != "agent_completed":
                pass
    logs = {"filter": "severity>=ERROR", "patterns": ["tool call failed"], "max_count": max_count}
    rule = Rule.model_validate(
        {"name": "tool-errors", "kind": "logs", "missing_data": "inconclusive", "logs": logs}
    )
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision=cand,
        rules=[rule],
        since=datetime.now(UTC) - timedelta(minutes=5),
        page_size=1,
        max_pages=1,  # the search stops after one entry: fewer than were logged
    )
    [last] = await source.measure(complete=True)
    assert last.error is not None
    assert "had not finished searching" in last.error
    assert last.matches == {"tool call failed": 1}  # a lower bound: 3 were logged
    judge = Judge(Policy(name="p", services=["chat"], rules=[rule]))
    result = judge.observe(last)
    assert result.status == status, result.message
    assert "had not finished searching" in result.message  # says the count is partial
    # 1 of at least 1 over a limit of 0 is proof; 1 under a limit of 5 proves nothing
    assert judge.verdict().status == ("fail" if status == "fail" else "inconclusive")


@pytest.mark.fault(
    "traffic",
    "status --clear-rejected: the annotation write lands, reading the service back fails",
    "exit 4 'sent, not read back' with what to check, not a permission error to fix",
)
def test_an_annotation_write_not_read_back_is_unverified_not_a_failed_read(
    chat: Any, emulator: Any, emulator_env: dict[str, str]
) -> None:
    from click.testing import CliRunner

    from deploy_guard.cli import cli
    from deploy_guard.gcp.traffic import REJECTED

    base = chat.first()
    svc = chat.get()
    svc.annotations[REJECTED] = base
    chat.clients.services().update_service(service=svc).result(timeout=30, polling=chat.polling)
    # status reads the service, re-reads it right before the write, writes, reads it back
    emulator.faults.fail("GetService", grpc.StatusCode.PERMISSION_DENIED, nth=3)
    result = CliRunner().invoke(cli, ["status", "--service", "chat", "--clear-rejected", base])
    assert emulator.faults.count("UpdateService") >= 2  # the fixture's write and status's
    assert result.exit_code == 4, result.output
    assert REJECTED not in chat.get().annotations or not chat.get().annotations[REJECTED]
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: annotating chat: Cloud Run applied the change"), error
    assert "not read back" in error
