"""What a person sees on a terminal (a pseudo-terminal here): no torn lines, no log noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_guard.exitcodes import ExitCode

POLICY = str(Path(__file__).parent / "policies" / "chat-hold.yaml")


def test_check_of_an_unknown_revision_reads_as_an_error_once(
    chat: Any, emulator_env: dict[str, str], in_terminal: Any
) -> None:
    chat.first()
    env = {**emulator_env, "DEPLOY_GUARD_LOG_FORMAT": "auto"}
    code, screen = in_terminal("check", "--revision", "chat-00009-zzz", "--policy", POLICY, env=env)
    assert code == ExitCode.USAGE, screen
    assert "ERROR  action=none  exit=2" in screen
    assert "INCONCLUSIVE" not in screen  # nothing was judged: it is not a verdict
    assert screen.count("revision chat-00009-zzz does not exist in service chat") == 1, screen
    assert "rule  kind  status" not in screen  # no empty table
    assert "Traceback" not in screen


def test_rollback_on_a_terminal_prints_its_outcome_without_log_events(
    chat: Any, emulator_env: dict[str, str], in_terminal: Any
) -> None:
    base = chat.first()
    bad = chat.candidate(tag=None, percent=100)
    env = {**emulator_env, "DEPLOY_GUARD_LOG_FORMAT": "auto"}
    code, screen = in_terminal("rollback", "--service", "chat", env=env)
    assert code == ExitCode.PASS, screen
    assert screen.strip() == (
        f"chat: traffic now {base} 100% (was {bad} 100%); "
        f"chose {base}: the newest Ready revision older than {bad}"
    )
    # asked for explicitly, the events are there
    code, screen = in_terminal(
        "--log-level", "info", "rollback", "--service", "chat", "--to-revision", bad, env=env
    )
    assert code == ExitCode.PASS, screen
    assert "rollback_requested" in screen


def test_missing_project_and_region_say_how_to_set_them(
    emulator_env: dict[str, str], in_terminal: Any
) -> None:
    env = {**emulator_env, "GOOGLE_CLOUD_PROJECT": "", "CLOUDSDK_RUN_REGION": ""}
    for args in (
        ("rollback", "--service", "chat"),
        ("check", "--revision", "chat-00002-abc", "--policy", POLICY),
    ):
        code, screen = in_terminal(*args, env=env)
        assert code == ExitCode.USAGE, screen
        assert "missing --project and --region: pass them, or set GOOGLE_CLOUD_PROJECT" in screen
        assert "the local emulator serves --project local-project --region us-central1" in screen
