"""The check when the cloud misbehaves: API faults, a concurrent deploy, quota use."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from deploy_guard.exitcodes import ExitCode
from waiting import wait_until

LIST_LOGS = "/google.logging.v2.LoggingServiceV2/ListLogEntries"
UPDATE = "/google.cloud.run.v2.Services/UpdateService"


@pytest.mark.fault(
    "logs",
    "Cloud Logging down for the whole check",
    "log rules error, inconclusive, exit 3, not promoted",
)
def test_logging_down_makes_log_rules_error_and_the_verdict_not_pass(
    chat: Any, check: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate()
    emulator.faults.fail("ListLogEntries", grpc.StatusCode.UNAVAILABLE)
    code, report = check(cand, "--api-retry", "0.3s", "--promote")
    assert report["verdict"] != "pass"
    assert code == ExitCode.INCONCLUSIVE, report
    assert report["action"] == "held"
    logs_rules = [r for r in report["rules"] if r["kind"] == "logs"]
    assert logs_rules
    assert all(r["status"] == "error" for r in logs_rules), logs_rules
    assert chat.serving() == {base: 100}  # not promoted on missing evidence


@pytest.mark.fault(
    "traffic",
    "transient UNAVAILABLE / DEADLINE_EXCEEDED on reads",
    "retried within the bound, the check passes, retries counted",
)
def test_transient_unavailable_is_retried_and_the_check_passes(
    chat: Any, check: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    emulator.faults.fail("ListLogEntries", grpc.StatusCode.UNAVAILABLE, times=2)
    emulator.faults.fail("GetService", grpc.StatusCode.UNAVAILABLE, times=1)
    emulator.faults.fail("GetRevision", grpc.StatusCode.DEADLINE_EXCEEDED, times=1)
    code, report = check(cand)
    assert code == ExitCode.PASS, report
    assert all(r["status"] == "pass" for r in report["rules"])
    # the retries are counted as calls (each one spends quota)
    assert report["api_calls"]["logging"]["ListLogEntries"] == emulator.faults.count(LIST_LOGS)
    assert report["api_calls"]["logging"]["ListLogEntries"] == report["evidence_passes"]["logs"] + 2


@pytest.mark.fault(
    "logs",
    "several rules and patterns against the read quota",
    "one ListLogEntries per evidence pass",
)
def test_one_logging_query_per_evidence_pass_not_per_pattern(
    chat: Any, check: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    emulator.faults.reset_counts()
    code, report = check(cand)
    assert code == ExitCode.PASS, report
    passes = report["evidence_passes"]["logs"]
    # chat-fast has two logs rules with three patterns in all: still one query per pass
    assert passes >= 1
    assert emulator.faults.count(LIST_LOGS) == passes
    assert report["api_calls"]["logging"] == {"ListLogEntries": passes}


@pytest.mark.fault(
    "traffic",
    "a newer deploy lands during the check, before the rollback",
    "exit 4 superseded, nothing written",
)
@pytest.mark.slow
def test_a_newer_deploy_during_the_check_makes_rollback_refuse_without_writing(
    chat: Any, check: Any, emulator: Any
) -> None:
    base = chat.first()
    # 1011 at 5 s leaves the other deploy seconds to land, even on a busy machine
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "5"}, percent=10)
    emulator.faults.reset_counts()
    newer: dict[str, Any] = {}

    def deploy_during_check() -> None:
        # the check is gathering evidence once it has queried the logs
        wait_until(lambda: emulator.faults.count(LIST_LOGS) >= 1, within=20)
        newer["rev"] = chat.candidate({"OTHER": "deploy"}, tag=None)
        newer["updates"] = emulator.faults.count(UPDATE)

    other = threading.Thread(target=deploy_during_check)
    other.start()
    try:
        code, report = check(cand, policy="chat-hold-long.yaml")
    finally:
        other.join(30)
    assert newer.get("rev"), "the concurrent deploy did not happen"
    assert code == ExitCode.ACTION_FAILED, report
    assert report["verdict"] == "fail"
    assert report["action"] == "superseded"
    assert "newer revision" in report["message"]
    # no UpdateService by the guard after the other deploy
    assert emulator.faults.count(UPDATE) == newer["updates"]
    assert chat.serving() == {base: 90, cand: 10}


@pytest.mark.fault(
    "traffic",
    "the rollback UpdateService is refused (INTERNAL)",
    "exit 4 failed, the gcloud command to do it by hand",
)
def test_a_rollback_that_fails_is_exit_4_with_what_to_do_by_hand(
    chat: Any, check: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=30)
    emulator.faults.fail("UpdateService", grpc.StatusCode.INTERNAL)
    code, report = check(cand, policy="chat-hold.yaml")
    assert code == ExitCode.ACTION_FAILED, report
    assert report["verdict"] == "fail"
    assert report["action"] == "failed"
    assert (
        "gcloud run services update-traffic chat --region us-central1 "
        f"--project {emulator.project} --to-revisions {base}=100" in report["message"]
    )
    assert chat.serving() == {base: 70, cand: 30}
