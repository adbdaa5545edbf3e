"""A bearer token never reaches logs, measurements, transcripts or CLI output.

The server here is hostile on purpose: it echoes the Authorization header back
in events, in an HTTP error body and in a close reason, so the only way the
token stays out of the output is the probe scrubbing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web
from click.testing import CliRunner
from probe_helpers import ThreadServer, http_rule, ws_rule
from structlog.testing import capture_logs

from deploy_guard.cli import cli
from deploy_guard.probes.auth import BearerToken
from deploy_guard.probes.runner import run_rules
from deploy_guard.probes.target import Target

TOKEN = "tok-3f9a1c77e2b54d0f9e8a-SECRET"


def echoing_app(calls: list[str]) -> web.Application:
    """Needs the token; then leaks it everywhere it can."""

    async def health(request: web.Request) -> web.Response:
        calls.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401, text="no token")
        return web.Response(status=500, text=f"boom, your header was {TOKEN}")

    async def chat(request: web.Request) -> web.WebSocketResponse:
        auth = request.headers.get("Authorization", "")
        calls.append(auth)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                msg = json.loads(frame.data)
                event = {"type": "agent_started", "user_id": msg["user_id"], "echo": auth}
                await ws.send_json(event)
                await ws.send_str(f"raw {TOKEN}")
                await ws.close(code=1011, message=f"bad {TOKEN}".encode())
        return ws

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ws/chat", chat)
    return app


@pytest.fixture
def leaky_server() -> ThreadServer:
    calls: list[str] = []
    server = ThreadServer(echoing_app(calls))
    server.calls = calls  # type: ignore[attr-defined]
    return server


async def test_measurements_and_logs_never_hold_the_token(leaky_server: ThreadServer) -> None:
    with leaky_server:
        target = Target(leaky_server.url, token=BearerToken(TOKEN, "test"))
        rules = [ws_rule(sessions=2, concurrency=1), http_rule(requests=2, concurrency=1)]
        with capture_logs() as logs:
            snaps = [m async for m in run_rules(rules, target)]
    # the token was really sent (and the server really echoed it back)...
    assert f"Bearer {TOKEN}" in leaky_server.calls  # type: ignore[attr-defined]
    finals = {m.rule: m for m in snaps if m.complete}
    assert finals["chat"].failures_by_cause == {"close_code": 2}
    assert finals["health"].failures_by_cause == {"status": 2}
    # ...but no output carries it
    everything = repr(snaps) + repr(logs) + repr(target)
    assert TOKEN not in everything
    assert "[redacted]" in everything  # the echoes were scrubbed, not lost


def test_cli_output_never_holds_the_token(
    leaky_server: ThreadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nname: leak\nservices: [x]\nrules:\n"
        "  - name: health\n    kind: http\n    http: {path: /health, requests: 2}\n"
        "  - name: chat\n    kind: websocket\n    websocket:\n      path: /ws/chat\n"
        "      scenario:\n        - send: {json: {type: message, user_id: '{user}'}}\n"
        "        - expect: [agent_started, agent_completed]\n"
    )
    monkeypatch.setenv("PROBE_SECRET_TOKEN", TOKEN)
    with leaky_server:
        args = ["--log-format", "json", "--log-level", "debug", "probe"]
        args += ["--policy", str(policy), "--url", leaky_server.url]
        args += ["--token-env", "PROBE_SECRET_TOKEN"]
        result = CliRunner().invoke(cli, args)
    assert f"Bearer {TOKEN}" in leaky_server.calls  # type: ignore[attr-defined]
    assert result.exit_code == 1, result.output
    assert TOKEN not in result.output
    assert TOKEN not in (result.stderr or "")
    assert "[redacted]" in result.output
