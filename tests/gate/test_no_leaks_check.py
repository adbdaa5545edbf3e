"""``deploy-guard check`` of a candidate that echoes every credential: no output shows one.

The candidate (tests/apps/echo_app.py, deployed on the emulator) sends the
bearer token and a policy header's ``${LEAK_API_KEY}`` back in 500 bodies, in a
WebSocket event and a 1011 close reason, and writes them into its own ERROR log
lines, which a logs rule reads and quotes as evidence. Every channel is scanned
for each secret and every 12-character slice of it: stdout, stderr with the
structlog JSON events, the JSON report, the Markdown summary, and a second run
on a terminal (the live view and its final screen).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode

ECHO_APP = Path(__file__).resolve().parents[1] / "apps" / "echo_app.py"
#: 309 characters with spaces: longer than a body sample and than a close reason.
TOKEN = ("ya29 check token " + "Zm9vYmFyLWJhei1xdXV4LTAxMjM0NTY3" * 10)[:309]
API_KEY = "AIzaSy-check-leak-api-key-4f3e2d1c0b"
SECRETS = [TOKEN, API_KEY]

POLICY = """\
version: 1
name: leak
services: ["chat*"]
fail_fast: false
timeout: 60s
auth:
  id_token: none
rules:
  - name: auth-echo
    kind: http
    http: {path: /auth, requests: 2, concurrency: 1}
  - name: key-echo
    kind: http
    http: {path: /key, requests: 2, concurrency: 1, headers: {X-Api-Key: "${LEAK_API_KEY}"}}
  - name: ws-echo
    kind: websocket
    websocket:
      path: /ws
      headers: {X-Api-Key: "${LEAK_API_KEY}"}
      scenario:
        - expect: [echo, done]
          timeout: 2s
      sessions: 2
      concurrency: 1
  - name: no-leaking-lines
    kind: logs
    logs:
      filter: 'severity>=ERROR'
      patterns: ['leaking']
      max_count: 0
"""


def leaked(text: str) -> list[str]:
    """Each 12-character slice of a secret that ``text`` shows."""
    return [
        secret[i : i + 12]
        for secret in SECRETS
        for i in range(len(secret) - 11)
        if secret[i : i + 12] in text
    ]


@pytest.mark.fault(
    "secrets", "check of a candidate echoing token and key", "no secret or 12-char slice out"
)
def test_check_output_shows_no_secret_on_any_channel(
    chat: Any,
    emulator_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    in_terminal: Any,
) -> None:
    env = {"LEAK_TOKEN": TOKEN, "LEAK_API_KEY": API_KEY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    policy = tmp_path / "leak.yaml"
    policy.write_text(POLICY)
    chat.first()
    cand = chat.candidate(command=[sys.executable, str(ECHO_APP)])

    def args(run: str) -> list[str]:
        return [
            "check",
            "--revision",
            cand,
            "--policy",
            str(policy),
            "--token-env",
            "LEAK_TOKEN",
            "--log-interval",
            "0.5s",
            "--report",
            str(tmp_path / f"{run}.json"),
            "--summary",
            str(tmp_path / f"{run}.md"),
        ]

    result = CliRunner().invoke(cli, ["--log-level", "debug", *args("piped")])
    assert result.exit_code == ExitCode.FAIL, result.output
    report = json.loads((tmp_path / "piped.json").read_text())
    failed = {r["rule"] for r in report["rules"] if r["status"] == "fail"}
    # every echo really reached the guard: each rule failed on it...
    assert failed == {"auth-echo", "key-echo", "ws-echo", "no-leaking-lines"}, report["rules"]
    assert "[redacted]" in json.dumps(report)
    # ...and no channel shows a secret
    channels = {
        "stdout": result.stdout,
        "stderr (JSON events)": result.stderr,
        "report": (tmp_path / "piped.json").read_text(),
        "summary": (tmp_path / "piped.md").read_text(),
    }
    assert '"severity"' in channels["stderr (JSON events)"]
    code, screen = in_terminal(*args("terminal"), env={**emulator_env, **env})
    assert code == ExitCode.FAIL, screen
    channels["terminal"] = screen
    channels["terminal report"] = (tmp_path / "terminal.json").read_text()
    channels["terminal summary"] = (tmp_path / "terminal.md").read_text()
    for channel, text in channels.items():
        assert leaked(text) == [], channel


@pytest.mark.fault(
    "secrets", "check with a ${NAME} header holding a line break", "exit 2 unquoted, no write"
)
def test_a_header_value_that_cannot_be_sent_stops_the_check_before_any_write(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAK_API_KEY", "first-half-of-key\nsecond-half-of-key")
    policy = tmp_path / "leak.yaml"
    policy.write_text(POLICY)
    base = chat.first()
    cand = chat.candidate()
    tags = chat.tags()
    args = ["check", "--revision", cand, "--policy", str(policy), "--report"]
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "r.json")])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "rule key-echo, header X-Api-Key: environment variable LEAK_API_KEY" in result.stderr
    assert "has a line break at position 18" in result.stderr
    everything = result.output + (tmp_path / "r.json").read_text()
    assert "half-of-key" not in everything
    assert chat.tags() == tags  # no temporary tag was added
    assert chat.serving() == {base: 100}
