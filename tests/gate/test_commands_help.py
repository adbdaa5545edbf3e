"""``check``, ``rollback`` and ``status --help`` teach, and pay for no Google library."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli


@pytest.mark.parametrize("command", ["check", "rollback", "status"])
def test_help_teaches_and_imports_no_google_library(command: str) -> None:
    code = (
        "import sys\n"
        "from deploy_guard.cli import main\n"
        "try:\n"
        f"    main(['{command}', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED=' + ','.join(sorted(m for m in sys.modules if m.startswith(('google', "
        "'grpc')))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.rsplit("LOADED=", 1)[1].strip() == ""
    assert "Exit codes" in out
    assert "Examples" in out


def test_check_help_names_what_each_option_takes() -> None:
    """Durations read DURATION (10s, 5m), never TEXT."""
    out = subprocess.run(
        [sys.executable, "-m", "deploy_guard", "check", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert " TEXT " not in out
    for option in ("--timeout", "--ready-timeout", "--log-interval", "--api-retry"):
        assert f"{option} DURATION" in out


@pytest.mark.parametrize("command", [["rollback"], ["status"], ["probe"], ["emulator"]])
def test_every_option_says_what_it_takes_never_text(command: list[str]) -> None:
    out = CliRunner().invoke(cli, [*command, "--help"], terminal_width=100).output
    assert " TEXT " not in out, out
