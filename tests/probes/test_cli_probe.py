"""``deploy-guard probe`` against the example service run as a real process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from probe_helpers import start_chat_process

from deploy_guard.cli import cli
from deploy_guard.commands import probe as probe_command

POLICY = """\
version: 1
name: chat-agent
services: ["chat-agent"]
rules:
  - name: health
    kind: http
    http:
      path: /health
      requests: 4
      concurrency: 2
      expect:
        status: [200]
        json: {"$.status": "ok"}
  - name: chat-golden-path
    kind: websocket
    websocket:
      path: /ws/chat
      scenario:
        - send: {json: {type: message, user_id: "{user}", session_id: "{session}", text: "hi {n}"}}
        - expect: [agent_started, agent_thinking, tool_executing, tool_completed, agent_completed]
          timeout: 3s
      hold: 1500ms
      ping_interval: 500ms
      sessions: 6
      concurrency: 3
      isolation: {field: user_id}
  - name: no-1011-in-logs
    kind: logs
    logs:
      patterns: ["close code 1011"]
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "chat.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def chat_process(request: pytest.FixtureRequest) -> Iterator[str]:
    env = getattr(request, "param", {})
    proc, url = start_chat_process(CHAT_EVENT_DELAY="0.002", **env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--log-format", "json", "probe", *args])
    return result.exit_code, result.output


def test_healthy_service_passes(
    policy_file: Path, chat_process: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_command, "HEARTBEAT_EVERY", 0.2)
    code, out = run("--policy", str(policy_file), "--url", chat_process)
    assert code == 0, out
    assert "chat-golden-path" in out
    assert "verdict: PASS (exit 0: these rules pass)" in out
    assert "no-1011-in-logs" not in out.split("Probe results")[1]  # logs rules are not probes
    # a live view: while sessions are held open (nothing ends for 1.5 s) progress still shows
    progress = out.split("Probe results")[0]
    assert "chat-golden-path: 0 of 6 sessions done, 3 open (each held 1.5s)" in progress
    assert "chat-golden-path: 6 of 6 sessions done, 6 ok, finished" in progress
    assert "stopped early" not in out  # everything ran to the end


@pytest.mark.parametrize("chat_process", [{"CHAT_FAIL_1011_AFTER": "0.4"}], indirect=True)
def test_1011_service_fails_with_exit_1(policy_file: Path, chat_process: str) -> None:
    code, out = run("--policy", str(policy_file), "--url", chat_process)
    assert code == 1, out
    assert "close_code" in out
    assert "during the hold, hold wanted 1.5 s" in out
    assert "verdict: FAIL (exit 1: a fail rule failed)" in out
    assert "stopped early: the verdict can no longer change" in out


def test_one_rule_by_name_and_usage_errors(policy_file: Path, chat_process: str) -> None:
    code, out = run("--policy", str(policy_file), "--url", chat_process, "--rule", "health")
    assert code == 0, out
    assert "chat-golden-path" not in out
    code, out = run("--policy", str(policy_file), "--url", chat_process, "--rule", "nope")
    assert code == 2
    assert "has no rule 'nope'" in out
    code, out = run(
        "--policy", str(policy_file), "--url", chat_process, "--rule", "no-1011-in-logs"
    )
    assert code == 2
    assert "is a logs rule" in out
    code, out = run("--policy", str(policy_file), "--url", "ftp://x")
    assert code == 2


def test_ctrl_c_cancels_the_probes_with_exit_130_and_no_traceback(
    policy_file: Path, chat_process: str
) -> None:
    """A user stopping a long hold gets one line, not a traceback, and no verdict."""
    import signal
    import subprocess
    import sys

    # A background test runner may start us with SIGINT ignored, and children inherit
    # that; the child restores Python's handler itself (a preexec_fn would fork a process
    # that has gRPC threads, which is unsafe).
    main = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('deploy_guard', run_name='__main__', alter_sys=True)"
    )
    args = [sys.executable, "-c", main, "--log-level", "warning", "probe"]
    args += ["--policy", str(policy_file), "--url", chat_process, "--rule", "chat-golden-path"]
    policy_file.write_text(policy_file.read_text().replace("hold: 1500ms", "hold: 60s"))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # printed once the probes are about to start
    assert first.startswith("probing "), first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert "interrupted: every probe was cancelled; no verdict" in err
    assert "Traceback" not in out + err
    assert "verdict:" not in out


def test_on_a_terminal_only_the_progress_lines_show(
    policy_file: Path, chat_process: str, in_terminal: Any
) -> None:
    """Log events would tear the progress lines: on a TTY they stay off unless asked for."""
    env = {"DEPLOY_GUARD_LOG_FORMAT": "auto", "DEPLOY_GUARD_LOG_LEVEL": ""}
    code, screen = in_terminal(
        "probe", "--policy", str(policy_file), "--url", chat_process, "--rule", "health", env=env
    )
    assert code == 0, screen
    assert "health: 4 of 4 requests done, 4 ok, finished" in screen
    assert "probe_started" not in screen
    assert "probe_finished" not in screen
