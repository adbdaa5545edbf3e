"""The top-level CLI: help that teaches, lazy imports, exit-code mapping."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from deploy_guard.cli import COMMANDS, cli
from deploy_guard.exitcodes import ExitCode


def test_help_lists_every_command_and_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
    assert "inconclusive" in result.output
    assert "4  an action failed or was refused" in result.output


def test_help_imports_no_google_library_or_subcommand() -> None:
    code = (
        "import sys\n"
        "from deploy_guard.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google', 'grpc',"
        " 'deploy_guard.commands.', 'websockets', 'httpx', 'aiohttp')))\n"
        "print('LOADED=' + ','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = out.rsplit("LOADED=", 1)[1].strip()
    assert loaded == ""


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == ExitCode.USAGE


def test_exit_codes_are_the_documented_interface() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4]


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "deploy-guard" in result.output


def test_console_script_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy_guard", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert "Cloud Run" in proc.stdout
    # --help is not an event stream: nothing is logged.
    assert proc.stderr == ""


def test_every_help_text_renders_cleanly() -> None:
    """click's \\b marker only works on a paragraph of its own; elsewhere it prints a raw ^H."""
    for args in ([], *([name] for name in COMMANDS), ["policy", "validate"], ["policy", "schema"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (args, result.output)
        assert "\b" not in result.output, args


def test_missing_project_or_region_is_named_in_plain_grammar() -> None:
    from deploy_guard.commands import missing_project_region

    assert missing_project_region("p", "r") is None
    assert missing_project_region(None, "r") == (
        "missing --project: pass it, or set GOOGLE_CLOUD_PROJECT"
    )
    assert missing_project_region("p", "") == (
        "missing --region: pass it, or set CLOUDSDK_RUN_REGION"
    )
    assert missing_project_region(None, None) == (
        "missing --project and --region: pass them, or set GOOGLE_CLOUD_PROJECT and "
        "CLOUDSDK_RUN_REGION"
    )


def test_rollback_without_a_project_says_which_flag_is_missing() -> None:
    env = {"GOOGLE_CLOUD_PROJECT": None, "DEPLOY_GUARD_EMULATOR_HOST": None}
    result = CliRunner().invoke(
        cli, ["rollback", "--service", "chat", "--region", "europe-west1"], env=env
    )
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "error: missing --project: pass it, or set GOOGLE_CLOUD_PROJECT\n" in result.output
    assert "Traceback" not in result.output


@pytest.mark.fault(
    "cli", "check --log-interval 0s (or --timeout 0s)", "exit 2 before any API call, says why"
)
@pytest.mark.parametrize(
    ("flags", "emulator", "words"),
    [
        (["--log-interval", "0s"], None, "Cloud Logging allows 60 reads a minute per project"),
        (["--log-interval", "0.5s"], None, "use at least 1s (default 10s)"),
        (["--log-interval", "0s"], "127.0.0.1:1", "use at least 0.1s"),
        (["--timeout", "0s"], None, "the check needs time to gather evidence"),
    ],
)
def test_check_refuses_an_interval_that_would_poll_cloud_logging_in_a_loop(
    flags: list[str], emulator: str | None, words: str
) -> None:
    """A 0s --log-interval made thousands of ListLogEntries calls in one short check."""
    env = {"DEPLOY_GUARD_EMULATOR_HOST": emulator, "GOOGLE_CLOUD_PROJECT": "p"}
    args = ["check", "--revision", "chat-00002-abc", "--region", "r", *flags]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "is too short: " in result.output
    assert words in result.output
