"""The example service as a user starts it: bad settings say so, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from probe_helpers import APP_PATH


def start(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(APP_PATH)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_mistyped_switch_is_one_error_line_and_exit_2() -> None:
    done = start(PORT="0", CHAT_SLOW_MS="fast")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    line = json.loads(done.stdout.splitlines()[-1])
    assert line["severity"] == "ERROR"
    assert "bad setting" in line["message"]
    assert "'fast'" in line["message"]


def test_a_port_in_use_says_which_and_what_to_do() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = start(PORT=str(port))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    message = json.loads(done.stdout.splitlines()[-1])["message"]
    assert f"cannot listen on 127.0.0.1:{port}" in message
    assert "pick another PORT" in message
