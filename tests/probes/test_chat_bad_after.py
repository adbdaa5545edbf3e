"""The example app's ``CHAT_BAD_AFTER``: healthy at first, then every new session dies with 1011.

This is the failure ``deploy-guard watch`` exists for (issue 12): a check run in the
first N seconds passes, and from then on each new chat session sends ``agent_started``
and closes with 1011 while the server logs the orchestrator error the shipped policy's
``logs`` rule looks for. The in-process tests move the app's clock by hand (no waiting);
one runs the script itself to prove the environment variable is wired.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from probe_helpers import (
    APP_PATH,
    EVENTS,
    collect,
    load_chat_app,
    serve,
    start_chat_process,
    ws_rule,
)

from deploy_guard.policy.load import parse_policy
from deploy_guard.probes.target import Target
from waiting import wait_until

CHAT_POLICY = APP_PATH.parents[2] / "policies" / "chat-agent.yaml"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def bad_later() -> AsyncIterator[tuple[str, Clock, Any]]:
    """The chat app with ``bad_after=60`` on a hand-moved clock: (url, clock, state)."""
    app_module = load_chat_app()
    clock = Clock()
    app = app_module.make_app(app_module.ChatConfig(event_delay=0.001, bad_after=60.0), clock=clock)
    runner, url = await serve(app)
    try:
        yield url, clock, app[app_module.STATE]
    finally:
        await runner.cleanup()


def message(user: str) -> dict[str, Any]:
    return {"type": "message", "user_id": user, "session_id": f"s-{user}", "text": "hi"}


async def events_until_close(ws: aiohttp.ClientWebSocketResponse) -> list[str]:
    got: list[str] = []
    async for frame in ws:
        if frame.type != aiohttp.WSMsgType.TEXT:
            break
        got.append(json.loads(frame.data)["type"])
        if got[-1] == EVENTS[-1]:
            break
    return got


def policy_patterns() -> list[re.Pattern[str]]:
    """The shipped chat policy's 1011 rule patterns: the app's line must match each."""
    policy = parse_policy(CHAT_POLICY.read_text(), str(CHAT_POLICY))
    (rule,) = [r for r in policy.rules if r.name == "no-1011-in-logs"]
    assert rule.logs is not None
    return [re.compile(p) for p in rule.logs.patterns]


async def test_sessions_opened_after_the_delay_close_with_1011_after_agent_started(
    bad_later: tuple[str, Clock, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    url, clock, state = bad_later
    async with aiohttp.ClientSession() as http:
        early = await http.ws_connect(f"{url}/ws/chat")  # opened while healthy
        await early.send_json(message("early"))
        assert await events_until_close(early) == list(EVENTS)
        assert not state.turned_bad()

        clock.now += 60.0  # the process has lived bad_after seconds
        assert state.turned_bad()
        late = await http.ws_connect(f"{url}/ws/chat")
        await late.send_json(message("late"))
        assert await events_until_close(late) == ["agent_started"]
        await late.receive()  # the close frame, if the iteration above did not read it
        assert late.close_code == 1011
        assert state.bad_sessions == 1

        # The session opened before keeps working: an open WebSocket keeps its instance.
        await early.send_json(message("early"))
        assert await events_until_close(early) == list(EVENTS)
        await early.close()

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    errors = [r for r in lines if r["severity"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["user_id"] == "late"
    assert errors[0]["session_id"] == "s-late"
    assert all(p.search(errors[0]["message"]) for p in policy_patterns())


async def test_a_probe_passes_before_the_delay_and_fails_every_session_after(
    bad_later: tuple[str, Clock, Any],
) -> None:
    url, clock, _state = bad_later
    before = (await collect(ws_rule(sessions=3), Target(url)))[-1]
    assert before.succeeded == before.done == 3

    clock.now += 61.0
    after = (await collect(ws_rule(sessions=3), Target(url)))[-1]
    assert after.done == 3
    assert after.succeeded == 0
    assert after.failures_by_cause == {"close_code": 3}
    assert after.close_codes == {1011: 3}


def test_the_switch_is_read_from_the_environment() -> None:
    app_module = load_chat_app()
    assert app_module.ChatConfig.from_env({"CHAT_BAD_AFTER": "90"}).bad_after == 90.0
    assert app_module.ChatConfig.from_env({}).bad_after is None


async def test_the_script_with_bad_after_0_is_bad_from_its_first_session() -> None:
    proc, url = start_chat_process(CHAT_BAD_AFTER="0", CHAT_EVENT_DELAY="0")
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{url}/ws/chat")
            await ws.send_json(message("u1"))
            assert await events_until_close(ws) == ["agent_started"]
            await ws.receive()
            assert ws.close_code == 1011
        patterns = policy_patterns()
        wait_until(
            lambda: any(all(p.search(line) for p in patterns) for line in proc.output_lines),
            what="the orchestrator error line",
        )
    finally:
        proc.terminate()
        proc.wait(10)
