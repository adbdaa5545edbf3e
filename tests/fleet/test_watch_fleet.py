"""``watch --fleet``: a watcher takes its entry of the same fleet file a check does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.clients import Clients
from emulators import running_emulator
from fleets import Services, fleet_file


def test_a_watch_task_watches_its_entry_and_polls_at_most_once_a_turn(
    tmp_path: Path, fast_polling: Any
) -> None:
    with running_emulator() as emu:
        clients = Clients(host=emu.address)
        try:
            Services(emu, clients, fast_polling).deploy_all([{}, {}])
            fleet = fleet_file(tmp_path / "fleet.yaml", ["svc-0", "svc-1"], quota="60/min")
            report = tmp_path / "watch.json"
            env = {
                "DEPLOY_GUARD_EMULATOR_HOST": emu.address,
                "GOOGLE_CLOUD_PROJECT": emu.project,
                "CLOUDSDK_RUN_REGION": emu.region,
                "DEPLOY_GUARD_LOG_FORMAT": "json",
                "CLOUD_RUN_TASK_INDEX": "1",
                "CLOUD_RUN_TASK_COUNT": "2",
            }
            args = ["watch", "--fleet", str(fleet), "--for", "2s", "--report", str(report)]
            args += ["--log-interval", "0.5s"]
            result = CliRunner().invoke(cli, args, env=env)
        finally:
            clients.close()
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.PASS, result.output
    assert doc["service"] == "svc-1"
    assert doc["policies"] == ["fleet-chat"]
    (note,) = [n for n in doc["notes"] if n.startswith("fleet ")]
    # two guards share 30 reads a minute: a turn is 4 s, longer than --log-interval's 0.5 s
    assert f"entry 1 of 2: svc-1 ({emu.region})" in note
    assert "one log read every 4 s at most" in note
