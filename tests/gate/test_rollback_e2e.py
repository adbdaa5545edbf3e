"""``deploy-guard rollback``: where traffic goes, idempotence, clear refusals."""

from __future__ import annotations

from typing import Any

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
