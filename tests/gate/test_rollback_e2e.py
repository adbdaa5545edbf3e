"""``deploy-guard rollback``: where traffic goes, idempotence, clear refusals."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode

UPDATE = "/google.cloud.run.v2.Services/UpdateService"


def rollback(*args: str) -> Any:
    return CliRunner().invoke(cli, ["rollback", "--service", "chat", *args])


@pytest.fixture
def promoted(chat: Any, check: Any) -> tuple[str, str]:
    """Base, then a candidate promoted to 100 % by a passing check."""
    base = chat.first()
    cand = chat.candidate()
    code, _ = check(cand, "--promote")
    assert code == ExitCode.PASS
    return base, cand


def test_rollback_twice_is_idempotent(
    chat: Any, emulator: Any, emulator_env: Any, promoted: tuple[str, str]
) -> None:
    base, _cand = promoted
    first = rollback("--to-revision", base)
    assert first.exit_code == ExitCode.PASS, first.output
    assert chat.serving() == {base: 100}
    writes = emulator.faults.count(UPDATE)
    second = rollback("--to-revision", base)
    assert second.exit_code == ExitCode.PASS, second.output
    assert "nothing changed" in second.output
    assert emulator.faults.count(UPDATE) == writes


def test_rollback_without_a_revision_goes_to_the_last_known_good(
    chat: Any, emulator_env: Any, promoted: tuple[str, str]
) -> None:
    _base, good = promoted  # the passing check recorded it as last known good
    bad = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, tag=None, percent=100)
    assert chat.serving() == {bad: 100}
    result = rollback()
    assert result.exit_code == ExitCode.PASS, result.output
    assert chat.serving() == {good: 100}


def test_rollback_right_after_a_promotion_goes_back_to_the_revision_before_it(
    chat: Any, emulator: Any, emulator_env: Any, promoted: tuple[str, str]
) -> None:
    """The promoted revision is the last known good and serves 100 %: back means away from it."""
    base, promoted_rev = promoted
    assert chat.serving() == {promoted_rev: 100}
    result = rollback()
    assert result.exit_code == ExitCode.PASS, result.output
    assert chat.serving() == {base: 100}
    # a person rejected it: neither a second run nor a later deploy brings it back
    annotations = chat.get().annotations
    assert annotations["deploy-guard.dev/last-known-good"] == base
    writes = emulator.faults.count(UPDATE)
    again = rollback()
    assert again.exit_code == ExitCode.PASS, again.output
    assert "nothing changed" in again.output
    assert emulator.faults.count(UPDATE) == writes
    later = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, tag=None, percent=100)
    assert chat.serving() == {later: 100}
    assert rollback().exit_code == ExitCode.PASS
    assert chat.serving() == {base: 100}


def test_rollback_after_a_promotion_skips_a_candidate_that_failed_in_between(
    chat: Any, check: Any, emulator_env: Any
) -> None:
    """base, a candidate that failed its check (Ready, never served), a promoted one:
    back means to base, the revision that served before the promotion."""
    base = chat.first()
    failed = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    code, _ = check(failed)
    assert code == ExitCode.FAIL
    good = chat.candidate()
    code, _ = check(good, "--promote")
    assert code == ExitCode.PASS
    assert chat.get().annotations["deploy-guard.dev/served-before"] == f"{base}=100"
    result = rollback()
    assert result.exit_code == ExitCode.PASS, result.output
    assert chat.serving() == {base: 100}


def test_a_check_rolling_back_a_full_candidate_never_picks_one_that_failed_before(
    chat: Any, check: Any, emulator_env: Any
) -> None:
    """base; a candidate that failed with no traffic; then one deployed with all of it, failing."""
    base = chat.first()
    failed = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    assert check(failed)[0] == ExitCode.FAIL
    assert chat.get().annotations["deploy-guard.dev/rejected"] == failed
    worse = chat.candidate({"CHAT_HEALTH_STATUS": "503"}, tag="again", percent=100)
    assert chat.serving() == {worse: 100}
    code, report = check(worse)
    assert code == ExitCode.FAIL, report
    assert report["action"] == "rolled_back"
    assert chat.serving() == {base: 100}  # not the newer revision that failed its own check
    assert chat.get().annotations["deploy-guard.dev/rejected"] == f"{failed},{worse}"


def test_promoting_the_serving_revision_again_keeps_where_rollback_goes(
    chat: Any, check: Any, emulator_env: Any
) -> None:
    """A retried pipeline step promotes the same revision twice: rollback still goes to base."""
    base = chat.first()
    failed = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    assert check(failed)[0] == ExitCode.FAIL
    good = chat.candidate()
    assert check(good, "--promote")[0] == ExitCode.PASS
    assert check(good, "--promote")[0] == ExitCode.PASS  # the retry
    assert chat.get().annotations["deploy-guard.dev/served-before"] == f"{base}=100"
    result = rollback()
    assert result.exit_code == ExitCode.PASS, result.output
    assert chat.serving() == {base: 100}
    assert good in chat.get().annotations["deploy-guard.dev/rejected"].split(",")


def _pin(chat: Any, revision: str) -> None:
    """Someone sends 100 % to ``revision`` by hand (not through deploy-guard)."""
    from google.cloud import run_v2

    svc = chat.get()
    svc.traffic = [
        run_v2.TrafficTarget(
            type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
            revision=revision,
            percent=100,
        )
    ]
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)


def test_a_rejected_revision_put_back_by_hand_still_bounds_what_is_older(
    chat: Any, check: Any, emulator_env: Any
) -> None:
    """B failed, a person pinned it anyway, D came later unchecked: back means A, not D."""
    base = chat.first()
    rejected_rev = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    assert check(rejected_rev)[0] == ExitCode.FAIL
    _pin(chat, rejected_rev)
    newer = chat.candidate()  # no traffic, never checked
    result = rollback("--dry-run")
    assert result.exit_code == ExitCode.PASS, result.output
    assert f"to {base} 100%" in result.output
    assert newer not in result.output.split("to ")[-1]


def test_naming_a_rejected_revision_that_already_serves_clears_it(
    chat: Any, check: Any, emulator_env: Any
) -> None:
    chat.first()
    rejected_rev = chat.candidate({"CHAT_HEALTH_STATUS": "500"})
    assert check(rejected_rev)[0] == ExitCode.FAIL
    _pin(chat, rejected_rev)
    result = rollback("--to-revision", rejected_rev)
    assert result.exit_code == ExitCode.PASS, result.output
    assert "no longer recorded as rejected" in result.output
    assert rejected_rev not in chat.get().annotations.get("deploy-guard.dev/rejected", "")


def test_rollback_dry_run_changes_nothing(
    chat: Any, emulator_env: Any, promoted: tuple[str, str]
) -> None:
    base, cand = promoted
    result = rollback("--to-revision", base, "--dry-run")
    assert result.exit_code == ExitCode.PASS
    assert "would move" in result.output
    assert chat.serving() == {cand: 100}


def test_rollback_to_a_missing_revision_is_exit_2(chat: Any, emulator_env: Any) -> None:
    chat.first()
    result = rollback("--to-revision", "chat-00042-nop")
    assert result.exit_code == ExitCode.USAGE
    assert "chat-00042-nop does not exist" in result.output


def test_rollback_refuses_a_revision_that_is_not_ready(chat: Any, emulator_env: Any) -> None:
    import sys

    base = chat.first()
    broken = chat.candidate(command=[sys.executable, "-c", "raise SystemExit(3)"])
    result = rollback("--to-revision", broken)
    assert result.exit_code == ExitCode.USAGE
    assert "not Ready" in result.output
    assert chat.serving() == {base: 100}


def test_rollback_to_the_previous_revision_twice_is_idempotent(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    """No check ever passed (no last known good): the fallback target must not drift."""
    older = chat.first()
    base = chat.candidate(tag=None, percent=100)
    bad = chat.candidate(tag=None, percent=100)
    assert chat.serving() == {bad: 100}
    first = rollback()
    assert first.exit_code == ExitCode.PASS, first.output
    assert chat.serving() == {base: 100}
    writes = emulator.faults.count(UPDATE)
    second = rollback()
    assert second.exit_code == ExitCode.PASS, second.output
    assert "nothing changed" in second.output
    assert chat.serving() == {base: 100}  # not on to `older`
    assert emulator.faults.count(UPDATE) == writes
    assert older != base


def test_rollback_with_nothing_older_says_what_serves_and_how_to_choose(
    chat: Any, emulator_env: Any
) -> None:
    base = chat.first()
    chat.candidate({"CHAT_FAIL_1011_AFTER": "1"})  # never took traffic: nothing to undo
    result = rollback()
    assert result.exit_code == ExitCode.USAGE
    assert f"{base} 100% serves now" in result.output
    assert "pass --to-revision REV to choose one" in result.output
    assert chat.serving() == {base: 100}


def test_with_nowhere_to_go_rollback_says_how_to_allow_a_rejected_revision_again(
    chat: Any, emulator_env: Any
) -> None:
    base = chat.first()
    later = chat.candidate(tag=None, percent=100)
    svc = chat.get()
    svc.annotations["deploy-guard.dev/rejected"] = base  # a person once rolled back from it
    chat.clients.services().update_service(service=svc).result(timeout=30, polling=chat.polling)
    result = rollback()
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"{later} 100% serves now" in result.stderr
    assert f"({base} recorded as rejected: `deploy-guard status --service chat" in result.stderr
    assert "--clear-rejected REV` takes one off the list" in result.stderr


# --- a rollout recorded on the service ---------------------------------------------

STEPS = ((10, 120.0), (50, 300.0), (90, 60.0))


def _record(cand: str, before: dict[str, int], *, live: bool, step: int = 2) -> Any:
    from datetime import UTC, datetime, timedelta

    from deploy_guard.gcp.rollouts import RolloutRecord

    now = datetime.now(UTC)
    return RolloutRecord(
        revision=cand,
        before=before,
        step=step,
        percent=STEPS[step - 1][0],
        steps=STEPS,
        by="builder-7:4242",
        started=now - timedelta(minutes=10),
        until=now + timedelta(minutes=5) if live else now - timedelta(minutes=1),
    )


def _at_step(chat: Any, split: dict[str, int], value: str) -> None:
    """What a rollout's step write leaves: the split pinned by name and its record, one write."""
    from google.cloud import run_v2

    from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION

    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc = chat.get()
    tags = [t for t in svc.traffic if t.tag]  # the deploy's `candidate` tag stays at 0 %
    for t in tags:
        t.percent = 0
    svc.traffic = [
        *(run_v2.TrafficTarget(type_=kind, revision=r, percent=p) for r, p in split.items()),
        *tags,
    ]
    svc.annotations[ROLLOUT_ANNOTATION] = value
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)


def _rollout_record(chat: Any) -> Any:
    from deploy_guard.gcp.rollouts import current

    return current(dict(chat.get().annotations))


@pytest.mark.fault(
    "traffic",
    "`deploy-guard rollback` after a rollout's process died at a step",
    "one write: the pre-rollout split back, candidate rejected, rollout record removed",
)
def test_rollback_undoes_a_rollout_whose_process_died_in_one_write(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    from deploy_guard.gcp.rollouts import encode

    base = chat.first()
    cand = chat.candidate()
    _at_step(chat, {base: 50, cand: 50}, encode(_record(cand, {base: 100}, live=False)))
    writes = emulator.faults.count(UPDATE)
    result = rollback()
    assert result.exit_code == ExitCode.PASS, result.output
    assert emulator.faults.count(UPDATE) == writes + 1  # traffic and annotations together
    assert chat.serving() == {base: 100}
    annotations = chat.get().annotations
    assert _rollout_record(chat) is None
    assert annotations["deploy-guard.dev/rejected"] == cand
    assert annotations["deploy-guard.dev/rolled-back-to"] == base
    assert "candidate" in chat.tags()  # the deploy's tag is kept, at 0 %
    assert result.stdout.strip() == (
        f"chat: traffic now {base} 100% (was {base} 50%, {cand} 50%): the split from before "
        f"the rollout of {cand} (at step 2/3, 50 %); {cand} recorded as rejected and the "
        "rollout record removed"
    )
    again = rollback()
    assert again.exit_code == ExitCode.PASS, again.output
    assert f"already rolled back to {base} (100 %); nothing changed" in again.stdout
    assert emulator.faults.count(UPDATE) == writes + 1


def test_rollback_puts_back_a_split_of_several_revisions_without_the_candidate(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    """A canary of the candidate served before the rollout: left out, 60:20 becomes 75:25."""
    from deploy_guard.gcp.rollouts import encode
    from deploy_guard.gcp.traffic import step_split

    a = chat.first()
    b = chat.candidate(tag=None, percent=20)
    cand = chat.candidate()
    before = {a: 60, b: 20, cand: 20}
    at_step = step_split(before, cand, 50)  # step 2 of STEPS: 50 % on the candidate
    _at_step(chat, at_step, encode(_record(cand, before, live=False)))
    dry = rollback("--dry-run")
    assert dry.exit_code == ExitCode.PASS, dry.output
    assert f"to {a} 75%, {b} 25% (the split before it)" in dry.stdout
    assert f"(without {cand}, which had 20% before it)" in dry.stdout
    assert chat.serving() == at_step  # a dry run changes nothing
    assert _rollout_record(chat) is not None

    result = rollback()
    assert result.exit_code == ExitCode.PASS, result.output
    assert chat.serving() == {a: 75, b: 25}
    assert _rollout_record(chat) is None
    assert chat.get().annotations["deploy-guard.dev/rejected"] == cand
    # a second run sees the split it put back: nothing further back
    writes = emulator.faults.count(UPDATE)
    again = rollback()
    assert again.exit_code == ExitCode.PASS, again.output
    assert f"already rolled back to {a} 75%, {b} 25%; nothing changed" in again.stdout
    assert emulator.faults.count(UPDATE) == writes


def test_a_running_rollout_is_refused_unless_forced(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    from deploy_guard.gcp.rollouts import encode

    base = chat.first()
    cand = chat.candidate()
    record = _record(cand, {base: 100}, live=True, step=1)
    _at_step(chat, {base: 90, cand: 10}, encode(record))
    writes = emulator.faults.count(UPDATE)
    for args in ((), ("--to-revision", base)):
        refused = rollback(*args)
        assert refused.exit_code == ExitCode.ACTION_FAILED, refused.output
        assert "a rollout is running (by builder-7:4242 until " in refused.stderr
        assert "); stop it first" in refused.stderr
        assert "--force" in refused.stderr
    assert emulator.faults.count(UPDATE) == writes  # nothing written
    assert chat.serving() == {base: 90, cand: 10}

    forced = rollback("--force")
    assert forced.exit_code == ExitCode.PASS, forced.output
    assert chat.serving() == {base: 100}
    assert _rollout_record(chat) is None
    assert "at step 1/3, 10 %" in forced.stdout


def test_rollback_to_a_named_revision_ends_a_stopped_rollout_too(
    chat: Any, emulator_env: Any
) -> None:
    from deploy_guard.gcp.rollouts import encode

    base = chat.first()
    older = chat.candidate()
    cand = chat.candidate()
    _at_step(chat, {older: 50, cand: 50}, encode(_record(cand, {older: 100}, live=False)))
    result = rollback("--to-revision", base)
    assert result.exit_code == ExitCode.PASS, result.output
    assert chat.serving() == {base: 100}
    assert _rollout_record(chat) is None
    assert set(chat.get().annotations["deploy-guard.dev/rejected"].split(",")) == {older, cand}
    assert f"ended the rollout of {cand} (at step 2/3, 50 %), {cand} recorded as rejected" in (
        result.stdout
    )


def test_an_unreadable_rollout_record_needs_a_named_revision(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    base = chat.first()
    cand = chat.candidate()
    _at_step(chat, {base: 50, cand: 50}, '{"revision": "chat-0000')
    writes = emulator.faults.count(UPDATE)
    refused = rollback()
    assert refused.exit_code == ExitCode.ACTION_FAILED, refused.output
    assert "rollout record cannot be read" in refused.stderr
    assert "--to-revision REV" in refused.stderr
    assert emulator.faults.count(UPDATE) == writes
    named = rollback("--to-revision", base)
    assert named.exit_code == ExitCode.PASS, named.output
    assert "removed the unreadable rollout record" in named.stdout
    assert chat.serving() == {base: 100}
    assert _rollout_record(chat) is None


def test_a_rollout_whose_split_is_already_back_loses_only_its_record(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    """Someone put the traffic back by hand: one annotations write, no traffic write."""
    from deploy_guard.gcp.rollouts import encode

    base = chat.first()
    cand = chat.candidate()
    _at_step(chat, {base: 100}, encode(_record(cand, {base: 100}, live=False)))
    result = rollback()
    assert result.exit_code == ExitCode.PASS, result.output
    assert "already serves" in result.stdout
    assert _rollout_record(chat) is None
    assert chat.get().annotations["deploy-guard.dev/rejected"] == cand
    assert chat.serving() == {base: 100}


@pytest.mark.fault(
    "traffic",
    "`deploy-guard rollback` of a stopped rollout: the write is refused or fails",
    "exit 4 with the check's words (stale: nothing overwritten; failed: the gcloud to run)",
)
@pytest.mark.parametrize("code", [grpc.StatusCode.ABORTED, grpc.StatusCode.PERMISSION_DENIED])
def test_a_refused_or_failed_undo_says_so_like_a_checks_rollback(
    chat: Any, emulator: Any, emulator_env: Any, code: grpc.StatusCode
) -> None:
    from deploy_guard.gcp.rollouts import encode

    base = chat.first()
    cand = chat.candidate()
    _at_step(chat, {base: 50, cand: 50}, encode(_record(cand, {base: 100}, live=False)))
    emulator.faults.fail("UpdateService", code, nth=1)
    result = rollback()
    assert result.exit_code == ExitCode.ACTION_FAILED, result.output
    if code == grpc.StatusCode.ABORTED:
        assert "refused deploy-guard's change as stale" in result.stderr
    else:  # the executor's message: how to do it by hand
        assert "rollback failed: " in result.stderr
        assert f"--to-revisions {base}=100" in result.stderr
    assert chat.serving() == {base: 50, cand: 50}
    assert _rollout_record(chat) is not None  # nothing written: still there to undo


@pytest.mark.fault(
    "signals",
    "a real `deploy-guard rollout` SIGKILLed mid-step (no clean-up at all)",
    "status shows it running until its record expires; rollback refuses it, --force undoes it",
)
def test_a_killed_rollout_is_reported_and_undone_with_force(
    chat: Any, emulator: Any, emulator_env: Any, tmp_path: Any
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from waiting import wait_until

    policy = Path(__file__).parent / "policies" / "chat-rollout.yaml"
    base = chat.first()
    cand = chat.candidate()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "deploy_guard", "rollout", "--revision", cand),
            *("--policy", str(policy), "--steps", "10:60s,50:60s", "--log-interval", "0.5s"),
        ],
        env={**os.environ, **emulator_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _rollout_record(chat) is not None or proc.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert chat.serving() == {base: 90, cand: 10}

    shown = json.loads(CliRunner().invoke(cli, ["status", "--service", "chat", "--json"]).stdout)[
        "rollout"
    ]
    assert (shown["state"], shown["revision"], shown["step"]) == ("running", cand, 1)
    assert str(proc.pid) in shown["by"]
    assert shown["before"] == {base: 100}

    writes = emulator.faults.count(UPDATE)
    refused = rollback()
    assert refused.exit_code == ExitCode.ACTION_FAILED, refused.output
    assert f"a rollout is running (by {shown['by']} until {shown['until']}); stop it" in (
        refused.stderr
    )
    assert emulator.faults.count(UPDATE) == writes
    forced = rollback("--force")
    assert forced.exit_code == ExitCode.PASS, forced.output
    assert chat.serving() == {base: 100}
    assert _rollout_record(chat) is None
    assert cand in chat.get().annotations["deploy-guard.dev/rejected"].split(",")


@pytest.mark.fault(
    "traffic",
    "`deploy-guard rollback` of a dead rollout after someone else changed the traffic",
    "refused (exit 4), nothing written: the record's split is not put over their change",
)
def test_a_dead_rollout_is_not_undone_over_a_later_change(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    from deploy_guard.gcp.rollouts import encode

    base = chat.first()
    cand = chat.candidate()
    # the rollout died at step 2 (50 %); then someone moved traffic by hand to 70/30
    _at_step(chat, {base: 70, cand: 30}, encode(_record(cand, {base: 100}, live=False)))
    writes = emulator.faults.count(UPDATE)
    result = rollback()
    assert result.exit_code == ExitCode.ACTION_FAILED, result.output
    assert "someone changed its traffic since; nothing was changed" in result.output
    assert emulator.faults.count(UPDATE) == writes
    assert chat.serving() == {base: 70, cand: 30}
