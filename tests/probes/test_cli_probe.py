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


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1", "malformed IPv6 address"),
        ("http://127.0.0.1:99999", "not a number from 1 to 65535"),
        ("http://127.0.0.1:abc", "not a number from 1 to 65535"),
        ("http://:8080", "has no host name"),
        ("ftp://x", "its scheme is 'ftp'"),
    ],
)
def test_a_malformed_url_is_a_usage_error_before_anything_is_probed(
    policy_file: Path, url: str, words: str
) -> None:
    result = CliRunner().invoke(cli, ["probe", "--policy", str(policy_file), "--url", url])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # never a traceback
    assert f"error: probe URL {url!r} " in result.stderr
    assert words in result.stderr
    assert result.stdout == ""  # no "probing ..." line, no results, no verdict


HOLD_POLICY = """\
version: 1
name: hold
services: ["chat"]
rules:
  - name: health
    kind: http
    http: {path: /health, requests: 2}
  - name: chat-hold
    kind: websocket
    websocket:
      path: /ws/chat
      scenario:
        - send: {json: {type: message, user_id: "{user}"}}
        - expect: [agent_completed]
          timeout: 5s
      hold: 60s
      ping_interval: null
      sessions: 4
      concurrency: 2
"""


def holding_app(closes: list[int | None], open_now: set[object]) -> Any:
    """/health, and a /ws/chat that answers each message with ``agent_completed``.

    ``open_now`` holds the sockets still open; ``closes`` the close code each
    finished session ended with as the server saw it: 1000 when the client
    closed it cleanly, 1006 when its connection just vanished.
    """
    import json

    from aiohttp import WSMsgType, web

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def chat(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        open_now.add(ws)
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    user = json.loads(frame.data).get("user_id")
                    await ws.send_json({"type": "agent_completed", "user_id": user})
        finally:
            open_now.discard(ws)
            closes.append(ws.close_code)
        return ws

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ws/chat", chat)
    return app


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_cancels_the_probes_shows_what_ran_and_exits_3(tmp_path: Path, sig: str) -> None:
    """As ``check`` does: the first SIGINT/SIGTERM cancels the run, every connection is
    closed cleanly, the results so far are printed, and the exit code is 3."""
    import signal
    import subprocess
    import sys

    from probe_helpers import ThreadServer

    from waiting import wait_until

    policy = tmp_path / "hold.yaml"
    policy.write_text(HOLD_POLICY)
    closes: list[int | None] = []
    open_now: set[object] = set()
    with ThreadServer(holding_app(closes, open_now)) as server:
        args = [sys.executable, "-m", "deploy_guard", "--log-level", "warning", "probe"]
        proc = subprocess.Popen(
            [*args, "--policy", str(policy), "--url", server.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # started: both users hold their first session open (for 60 s)
            wait_until(
                lambda: len(open_now) == 2 or proc.poll() is not None,
                within=30,
                what="two sessions held open",
            )
            assert proc.poll() is None, proc.communicate()
            proc.send_signal(getattr(signal, sig))
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        # every session the probe opened was closed by the probe, with a close frame
        wait_until(lambda: not open_now, within=10, what="the server's sockets closed")
        assert closes == [1000, 1000], closes
    assert proc.returncode == 3, (out, err)
    assert "Traceback" not in out + err
    assert f"interrupted by {sig}: every probe was cancelled and its connection closed" in err
    results = out.split("Probe results", 1)[1]  # what it had: the table of every rule
    assert "health" in results
    assert "chat-hold" in results
    assert "0/4" in results  # no held session had finished
    assert (
        f"verdict: INTERRUPTED (exit 3: {sig} stopped the probes before the rules finished; "
        "the results above are partial and decide nothing)"
    ) in out


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
