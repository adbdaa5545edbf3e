"""Every probe session is traced for the report's picture: events, hold, close, and cut ones too.

Against real servers on port 0 (the example chat service, a purpose-built
one), with the traces bound the way the driver binds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from probe_helpers import EVENTS, ChatFactory, collect, http_rule, ws_rule
from test_runner import held_rule

from deploy_guard import traces
from deploy_guard.probes.runner import run_rule
from deploy_guard.probes.target import Target
from deploy_guard.probes.template import SessionIds
from deploy_guard.probes.websocket import plan_sessions, run_session
from deploy_guard.traces import Traces
from waiting import eventually

Serve = Callable[[web.Application], Awaitable[str]]


def sessions(book: Traces, rule: str) -> list[dict[str, Any]]:
    return list(book.to_dict()["sessions"][rule]["sessions"])


async def test_a_healthy_session_shows_its_handshake_events_hold_and_clean_close(
    chat_server: ChatFactory,
) -> None:
    served = await chat_server()
    book = Traces()
    with traces.recording(book):
        await collect(ws_rule(sessions=2, concurrency=2, hold="0.2s"), Target(served.url))
    kept = sessions(book, "chat")
    assert len(kept) == 2
    for s in kept:
        assert s["ok"]
        assert not s["cut"]
        assert [name for _at, name in s["events"]] == EVENTS
        arrivals = [at for at, _name in s["events"]]
        assert arrivals == sorted(arrivals)
        assert 0 < s["handshake"] <= arrivals[0] <= s["hold"] <= s["end"]
        assert s["end"] - s["hold"] >= 0.2  # held the whole hold
        assert (s["close_code"], s["closed_by"], s["hold_wanted"]) == (1000, "client", 0.2)
        assert s["user"] in ("user-1", "user-2")
        assert s["session"]


async def test_sessions_closed_with_1011_show_when_the_server_closed_them(
    chat_server: ChatFactory,
) -> None:
    served = await chat_server(fail_1011_after=0.3)
    book = Traces()
    with traces.recording(book):
        await collect(ws_rule(sessions=3, concurrency=3, hold="5s"), Target(served.url))
    doc = book.to_dict()["sessions"]["chat"]
    assert (doc["seen"], doc["failed"], doc["cut"]) == (3, 3, 0)
    for s in doc["sessions"]:
        assert (s["ok"], s["cause"], s["close_code"], s["closed_by"]) == (
            False,
            "close_code",
            1011,
            "server",
        )
        assert s["closed_at"] >= 0.3  # the server's timer, not the hold's end
        assert s["closed_at"] < 5
        assert "1011" in s["detail"]


class Holder:
    """Holds every session open after its first event; the test closes one with 1011."""

    def __init__(self) -> None:
        self.sockets: list[web.WebSocketResponse] = []
        self.answered = 0

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.sockets.append(ws)
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    user = json.loads(frame.data)["user_id"]
                    await ws.send_json({"type": "agent_started", "user_id": user})
                    self.answered += 1
            return ws

        app = web.Application()
        app.router.add_get("/ws/chat", chat)
        return app


async def test_sessions_cut_by_an_early_stop_are_traced_as_cut(aiohttp_server: Serve) -> None:
    """The check's fail-fast: the judge reads one 1011, the sessions in flight are cut."""
    holder = Holder()
    url = await aiohttp_server(holder.app())
    book = Traces()

    async def close_one_with_1011() -> None:
        await eventually(lambda: holder.answered == 4)  # every session upgraded and running
        await holder.sockets[0].close(code=1011, message=b"internal error")

    closer = asyncio.create_task(close_one_with_1011())
    with traces.recording(book):
        async with contextlib.aclosing(run_rule(held_rule(8, 4), Target(url))) as stream:
            async for m in stream:
                if m.failed:
                    break
    await closer
    doc = book.to_dict()["sessions"]["chat"]
    [failed] = [s for s in doc["sessions"] if not s["ok"] and not s["cut"]]
    assert (failed["close_code"], failed["closed_by"]) == (1011, "server")
    # the three others were holding; the failed user's next session may have been
    # connecting when the stop came: cut too, with no handshake
    running = [s for s in doc["sessions"] if s["cut"] and s["handshake"] is not None]
    connecting = [s for s in doc["sessions"] if s["cut"] and s["handshake"] is None]
    assert len(running) == 3
    assert len(connecting) <= 1
    assert doc["failed"] == 1
    assert doc["cut"] == len(running) + len(connecting)
    for s in [failed, *running]:
        assert s["end"] >= s["handshake"]
        assert [name for _at, name in s["events"]] == ["agent_started"]


async def test_requests_are_traced_with_their_status(chat_server: ChatFactory) -> None:
    served = await chat_server()
    book = Traces()
    with traces.recording(book):
        await collect(http_rule(requests=3), Target(served.url))
    doc = book.to_dict()["sessions"]["health"]
    assert doc["kind"] == "http"
    assert [(s["ok"], s["status"]) for s in doc["sessions"]] == [(True, 200)] * 3


async def test_a_session_run_on_its_own_is_traced_under_its_plans_rule(
    chat_server: ChatFactory,
) -> None:
    """The watch's canary runs sessions itself: its plan names the rule they belong to."""
    served = await chat_server()
    spec = ws_rule().websocket
    assert spec is not None
    plan = plan_sessions(spec, Target(served.url), rule="chat-canary")
    book = Traces()
    with traces.recording(book):
        attempt = await run_session(plan, SessionIds(user="canary", session="s1", n=1))
    assert attempt.ok
    [s] = sessions(book, "chat-canary")
    assert (s["user"], s["session"]) == ("canary", "s1")


async def test_nothing_is_recorded_when_no_run_binds_traces(chat_server: ChatFactory) -> None:
    served = await chat_server()
    assert traces.current() is None
    snapshots = await collect(ws_rule(sessions=1, concurrency=1), Target(served.url))
    assert snapshots[-1].succeeded == 1
