"""``deploy-guard emulator --gcloud-env FILE``: '. FILE' in a shell, and gcloud just works.

The emulator runs as the user would start it (a child process); the shell that
sources the file has nothing else (a clean environment, ``HOME`` an empty
directory), so the test shows the file is all gcloud needs and that the user's
own gcloud configuration is never created or changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gcloud_runner import GCLOUD


def first_line(proc: subprocess.Popen[str], within_s: float = 30.0) -> str:
    box: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(within_s)
    if not box:
        proc.kill()
        raise AssertionError(f"no line on stdout within {within_s} s")
    return box[0]


def test_the_gcloud_env_file_points_gcloud_at_the_emulator_and_nowhere_else(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env_file = tmp_path / "emu.env"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy_guard", "emulator", "--gcloud-env", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.log").open("w"),
        text=True,
        env={**os.environ, "HOME": str(home), "DEPLOY_GUARD_LOG_FORMAT": "json"},
    )
    try:
        line = first_line(proc)
        # the file is complete before the first line: a script that waited can source it
        exported = {}
        for entry in env_file.read_text().splitlines():
            if entry.startswith("export "):
                name, _, value = entry.removeprefix("export ").partition("=")
                exported[name] = value
        assert line == f"DEPLOY_GUARD_EMULATOR_HOST={exported['DEPLOY_GUARD_EMULATOR_HOST']}\n"
        rest = f"{exported['CLOUDSDK_PROXY_ADDRESS']}:{exported['CLOUDSDK_PROXY_PORT']}"
        assert exported["CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN"] == f"http://{rest}/"
        assert exported["CLOUDSDK_PROXY_ADDRESS"] == "127.0.0.1"  # loopback only
        assert exported["CLOUDSDK_AUTH_DISABLE_CREDENTIALS"] == "true"
        config_dir = Path(exported["CLOUDSDK_CONFIG"])
        assert config_dir.is_dir()
        assert not str(config_dir).startswith(str(home))
        if GCLOUD is not None:
            shell = subprocess.run(
                ["bash", "-c", f'. "{env_file}" && gcloud run services list --format json'],
                env={"PATH": os.environ["PATH"], "HOME": str(home)},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert shell.returncode == 0, shell.stderr
            assert json.loads(shell.stdout) == []
            assert not (home / ".config").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0
    assert not config_dir.exists(), "the private gcloud config dir outlived the emulator"
    if GCLOUD is None:
        pytest.skip("gcloud is not installed (not on PATH): the file was checked, not used")


def test_a_gcloud_env_file_it_cannot_write_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "emu.env"
    done = subprocess.run(
        [sys.executable, "-m", "deploy_guard", "emulator", "--gcloud-env", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where the config dir would go
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot write --gcloud-env {target}" in done.stderr
    assert done.stdout == ""  # never announced: nothing to connect to
    assert list(tmp_path.glob("deploy-guard-gcloud-*")) == []  # its config dir is gone too
