"""No Google credentials: a clear exit 2 that says how to log in, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode

POLICY = Path(__file__).resolve().parents[2] / "policies" / "chat-agent.yaml"


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DEPLOY_GUARD_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no ADC file there
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # and no metadata server to ask
    monkeypatch.setenv("DEPLOY_GUARD_LOG_FORMAT", "json")


@pytest.mark.usefixtures("no_credentials")
def test_check_without_credentials_says_how_to_log_in(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    args = ["check", "--revision", "chat-agent-00002-abc", "--project", "p", "--region", "r"]
    args += ["--policy", str(POLICY), "--report", str(report)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "gcloud auth application-default login" in result.output
    assert "Traceback" not in result.output
    assert "internal error" not in result.output
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == ExitCode.USAGE
    assert "no Google credentials" in doc["error"]


@pytest.mark.usefixtures("no_credentials")
def test_rollback_without_credentials_says_how_to_log_in() -> None:
    args = ["rollback", "--service", "chat-agent", "--project", "p", "--region", "r"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "gcloud auth application-default login" in result.output
