"""``deploy-guard check`` end to end: the emulator, the chat agent, the official clients.

Each test deploys a healthy base revision and a candidate, runs the check the
way a user does (the click command, JSON report), and asserts the verdict, the
reason, the exit code and where traffic ends.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy_guard.exitcodes import ExitCode


def test_healthy_candidate_passes_and_is_promoted(chat: Any, check: Any) -> None:
    base = chat.first()
    cand = chat.candidate()
    code, report = check(cand, "--promote")
    assert code == ExitCode.PASS, report
    assert report["verdict"] == "pass"
    assert report["action"] == "promoted"
    assert report["traffic_before"] == {base: 100}
    assert report["traffic_after"] == {cand: 100}
    assert chat.serving() == {cand: 100}
    assert chat.get().annotations["deploy-guard.dev/last-known-good"] == cand
    events = [e["event"] for e in report["timeline"]]
    assert events.index("promote_requested") < events.index("promote_verified")
    decision = next(e for e in report["timeline"] if e["event"] == "decision")
    assert decision["detail"]["action"] == "promote"  # --promote, not the policy's on_pass


def test_healthy_candidate_without_promote_changes_nothing(chat: Any, check: Any) -> None:
    base = chat.first()
    cand = chat.candidate()
    code, report = check(cand)
    assert code == ExitCode.PASS
    assert report["action"] == "none"
    assert chat.serving() == {base: 100}
    assert "UpdateService" not in report["api_calls"].get("run", {})


@pytest.mark.parametrize(
    ("env", "rule", "words"),
    [
        ({"CHAT_DROP_EVENT": "tool_completed"}, "chat-golden-path", "never arrived"),
        ({"CHAT_SWAP_EVENTS": "1"}, "chat-golden-path", "order"),
        ({"CHAT_LEAK_USERS": "1"}, "chat-golden-path", "another user's events"),
        ({"CHAT_HEALTH_STATUS": "503"}, "health", "503"),
    ],
)
def test_each_failure_mode_fails_for_its_reason_and_traffic_stays(
    chat: Any, check: Any, env: dict[str, str], rule: str, words: str
) -> None:
    base = chat.first()
    cand = chat.candidate(env)
    code, report = check(cand)
    assert code == ExitCode.FAIL, report
    assert report["verdict"] == "fail"
    assert rule in report["deciding_rules"]
    failed = {r["rule"]: r for r in report["rules"] if r["status"] == "fail"}
    text = " ".join([failed[rule]["counts"], failed[rule]["message"], *failed[rule]["evidence"]])
    assert words in text.lower(), failed[rule]
    assert report["action"] == "none"  # the candidate held no traffic: nothing to move
    assert chat.serving() == {base: 100}


def test_canary_failing_with_1011_is_rolled_back_and_verified(chat: Any, check: Any) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    assert chat.serving() == {base: 80, cand: 20}
    code, report = check(cand, policy="chat-hold.yaml")
    assert code == ExitCode.FAIL, report
    assert report["action"] == "rolled_back"
    assert report["traffic_before"] == {base: 80, cand: 20}
    assert report["traffic_after"] == {base: 100}
    assert chat.serving() == {base: 100}
    assert "1011" in " ".join(report["reasons"])
    timeline = {e["event"]: e["t"] for e in report["timeline"]}
    # fail-fast: decided on the first 1011 (~1 s in), long before the 4 s hold ends
    assert timeline["first_failure_seen"] < timeline["rollback_verified"]
    assert timeline["rollback_verified"] - timeline["evidence_started"] < 4.0


def test_error_logs_fail_the_log_rule(chat: Any, check: Any) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    code, report = check(cand)
    assert code == ExitCode.FAIL, report
    assert "no-tool-errors" in report["deciding_rules"]
    assert "no-1011-in-logs" not in report["deciding_rules"]
    assert chat.serving() == {base: 100}


def test_log_settle_waits_out_the_ingestion_delay_before_the_last_log_pass(
    chat: Any, check: Any, emulator: Any
) -> None:
    """Entries readable 5 s after they are written: without a settle the last pass sees none."""
    from datetime import timedelta

    base = chat.first()
    cand = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    emulator.logs.delay = timedelta(seconds=5)
    code, report = check(cand, "--log-interval", "30s", "--log-settle", "6s")
    assert code == ExitCode.FAIL, report
    assert "no-tool-errors" in report["deciding_rules"]
    assert chat.serving() == {base: 100}


def test_traffic_is_recorded_once_the_service_has_routed_the_candidate(
    chat: Any, check: Any, emulator: Any
) -> None:
    """Cloud Run marks the revision Ready before it routes to it; the split is read after."""
    base = chat.first()
    emulator.emulator.admin.route_delay_s = 1.5  # Ready, then 1.5 s until routed
    chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20, wait=False)
    cand = chat.get().latest_created_revision.rsplit("/", 1)[-1]
    assert chat.get().reconciling
    code, report = check(cand, policy="chat-hold.yaml")
    assert code == ExitCode.FAIL, report
    assert report["traffic_before"] == {base: 80, cand: 20}  # not the pre-routing {base: 100}
    assert report["action"] == "rolled_back"
    assert chat.serving() == {base: 100}


def test_a_revision_that_never_starts_fails_with_its_condition(chat: Any, check: Any) -> None:
    import sys

    base = chat.first()
    cand = chat.candidate(
        command=[sys.executable, "-c", "import sys; print('boom: no CONFIG'); sys.exit(3)"]
    )
    code, report = check(cand, "--ready-timeout", "20s")
    assert code == ExitCode.FAIL, report
    assert report["verdict"] == "fail"
    assert "failed to start" in " ".join(report["reasons"])
    assert chat.serving() == {base: 100}


def test_a_revision_that_never_starts_under_dry_run_is_judged_not_acted_on(
    chat: Any, check: Any
) -> None:
    import sys

    chat.first()
    cand = chat.candidate(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    code, report = check(cand, "--ready-timeout", "20s", "--dry-run")
    assert code == ExitCode.FAIL, report
    assert report["action"] == "none"
    assert "dry run: would roll back" in report["message"]
    decision = next(e for e in report["timeline"] if e["event"] == "decision")
    assert decision["detail"]["action"] == "none (dry run; would rollback)"
    assert "UpdateService" not in report["api_calls"].get("run", {})


def test_a_full_revision_resource_name_is_the_same_candidate(chat: Any, check: Any) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    code, report = check(f"{chat.name}/revisions/{cand}", policy="chat-hold.yaml")
    assert code == ExitCode.FAIL, report
    assert report["baseline"] == [base]  # the candidate is never its own baseline
    assert report["action"] == "rolled_back"
    assert chat.serving() == {base: 100}


def test_dry_run_judges_but_never_moves_traffic(chat: Any, check: Any) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    code, report = check(cand, "--dry-run", policy="chat-hold.yaml")
    assert code == ExitCode.FAIL
    assert report["action"] == "none"
    assert "dry run" in report["message"]
    assert chat.serving() == {base: 80, cand: 20}


def test_an_untagged_candidate_gets_a_temporary_tag_that_is_removed(chat: Any, check: Any) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    assert chat.tags() == set()
    code, report = check(cand)
    assert code == ExitCode.PASS, report
    assert report["temporary_tag"].startswith("dg-")
    assert chat.tags() == set()
    events = [e["event"] for e in report["timeline"]]
    assert "tag_added" in events
    assert "tag_removed" in events


def test_invalid_policy_is_exit_2_before_any_api_call(
    chat: Any, check: Any, emulator: Any, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\nservices: [chat]\nrules:\n  - name: a\n    kind: nope\n")
    before = sum(emulator.faults.counts().values())
    result = CliRunner().invoke(
        cli, ["check", "--revision", "chat-00002-abc", "--policy", str(bad)]
    )
    assert result.exit_code == ExitCode.USAGE
    assert f'{bad}:6:11: rules[0].kind: unknown rule kind "nope"' in result.output
    assert "error: 1 problem in the policy files; nothing was checked" in result.output
    assert sum(emulator.faults.counts().values()) == before


def test_a_missing_token_source_is_exit_2_before_any_api_call(
    chat: Any, check: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)  # untagged: a check would add a temporary tag first
    monkeypatch.delenv("DG_TEST_NO_SUCH_TOKEN", raising=False)
    emulator.faults.reset_counts()
    code, report = check(cand, "--token-env", "DG_TEST_NO_SUCH_TOKEN")
    assert code == ExitCode.USAGE, report
    assert "DG_TEST_NO_SUCH_TOKEN" in report["error"]
    assert report["api_calls"] == {}
    assert emulator.faults.counts() == {}
    assert chat.tags() == set()


def test_a_summary_that_cannot_be_written_is_exit_2_before_any_api_call(
    chat: Any, check: Any, emulator: Any, tmp_path: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    emulator.faults.reset_counts()
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    bad = a_file / "summary.md"
    code, report = check(cand, "--promote", "--summary", str(bad))
    assert code == ExitCode.USAGE, report
    assert f"{a_file} is not a folder" in report["error"]
    assert emulator.faults.counts() == {}  # nothing was read, nothing promoted


def test_an_unwritable_summary_is_named_by_its_flag_and_not_written_to_again(
    tmp_path: Any,
) -> None:
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    report = tmp_path / "report.json"
    args = ["check", "--revision", "chat-00002-abc", "--project", "p", "--region", "r"]
    args += ["--report", str(report), "--summary", str(tmp_path)]  # a folder
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    said = f"error: cannot write the summary (--summary) to {tmp_path}: it is a directory"
    assert said in result.stderr
    assert "could not write" not in result.stderr  # the folder is not tried a second time
    assert json.loads(report.read_text())["error"].startswith("cannot write the summary")


def test_report_folders_that_do_not_exist_yet_are_created(
    chat: Any, check: Any, tmp_path: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    summary = tmp_path / "out" / "nested" / "summary.md"
    code, report = check(cand, "--summary", str(summary))
    assert code == ExitCode.PASS, report
    assert summary.read_text().startswith("## deploy-guard")


def test_two_token_sources_are_exit_2(check: Any, emulator: Any, tmp_path: Any) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken")
    code, report = check("chat-00002-abc", "--token-env", "HOME", "--token-file", str(token))
    assert code == ExitCode.USAGE, report
    assert "pass one of them" in report["error"]
    assert emulator.faults.counts() == {}


def test_unknown_revision_is_exit_2(chat: Any, check: Any) -> None:
    chat.first()
    code, report = check("chat-00099-zzz")
    assert code == ExitCode.USAGE
    assert report["error"]


def test_a_check_that_runs_out_of_time_is_inconclusive_and_holds(chat: Any, check: Any) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_SLOW_MS": "5000"}, percent=10)  # /health answers in 5 s
    code, report = check(cand, "--timeout", "1s", policy="health-slow.yaml")
    assert code == ExitCode.INCONCLUSIVE, report
    assert report["verdict"] == "inconclusive"
    assert report["action"] == "held"
    assert any("timed out after 1 s" in r for r in report["reasons"])
    assert "check_timed_out" in [e["event"] for e in report["timeline"]]
    assert chat.serving() == {base: 90, cand: 10}


def test_a_timeout_shorter_than_a_hold_is_exit_2_before_any_api_call(
    chat: Any, check: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    emulator.faults.reset_counts()
    code, report = check(cand, "--timeout", "3s", policy="chat-hold.yaml")  # hold is 4 s
    assert code == ExitCode.USAGE, report
    assert "--timeout 3s cannot fit rule chat-held's hold of 4s" in report["error"]
    assert emulator.faults.counts() == {}


def test_several_policies_are_judged_together(chat: Any, check: Any, tmp_path: Any) -> None:
    from pathlib import Path

    extra = tmp_path / "extra.yaml"
    extra.write_text(
        "version: 1\nname: extra\nservices: [chat]\nauth: {id_token: none}\nrules:\n"
        "  - name: health-twice\n    kind: http\n    http: {path: /health, requests: 2}\n"
    )
    chat.first()
    cand = chat.candidate()
    here = Path(__file__).parent / "policies" / "chat-fast.yaml"
    code, report = check(cand, "--policy", str(extra), policy=str(here))
    assert code == ExitCode.PASS, report
    assert report["policies"] == ["chat-fast", "extra"]
    assert "health-twice" in {r["rule"] for r in report["rules"]}


def test_a_rule_name_in_two_applicable_policies_is_exit_2(chat: Any, check: Any) -> None:
    from pathlib import Path

    chat.first()
    cand = chat.candidate()
    code, report = check(cand, policy=str(Path(__file__).parent / "policies"))
    assert code == ExitCode.USAGE
    assert "appears in two policies" in report["error"]


def test_a_candidate_that_takes_latest_traffic_once_ready_is_rolled_back(
    chat: Any, check: Any
) -> None:
    """Deployed without --no-traffic, the candidate gets 100 % when it becomes Ready.

    The check starts while it is still starting, so the split read at that
    moment (LATEST = the base) is not what serves once the candidate is Ready:
    the guard must record traffic after the wait, see the candidate holding it
    all, and put it back on the base.
    """
    import sys
    from pathlib import Path

    app = Path(__file__).resolve().parents[2] / "examples" / "chat_agent" / "app.py"
    base = chat.first()
    svc = chat.get()
    assert all(not t.revision for t in svc.traffic)  # empty or LATEST: 100 % to the latest
    slow_start = (
        "import runpy, time; time.sleep(1.5); "  # a slow container start, not a test wait
        f"runpy.run_path({str(app)!r}, run_name='__main__')"
    )
    svc.template = chat.template(
        {"CHAT_FAIL_1011_AFTER": "1", "DEPLOY_SERIAL": "slow"},
        command=[sys.executable, "-c", slow_start],
    )
    chat.clients.services().update_service(service=svc)  # not waited for: still starting
    cand = chat.get().latest_created_revision.rsplit("/", 1)[-1]
    assert cand != base
    code, report = check(cand, policy="chat-hold.yaml")
    assert code == ExitCode.FAIL, report
    assert report["traffic_before"] == {cand: 100}
    assert report["action"] == "rolled_back"
    assert report["traffic_after"] == {base: 100}
    assert chat.serving() == {base: 100}


def test_a_failing_only_revision_cannot_be_rolled_back_exit_4(chat: Any, check: Any) -> None:
    only = chat.first({"CHAT_FAIL_1011_AFTER": "1"})
    code, report = check(only, policy="chat-hold.yaml")
    assert code == ExitCode.ACTION_FAILED, report
    assert report["verdict"] == "fail"
    assert report["action"] == "failed"
    assert "deploy-guard rollback --service chat --to-revision" in report["message"]
    assert chat.serving() == {only: 100}
