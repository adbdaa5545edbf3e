"""``deploy-guard probe`` against a server that echoes every credential: no output shows one.

The secrets: a 309-character bearer token with spaces (``--token-env``), an API
key a policy header takes from the environment (``"${LEAK_API_KEY}"``), and the
query values of a signed ``--url``. The server (tests/apps/echo_app.py) sends
them back in bodies, in an event, in a 1011 close reason (cut off at 120
characters) and in its own log lines. Every channel a person or a pipeline
reads is scanned for each secret and every 12-character slice of it: stdout,
stderr with the structlog JSON events, and the screen of a terminal run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from probe_helpers import ThreadServer

from apps.echo_app import make_app
from deploy_guard.cli import cli
from deploy_guard.exitcodes import ExitCode

#: 309 characters, spaces inside: longer than a body sample, longer than a close reason.
TOKEN = ("tok with spaces " + "9fQx2LmZ7pKcR4vW8hTb3nYd6sJe1uGa" * 10)[:309]
API_KEY = "AIzaSy-leak-test-api-key-7c1e55b0d2"
QUERY = {
    "X-Goog-Signature": "5d41402abc4b2a76b9719d911017c592aa",
    "client_secret": "GOCSPX-client-secret-value-31337",
    "auth": "auth-param-value-0f8e7d6c5b4a",
    "private_token": "glpat-private-token-value-xyz",
}
SECRETS = [TOKEN, API_KEY, *QUERY.values()]

POLICY = """\
version: 1
name: leak
services: [x]
fail_fast: false
auth:
  id_token: none
  safe_query_params: [page]
rules:
  - name: auth-echo
    kind: http
    http: {path: /auth, requests: 2, concurrency: 1}
  - name: key-echo
    kind: http
    http: {path: /key, requests: 2, concurrency: 1, headers: {X-Api-Key: "${LEAK_API_KEY}"}}
  - name: query-echo
    kind: http
    http: {path: /query, requests: 2, concurrency: 1}
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
      ping_interval: null
"""


def leaked(text: str) -> list[str]:
    """Each secret, or 12-character slice of one, that ``text`` shows."""
    found = []
    for secret in SECRETS:
        found += [secret[i : i + 12] for i in range(len(secret) - 11) if secret[i : i + 12] in text]
    return found


@pytest.fixture
def echo_server() -> Iterator[ThreadServer]:
    with ThreadServer(make_app()) as server:
        yield server


@pytest.fixture
def probe_args(echo_server: ThreadServer, tmp_path: Path) -> list[str]:
    policy = tmp_path / "leak.yaml"
    policy.write_text(POLICY)
    query = "&".join(f"{k}={v}" for k, v in QUERY.items())
    url = f"{echo_server.url}/?{query}&page=2"
    return ["probe", "--policy", str(policy), "--url", url, "--token-env", "LEAK_TOKEN"]


@pytest.mark.fault(
    "secrets", "probe of a server echoing token, key and query", "no secret or 12-char slice out"
)
def test_probe_output_shows_no_secret_on_any_channel(
    probe_args: list[str], monkeypatch: pytest.MonkeyPatch, in_terminal: object
) -> None:
    env = {"LEAK_TOKEN": TOKEN, "LEAK_API_KEY": API_KEY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = ["--log-format", "json", "--log-level", "debug", *probe_args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.FAIL, result.output
    # the echoes really happened: each rule failed on what the server sent back
    for cause in ("auth-echo", "key-echo", "query-echo", "ws-echo"):
        assert cause in result.stdout
    assert "[redacted]" in result.stdout
    assert "page=2" in result.stdout  # the policy marks it safe: shown
    assert "X-Goog-Signature=[redacted]" in result.stdout  # the names stay, the values go
    assert leaked(result.stdout) == []
    assert leaked(result.stderr) == []
    # the same run as a person sees it: a terminal, readable log lines
    code, screen = in_terminal(*probe_args, env=env)  # type: ignore[operator]
    assert code == ExitCode.FAIL, screen
    assert "Probe results" in screen
    assert leaked(screen) == []
