"""Hundreds of sessions held at once: the record the judge gets is bounded, its counts exact.

10,000 sessions is a benchmark (``python -m bench probes``); here 500 are held at the same
time against a local server that waits until every one of them is open before it finishes
the scenario, so "at once" is a fact, not a hope about timing. Every fifth user's session is
closed with 1011 during its hold: counts by cause and close code must be exact, samples and
transcripts bounded, the latencies histograms of all 500, the report's traces bounded.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from probe_helpers import collect, ws_rule

from deploy_guard import traces
from deploy_guard.probes.aggregate import MAX_SAMPLES
from deploy_guard.probes.target import Target
from deploy_guard.probes.ws_bounds import TRANSCRIPT_CAP, TRANSCRIPT_TEXT

Serve = Callable[[web.Application], Awaitable[str]]
SESSIONS = 500
FAIL_EVERY = 5


@pytest.fixture(autouse=True)
def enough_files() -> Iterator[None]:
    """Both ends of 500 sockets live in this process: raise the soft open-files limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SESSIONS + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def held_app(total: int) -> tuple[web.Application, dict[str, int]]:
    """``agent_started`` at once, ``agent_completed`` once ``total`` sessions are open; every
    fifth user's session is then closed with 1011 (during the probe's hold)."""
    counts = {"open": 0, "peak": 0}
    everyone = asyncio.Event()

    async def chat(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # aiohttp's default: permessage-deflate agreed
        await ws.prepare(request)
        counts["open"] += 1
        counts["peak"] = max(counts["peak"], counts["open"])
        if counts["open"] == total:
            everyone.set()
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                user = json.loads(frame.data)["user_id"]
                await ws.send_json({"type": "agent_started", "user_id": user})
                await everyone.wait()
                await ws.send_json({"type": "agent_completed", "user_id": user})
                if int(user.split("-")[1]) % FAIL_EVERY == 0:
                    await ws.close(code=1011, message=b"orchestrator gone")
        finally:
            counts["open"] -= 1
        return ws

    app = web.Application()
    app.router.add_get("/ws/chat", chat)
    return app, counts


def rule(**spec: Any) -> Any:
    message = {"type": "message", "user_id": "{user}", "session_id": "{session}"}
    settings: dict[str, Any] = {
        "sessions": SESSIONS,
        "concurrency": SESSIONS,
        "scenario": [
            {"send": {"json": message}},
            {"expect": ["agent_started", "agent_completed"], "timeout": "60s"},
        ],
        "hold": "300ms",
        "connect_timeout": "60s",
    }
    return ws_rule(**{**settings, **spec})


@pytest.mark.fault(
    "probes",
    "1011 on every fifth of 500 sessions held at once",
    "counts exact, samples and transcripts bounded",
)
async def test_500_held_sessions_give_exact_counts_and_a_bounded_record(
    aiohttp_server: Serve,
) -> None:
    app, counts = held_app(SESSIONS)
    url = await aiohttp_server(app)
    threshold = gc.get_threshold()
    with traces.recording(traces.Traces()) as recorded:
        snapshots = await collect(rule(), Target(url))
    last = snapshots[-1]

    assert counts["peak"] == SESSIONS  # every session was open at the same time
    failed = SESSIONS // FAIL_EVERY
    assert last.complete
    assert (last.done, last.succeeded) == (SESSIONS, SESSIONS - failed)
    assert last.failures_by_cause == {"close_code": failed}
    assert last.close_codes == {1000: SESSIONS - failed, 1011: failed}
    assert last.histograms["total"].count == SESSIONS
    assert set(last.latencies) == {"handshake", "first_event", "scenario", "total"}

    assert 0 < len(last.samples) <= MAX_SAMPLES
    for sample in last.samples:
        assert "close code 1011 (orchestrator gone)" in sample.detail
        assert "during the hold" in sample.detail
        assert int(sample.user.split("-")[1]) % FAIL_EVERY == 0
        assert 0 < len(sample.transcript) <= TRANSCRIPT_CAP
        assert all(len(str(e["data"])) <= TRANSCRIPT_TEXT + 3 for e in sample.transcript)

    book = recorded.to_dict()["sessions"]["chat"]
    assert (book["seen"], book["failed"], book["cut"]) == (SESSIONS, failed, 0)
    assert len(book["sessions"]) + book["left_out"] == SESSIONS
    kept = traces.FIRST_SESSIONS + traces.NOTABLE_HEAD + traces.NOTABLE_TAIL
    assert len(book["sessions"]) <= kept

    # Full collections were put off while the 500 waited for their turn, and no longer.
    assert gc.get_threshold() == threshold


async def test_sessions_of_a_rule_begin_a_few_per_turn_of_the_loop(
    aiohttp_server: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 workers start at once; a turn of the event loop begins a few of them, not all.

    The turns are counted by a callback that re-schedules itself once per turn; its
    count and the admission's own may be out of step by part of a turn, hence 2 x.
    """
    from deploy_guard.probes import websocket
    from deploy_guard.probes.admission import PER_TURN

    app, _ = held_app(SESSIONS)
    url = await aiohttp_server(app)
    loop = asyncio.get_running_loop()
    turn, ticking = [0], [True]
    begun_in_turn: dict[int, int] = {}

    def tick() -> None:
        turn[0] += 1
        if ticking[0]:
            loop.call_soon(tick)

    real = websocket.Session

    def counting(*args: Any, **kwargs: Any) -> Any:
        begun_in_turn[turn[0]] = begun_in_turn.get(turn[0], 0) + 1
        return real(*args, **kwargs)

    monkeypatch.setattr(websocket, "Session", counting)
    loop.call_soon(tick)
    try:
        last = (await collect(rule(hold="0s"), Target(url)))[-1]
    finally:
        ticking[0] = False
    assert last.done == SESSIONS
    assert sum(begun_in_turn.values()) == SESSIONS
    assert max(begun_in_turn.values()) <= 2 * PER_TURN
    assert len(begun_in_turn) >= SESSIONS // (2 * PER_TURN)
