"""``deploy-guard status`` and the temporary tags a killed check leaves behind, on the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.tags import TAGS_ANNOTATION
from waiting import wait_until

POLICY = Path(__file__).parent / "policies" / "chat-hold.yaml"
UPDATE = "UpdateService"


def status(*args: str, service: str = "chat") -> Any:
    return CliRunner().invoke(cli, ["status", "--service", service, *args])


def status_json(service: str = "chat") -> dict[str, Any]:
    result = status("--json", service=service)
    assert result.exit_code == ExitCode.PASS, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def annotate(chat: Any, key: str, value: str) -> None:
    """Write one annotation the way a person (or an older guard) would."""
    svc = chat.get()
    svc.annotations[key] = value
    chat.clients.services().update_service(service=svc).result(timeout=30, polling=chat.polling)


def add_tag(chat: Any, revision: str, tag: str) -> None:
    """Add a 0 % tag by hand, with no holder record (what an older deploy-guard left)."""
    from google.cloud import run_v2

    svc = chat.get()
    svc.traffic.append(
        run_v2.TrafficTarget(
            type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
            revision=revision,
            percent=0,
            tag=tag,
        )
    )
    chat.clients.services().update_service(service=svc).result(timeout=30, polling=chat.polling)


def temp_tags(chat: Any) -> set[str]:
    return {t for t in chat.tags() if t.startswith("dg-")}


@pytest.mark.fault(
    "signals",
    "second Ctrl-C while the temporary tag is being removed",
    "exit 130; tag recorded as in use, later stale, reported and removed by status",
)
def test_a_tag_left_by_a_second_ctrl_c_is_recorded_reported_and_removed(
    chat: Any, emulator: Any, emulator_env: dict[str, str], check: Any
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None)  # untagged: the check adds a dg- tag
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deploy_guard",
            "check",
            "--revision",
            cand,
            "--policy",
            str(POLICY),
        ],
        env={**os.environ, **emulator_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: temp_tags(chat) or proc.poll() is not None, within=30)
        assert proc.poll() is None, proc.communicate()
        # the removal cannot get through: the second Ctrl-C lands while it retries
        emulator.faults.fail(UPDATE, grpc.StatusCode.UNAVAILABLE)
        emulator.faults.reset_counts()
        proc.send_signal(signal.SIGINT)
        wait_until(lambda: emulator.faults.count(UPDATE) >= 1, within=30)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        emulator.faults.clear()
    assert proc.returncode == 130, err
    (tag,) = temp_tags(chat)

    # The tag's record came with the tag: who holds it, until when.
    record = json.loads(chat.get().annotations[TAGS_ANNOTATION])[tag]
    until = datetime.fromisoformat(record["until"].replace("Z", "+00:00"))
    assert until > datetime.now(UTC)
    assert str(proc.pid) in record["by"]

    # Its check may still be running as far as anyone can tell: in use, never removed.
    doc = status_json()
    (shown,) = doc["temporary_tags"]
    assert (shown["tag"], shown["state"], shown["revision"]) == (tag, "in_use", cand)
    kept = status("--remove-stale-tags")
    assert kept.exit_code == ExitCode.PASS, kept.output
    assert "no stale temporary tag to remove" in kept.stdout
    # ... and says until when it is kept, so a person knows when to come back
    assert f"kept: {tag} ({cand}): in use by " in kept.stdout
    assert f"until {record['until']} (a running check may use it" in kept.stdout
    assert tag in temp_tags(chat)

    # Past its time it is stale: check and rollback mention it, status removes it.
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotate(chat, TAGS_ANNOTATION, json.dumps({tag: {"until": past, "by": record["by"]}}))
    assert status_json()["temporary_tags"][0]["state"] == "stale"
    code, report = check(cand, "--dry-run", policy="chat-fast.yaml")
    assert code == ExitCode.PASS, report
    assert any(e["event"] == "stale_tags_found" for e in report["timeline"])
    (note,) = [n for n in report["notes"] if "leftover temporary tags" in n]
    assert tag in note
    assert "deploy-guard status --service chat --remove-stale-tags" in note
    assert report["temporary_tag"] != tag  # it used a tag of its own
    rolled = CliRunner().invoke(
        cli, ["rollback", "--service", "chat", "--to-revision", cand, "--dry-run"]
    )
    assert rolled.exit_code == ExitCode.PASS, rolled.output
    assert f"leftover temporary tags on chat: {tag}" in rolled.stderr
    assert "--remove-stale-tags" in rolled.stderr

    served = chat.serving()
    removed = status("--remove-stale-tags")
    assert removed.exit_code == ExitCode.PASS, removed.output
    assert f"removed stale temporary tags {tag}" in removed.stdout
    assert temp_tags(chat) == set()
    assert chat.serving() == served == {base: 100}
    assert json.loads(chat.get().annotations[TAGS_ANNOTATION]) == {}


@pytest.mark.fault(
    "traffic",
    "dg- tags with no record, or an unreadable record",
    "stale: removed by status, never counted as in use",
)
@pytest.mark.parametrize("record", [None, "{not json", '{"dg-00000000": "soon"}'])
def test_a_temporary_tag_without_a_readable_record_is_stale(
    chat: Any, emulator_env: dict[str, str], record: str | None
) -> None:
    chat.first()
    cand = chat.candidate()
    add_tag(chat, cand, "dg-00000000")
    if record is not None:
        annotate(chat, TAGS_ANNOTATION, record)
    result = status()
    assert result.exit_code == ExitCode.PASS, result.output
    assert "dg-00000000 (" in result.stdout
    assert "stale, no record" in result.stdout
    assert status("--remove-stale-tags").exit_code == ExitCode.PASS
    assert chat.tags() == {"candidate"}  # the deploy's own tag stays


def test_status_shows_what_the_guard_recorded_and_how_to_undo_a_rejection(
    chat: Any, emulator_env: dict[str, str], check: Any
) -> None:
    base = chat.first()
    failed = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    assert check(failed)[0] == ExitCode.FAIL
    good = chat.candidate(tag="next")
    assert check(good, "--promote")[0] == ExitCode.PASS

    doc = status_json()
    assert doc["serving"] == {good: 100}
    assert doc["last_known_good"] == good
    assert doc["served_before"] == {base: 100}
    assert doc["rejected"] == [failed]
    assert doc["rollback_target"] == base
    assert "before the promotion" in doc["rollback_why"]
    # (the test deploy keeps only serving entries: the older "candidate" tag is gone)
    assert {(t["tag"], t["revision"]) for t in doc["tags"]} == {("next", good)}
    assert all(t["url"].startswith("http") for t in doc["tags"])

    text = status()
    assert text.exit_code == ExitCode.PASS, text.output
    for line in (
        f"serving           {good} 100%",
        f"last known good   {good}",
        f"rejected          {failed}",
        "deploy-guard status --service chat --clear-rejected REV",
        f"rollback goes to  {base}: served 100% before the promotion of {good}",
    ):
        assert line in text.stdout, text.stdout

    cleared = status("--clear-rejected", failed, "--remove-stale-tags")
    assert cleared.exit_code == ExitCode.PASS, cleared.output
    assert f"changed: {failed} is no longer recorded as rejected" in cleared.stdout
    assert "nothing changed" not in cleared.stdout  # something did
    assert "no stale temporary tag to remove" in cleared.stdout
    assert status_json()["rejected"] == []
    assert chat.serving() == {good: 100}  # traffic untouched
    again = status("--clear-rejected", failed)
    assert again.exit_code == ExitCode.USAGE
    assert "is not on chat's rejected list" in again.stderr


def test_status_of_a_service_that_does_not_exist_says_so(
    emulator: Any, emulator_env: dict[str, str]
) -> None:
    result = status(service="chta")
    assert result.exit_code == ExitCode.USAGE
    assert (
        f"service chta does not exist in project {emulator.project} region {emulator.region}"
        in result.stderr
    )


def test_a_manual_rollback_away_from_a_revision_that_passed_says_it_is_now_rejected(
    chat: Any, emulator_env: dict[str, str], check: Any
) -> None:
    base = chat.first()
    good = chat.candidate()
    assert check(good, "--promote")[0] == ExitCode.PASS
    result = CliRunner().invoke(cli, ["rollback", "--service", "chat"])
    assert result.exit_code == ExitCode.PASS, result.output
    assert f"{good} had passed its check and is now on the rejected list" in result.stdout
    assert f"--clear-rejected {good}" in result.stdout
    assert status_json()["rejected"] == [good]
    assert chat.serving() == {base: 100}


def test_after_a_rollback_status_says_a_second_one_changes_nothing(
    chat: Any, emulator_env: dict[str, str], check: Any
) -> None:
    """What status says rollback would do is what rollback does: nothing, once it went back."""
    base = chat.first()
    good = chat.candidate()
    assert check(good, "--promote")[0] == ExitCode.PASS
    assert CliRunner().invoke(cli, ["rollback", "--service", "chat"]).exit_code == ExitCode.PASS
    doc = status_json()
    assert doc["last_known_good"] == base
    assert doc["rollback_target"] is None
    assert doc["rollback_why"].startswith(f"already rolled back to {base} (100 %)")
    again = CliRunner().invoke(cli, ["rollback", "--service", "chat"])
    assert again.exit_code == ExitCode.PASS, again.output
    assert "nothing changed" in again.stdout


def test_with_nowhere_to_go_status_never_denies_the_recorded_last_known_good(
    chat: Any, emulator_env: dict[str, str], check: Any
) -> None:
    base = chat.first()
    assert check(base, "--promote")[0] == ExitCode.PASS  # the only revision: recorded as good
    doc = status_json()
    assert doc["last_known_good"] == base
    assert doc["rollback_target"] is None
    assert f"the last known good ({base}) is the one serving" in doc["rollback_why"]
    assert "none is recorded as last known good" not in doc["rollback_why"]


@pytest.mark.parametrize("outcome", ["promoted", "rolled_back"])
def test_the_write_that_drops_the_temporary_tag_drops_its_record(
    chat: Any, emulator_env: dict[str, str], check: Any, outcome: str
) -> None:
    chat.first()
    if outcome == "promoted":
        cand = chat.candidate(tag=None)
        code, report = check(cand, "--promote")
    else:  # a canary with no tag: the rollback write leaves the tag out
        cand = chat.candidate({"CHAT_HEALTH_STATUS": "500"}, tag=None, percent=10)
        code, report = check(cand)
    assert report["action"] == outcome, report
    assert report["temporary_tag"].startswith("dg-")
    assert temp_tags(chat) == set()
    assert json.loads(chat.get().annotations[TAGS_ANNOTATION]) == {}
    assert code in (ExitCode.PASS, ExitCode.FAIL)


# --- a rollout recorded on the service ---------------------------------------------


def _rollout(cand: str, before: dict[str, int], *, live: bool) -> Any:
    from deploy_guard.gcp.rollouts import RolloutRecord

    now = datetime.now(UTC)
    return RolloutRecord(
        revision=cand,
        before=before,
        step=2,
        percent=50,
        steps=((10, 120.0), (50, 300.0), (90, 60.0)),
        by="builder-7:4242",
        started=now - timedelta(minutes=10),
        until=now + timedelta(minutes=5) if live else now - timedelta(minutes=1),
    )


@pytest.mark.parametrize("live", [True, False], ids=["running", "stopped"])
def test_status_reports_a_rollout_running_or_stopped_halfway(
    chat: Any, emulator_env: dict[str, str], live: bool
) -> None:
    from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION, encode
    from deploy_guard.gcp.tags import rfc3339

    base = chat.first()
    cand = chat.candidate(percent=50)
    record = _rollout(cand, {base: 100}, live=live)
    annotate(chat, ROLLOUT_ANNOTATION, encode(record))

    doc = status_json()
    shown = doc["rollout"]
    assert shown["state"] == ("running" if live else "stopped")
    assert (shown["revision"], shown["step"], shown["percent"]) == (cand, 2, 50)
    assert shown["steps"] == [
        {"percent": 10, "duration_s": 120.0},
        {"percent": 50, "duration_s": 300.0},
        {"percent": 90, "duration_s": 60.0},
    ]
    assert shown["before"] == {base: 100}
    assert (shown["by"], shown["until"]) == ("builder-7:4242", rfc3339(record.until))
    assert shown["stopped"] is None
    # where `rollback` goes: the split from before the rollout
    assert doc["rollback_split"] == {base: 100}
    assert doc["rollback_target"] == base
    assert doc["rollback_why"].startswith(f"the split from before the rollout of {cand}")

    text = status()
    assert text.exit_code == ExitCode.PASS, text.output
    if live:
        assert (
            f"rollout of {cand} in progress: step 2/3 at 50 %, by builder-7:4242, since "
            f"{rfc3339(record.started)}"
        ) in text.stdout
        assert "refused while the rollout runs: stop it first, or pass --force" in text.stdout
    else:
        assert (
            f"a rollout of {cand} stopped at step 2/3 (50 %) and its process is gone; continue "
            "with `deploy-guard rollout --resume --service chat` or undo it with "
            "`deploy-guard rollback --service chat`"
        ) in text.stdout
    assert f"rollback goes to  {base}: the split from before the rollout of {cand}" in text.stdout


def test_status_after_a_rollout_was_undone_shows_no_rollout_and_the_split_put_back(
    chat: Any, emulator_env: dict[str, str]
) -> None:
    from deploy_guard.gcp.rollouts import encode
    from deploy_guard.gcp.traffic import step_split
    from gate.test_rollback_e2e import _at_step

    a = chat.first()
    b = chat.candidate(tag=None, percent=30)
    cand = chat.candidate()
    # the rollout died at its step 2 (50 %): that split and its record, in one write
    record = encode(_rollout(cand, {a: 70, b: 30}, live=False))
    _at_step(chat, step_split({a: 70, b: 30}, cand, 50), record)
    assert status_json()["rollback_split"] == {a: 70, b: 30}
    assert status_json()["rollback_target"] is None  # several revisions: no single target
    assert f"rollback goes to  {a} 70%, {b} 30%: the split" in status().stdout
    undone = CliRunner().invoke(cli, ["rollback", "--service", "chat"])
    assert undone.exit_code == ExitCode.PASS, undone.output
    doc = status_json()
    assert doc["rollout"] is None
    assert doc["serving"] == {a: 70, b: 30}
    assert doc["rejected"] == [cand]
    assert doc["rollback_why"].startswith(f"already rolled back to {a} 70%, {b} 30%")
    assert f"last rollback to  {a} 70%, {b} 30%" in status().stdout


def test_status_reports_an_unreadable_rollout_record(
    chat: Any, emulator_env: dict[str, str]
) -> None:
    from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION

    chat.first()
    annotate(chat, ROLLOUT_ANNOTATION, '{"revision": 7}')
    doc = status_json()
    shown = doc["rollout"]
    assert shown["state"] == "unreadable"
    assert "unreadable deploy-guard.dev/rollout annotation" in shown["error"]
    assert "--to-revision REV" in shown["text"]
    assert doc["rollback_target"] is None
    assert "needs --to-revision REV" in doc["rollback_why"]
    text = status()
    assert text.exit_code == ExitCode.PASS, text.output
    assert "rollout           unreadable deploy-guard.dev/rollout annotation" in text.stdout


def test_status_without_a_rollout_says_none(chat: Any, emulator_env: dict[str, str]) -> None:
    base = chat.first()
    doc = status_json()
    assert doc["rollout"] is None
    assert "rollout " not in status().stdout
    assert doc["rollback_split"] == {}  # nowhere to go: the only revision serves
    assert doc["serving"] == {base: 100}


def test_status_says_why_a_rollout_stopped_on_purpose(
    chat: Any, emulator_env: dict[str, str]
) -> None:
    """A held rollout marks its record stopped (``until`` now) and says why."""
    from dataclasses import replace

    from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION, encode

    base = chat.first()
    cand = chat.candidate(percent=50)
    record = replace(
        _rollout(cand, {base: 100}, live=False), extra={"stopped": "inconclusive: held"}
    )
    annotate(chat, ROLLOUT_ANNOTATION, encode(record))
    shown = status_json()["rollout"]
    assert (shown["state"], shown["stopped"]) == ("stopped", "inconclusive: held")
    assert shown["text"].endswith("; it said why it stopped: inconclusive: held")
