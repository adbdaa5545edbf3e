"""docs/emulator.md's deploy script and by-hand check run verbatim against an emulator."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.clients import Clients

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "emulator.md"


def deploy_script() -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    (script,) = [b for b in blocks if "service_id=" in b]
    return script


@pytest.fixture
def emulator_at_root() -> Iterator[EmulatorThread]:
    """The emulator as the guide starts it: from the repository root."""
    emu = EmulatorThread(startup_timeout=10.0, workdir=str(ROOT))
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def test_the_guides_script_deploys_a_candidate_the_check_then_fails(
    emulator_at_root: EmulatorThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "DEPLOY_GUARD_EMULATOR_HOST": emulator_at_root.address,
        "GOOGLE_CLOUD_PROJECT": "local-project",
        "CLOUDSDK_RUN_REGION": "us-central1",
        "DEPLOY_GUARD_LOG_FORMAT": "json",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    script = tmp_path / "deploy_local.py"
    script.write_text(deploy_script())
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    base = re.search(r"serving: (chat-agent-\d{5}-\w+)", out)
    cand = re.search(r"candidate: (chat-agent-\d{5}-\w+)", out)
    assert base is not None, out
    assert cand is not None, out
    clients = Clients(host=emulator_at_root.address)
    try:
        svc = clients.services().get_service(name=f"{emulator_at_root.parent}/services/chat-agent")
    finally:
        clients.close()
    assert {t.revision: t.percent for t in svc.traffic_statuses if t.percent} == {
        base.group(1): 100
    }
    assert {t.tag for t in svc.traffic_statuses if t.tag} == {"candidate"}
    # the guide's next step, with a short hold so the test stays quick: the 1011 fails it
    policy = tmp_path / "chat.yaml"
    policy.write_text(
        (ROOT / "policies" / "chat-agent.yaml")
        .read_text(encoding="utf-8")
        .replace("hold: 60s", "hold: 9s")
    )
    result = CliRunner().invoke(
        cli, ["check", "--revision", cand.group(1), "--policy", str(policy)]
    )
    assert result.exit_code == ExitCode.FAIL, result.output
    result = CliRunner().invoke(cli, ["rollback", "--service", "chat-agent"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "pass --to-revision REV" in result.output
