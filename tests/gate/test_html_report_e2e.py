"""``--html`` on ``check``, ``rollout`` and ``watch``, end to end against the emulator.

The page is written on every ending, as the JSON report is: a verdict, an error
before anything started, and (``test_signals_e2e``) a second signal. The sessions
it draws are the ones the probes ran, every one: those the judge read, those that
ended after the decision, and those the decision cut.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode
from gates import POLICIES, run_guard


def page_of(path: Path) -> str:
    assert path.is_file(), f"no page at {path}"
    return path.read_text(encoding="utf-8")


def test_a_failing_check_draws_every_session_that_closed_with_1011(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"})
    html = tmp_path / "site" / "check.html"
    code, doc, out = run_guard(
        "check", tmp_path, cand, "--html", str(html), policy="chat-hold.yaml"
    )
    assert code == ExitCode.FAIL, out
    held = doc["traces"]["sessions"]["chat-held"]
    # both held sessions are there, whichever one the judge decided on (fail-fast): the
    # other closed with 1011 too, or the decision cut it a moment before its own close
    assert held["seen"] == 2
    assert held["failed"] >= 1
    assert held["failed"] + held["cut"] == 2
    failed = [s for s in held["sessions"] if not s["cut"]]
    for session in failed:
        assert (session["close_code"], session["closed_by"]) == (1011, "server")
        assert session["closed_at"] >= 1.0  # CHAT_FAIL_1011_AFTER: closed a second in
        assert session["hold_wanted"] == 4.0
        assert [name for _t, name in session["events"]][:1] == ["agent_started"]
    logs = {r["rule"]: r for r in doc["rules"] if r["kind"] == "logs"}
    if logs["no-1011-in-logs"]["status"] == "fail":  # every line it counted is on the axis
        assert doc["traces"]["log_matches"]["no-1011-in-logs"]["seen"] >= 1
    page = page_of(html)
    assert 'id="verdict">FAIL<' in page
    assert re.search(r"chat-held: (every session|1 of 1 session).{0,12} closed with 1011", page)
    assert page.count('class="end c1011"') == held["failed"]
    assert re.search(r'class="label mark-fail[^"]*"[^>]*>first failure', page)


def test_a_rollout_draws_the_sessions_of_every_stage(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    html = tmp_path / "rollout.html"
    code, doc, out = run_guard(
        "rollout", tmp_path, cand, "--html", str(html), policy="chat-rollout.yaml"
    )
    assert code == 0, out
    golden = doc["traces"]["sessions"]["chat-golden-path"]
    per_stage = 2  # chat-rollout.yaml: the tag's probes, then each of its two steps
    assert golden["seen"] >= 3 * per_stage
    assert golden["failed"] == 0
    page = page_of(html)
    assert 'id="verdict">PASS<' in page
    assert "<td>step 2/2</td>" in page
    assert "completed: 100 % on the candidate" in page
    assert "No probe session failed." in page


def test_a_watch_writes_its_page_with_the_canarys_sessions(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    report, html = tmp_path / "watch.json", tmp_path / "watch.html"
    args = ["watch", "--service", "chat", "--policy", str(POLICIES / "chat-watch.yaml")]
    args += ["--report", str(report), "--html", str(html), "--for", "3s"]
    args += ["--log-interval", "0.5s", "--service-interval", "0.5s"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    canary = [rule for rule in doc["traces"]["sessions"] if "canary" in rule]
    assert canary, doc["traces"]["sessions"].keys()
    page = page_of(html)
    assert "deploy-guard watch" in page
    assert f"{canary[0]} · websocket" in page


def test_a_check_that_never_started_still_writes_its_page(tmp_path: Path) -> None:
    report, html = tmp_path / "r.json", tmp_path / "r.html"
    missing = tmp_path / "no-such-policy.yaml"
    args = ["check", "--revision", "chat-00002-abc", "--policy", str(missing)]
    args += ["--report", str(report), "--html", str(html)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    page = page_of(html)
    assert 'id="verdict">ERROR<' in page
    assert "no-such-policy.yaml" in page
    assert json.loads(report.read_text())["verdict"] == "error"


def test_a_page_path_that_cannot_be_written_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    report = tmp_path / "r.json"
    args = ["check", "--revision", "chat-00002-abc", "--policy", str(POLICIES / "chat-fast.yaml")]
    args += ["--report", str(report), "--html", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE
    assert f"cannot write the HTML report (--html) to {tmp_path}: it is a directory" in (
        result.output
    )
    assert json.loads(report.read_text())["api_calls"] == {}
