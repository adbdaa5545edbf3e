"""What ``check`` says about its outcome: errors, slow starts, rejected candidates, targets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode

REJECTED = "deploy-guard.dev/rejected"
POLICIES = Path(__file__).parent / "policies"


def test_an_unknown_revision_is_an_error_not_a_verdict(chat: Any, check: Any) -> None:
    chat.first()
    code, report = check("chat-00009-zzz")
    assert code == ExitCode.USAGE, report
    assert report["verdict"] == "error"
    assert "revision chat-00009-zzz does not exist in service chat" in report["error"]


@pytest.mark.parametrize(
    "args",
    [
        ("--revision", "chta-00001-abc"),  # no policy names chta: still, the typo is the news
        ("--revision", "chat-00001-abc", "--service", "chta"),
    ],
)
def test_a_service_that_does_not_exist_is_named(
    chat: Any, emulator: Any, emulator_env: dict[str, str], args: tuple[str, ...]
) -> None:
    chat.first()
    result = CliRunner().invoke(cli, ["check", *args, "--policy", str(POLICIES / "chat-fast.yaml")])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert (
        f"service chta does not exist in project {emulator.project} region {emulator.region}"
        in result.stderr
    )
    assert "no policy applies" not in result.stderr


@pytest.mark.fault(
    "traffic",
    "candidate still starting when --ready-timeout runs out",
    "inconclusive, exit 3, held, not rejected",
)
def test_a_revision_still_starting_at_the_ready_timeout_is_inconclusive(
    chat: Any, check: Any
) -> None:
    base = chat.first()
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]  # never listens in time
    chat.candidate(command=slow, wait=False)
    cand = chat.get().latest_created_revision.rsplit("/", 1)[-1]
    assert cand != base
    code, report = check(cand, "--ready-timeout", "1s")
    assert code == ExitCode.INCONCLUSIVE, report
    assert (report["verdict"], report["action"]) == ("inconclusive", "held")
    assert "still starting" in report["message"]
    assert "--ready-timeout" in report["message"]
    assert cand not in chat.get().annotations.get(REJECTED, "")
    assert chat.serving() == {base: 100}


def test_a_candidate_on_the_rejected_list_is_said_to_be_so_up_front(chat: Any, check: Any) -> None:
    chat.first()
    failed = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    assert check(failed)[0] == ExitCode.FAIL
    code, report = check(failed)  # checked again: still runs, and says what it is
    assert code == ExitCode.FAIL, report
    events = [e["event"] for e in report["timeline"]]
    assert events.index("candidate_was_rejected") < events.index("evidence_started")
    assert any(f"{failed} is on chat's rejected list" in n for n in report["notes"])


def test_rolling_back_a_full_candidate_says_which_revision_and_why(
    chat: Any, check: Any, tmp_path: Any
) -> None:
    base = chat.first()
    failed = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    assert check(failed)[0] == ExitCode.FAIL
    worse = chat.candidate({"CHAT_HEALTH_STATUS": "503"}, tag="again", percent=100)
    code, report = check(worse)
    assert code == ExitCode.FAIL, report
    assert chat.serving() == {base: 100}
    why = f"rollback target {base}: the newest Ready revision older than {worse}, "
    why += f"skipping rejected {failed}"
    assert why in report["message"]
    assert why in report["notes"]
    chosen = next(e for e in report["timeline"] if e["event"] == "rollback_target_chosen")
    assert chosen["detail"]["revision"] == base


def test_the_outcome_line_is_on_stdout_and_the_events_on_stderr(
    chat: Any, emulator_env: dict[str, str]
) -> None:
    chat.first()
    cand = chat.candidate()
    result = CliRunner().invoke(
        cli,
        ["check", "--revision", cand, "--policy", str(POLICIES / "chat-fast.yaml"), "--dry-run"],
    )
    assert result.exit_code == ExitCode.PASS, result.output
    assert result.stdout.startswith("pass: "), result.stdout
    assert len(result.stdout.splitlines()) == 1
    assert '"message": "check_finished"' in result.stderr
    assert "check_finished" not in result.stdout
