"""WebSocket failure causes that need a purpose-built server (aiohttp on port 0)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from probe_helpers import EVENTS, collect, golden_scenario, ws_rule

from deploy_guard.probes.target import Target

Serve = Callable[[web.Application], Awaitable[str]]
Handler = Callable[[web.WebSocketResponse, dict[str, Any]], Awaitable[None]]


def ws_app(on_message: Handler, seen: list[web.Request] | None = None) -> web.Application:
    """An app whose /ws/chat calls ``on_message(ws, msg)`` for each JSON message."""

    async def chat(request: web.Request) -> web.WebSocketResponse:
        if seen is not None:
            seen.append(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                await on_message(ws, json.loads(frame.data))
        return ws

    app = web.Application()
    app.router.add_get("/ws/chat", chat)
    return app


async def send_events(ws: web.WebSocketResponse, msg: dict[str, Any], names: list[str]) -> None:
    for name in names:
        await ws.send_json({"type": name, "user_id": msg.get("user_id")})


async def last_snapshot(url: str, **rule: Any) -> Any:
    return (await collect(ws_rule(**rule), Target(url)))[-1]


async def test_handshake_rejected_names_the_status(aiohttp_server: Serve) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="forbidden")

    app = web.Application()
    app.router.add_get("/ws/chat", refuse)
    last = await last_snapshot(await aiohttp_server(app), sessions=2, concurrency=1)
    assert last.failures_by_cause == {"handshake_rejected": 2}
    assert last.samples[0].status == 403
    assert "HTTP 403" in last.samples[0].detail
    assert "a private service needs a token" in last.samples[0].detail  # cause and fix


async def test_connection_dropped_without_close_frame_is_a_reset(aiohttp_server: Serve) -> None:
    async def drop(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        await send_events(ws, msg, EVENTS[:1])
        transport = ws._writer.transport if ws._writer else None  # type: ignore[union-attr]
        assert transport is not None
        transport.abort()

    last = await last_snapshot(await aiohttp_server(ws_app(drop)), sessions=2, concurrency=1)
    assert last.failures_by_cause == {"connection_reset": 2}
    assert last.close_codes == {1006: 2}
    assert "(1006)" in last.samples[0].detail


async def test_unexpected_event_when_extras_are_forbidden(aiohttp_server: Serve) -> None:
    async def chatty(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        await send_events(ws, msg, [*EVENTS[:2], "agent_heartbeat", *EVENTS[2:]])

    url = await aiohttp_server(ws_app(chatty))
    strict = await last_snapshot(url, scenario=golden_scenario(allow_extra=False))
    assert strict.failures_by_cause == {"unexpected_event": 4}
    assert "'agent_heartbeat' at step 2" in strict.samples[0].detail
    lenient = await last_snapshot(url, scenario=golden_scenario(allow_extra=True))
    assert lenient.succeeded == 4


async def test_messages_that_name_no_event_are_said_so(aiohttp_server: Serve) -> None:
    """A server whose events use another field (or are not JSON) is not just 'a timeout'."""

    async def other_field(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        for name in EVENTS:
            await ws.send_json({"event": name})  # the policy reads "type"
        await ws.send_str("not json {")

    url = await aiohttp_server(ws_app(other_field))
    lenient = await last_snapshot(
        url, scenario=golden_scenario(timeout="0.5s", allow_extra=True), sessions=1, concurrency=1
    )
    assert lenient.failures_by_cause == {"timeout": 1}
    assert (
        "6 messages named no event (not a JSON object with a 'type' field: is event_field right?)"
    ) in lenient.samples[0].detail
    strict = await last_snapshot(
        url, scenario=golden_scenario(allow_extra=False), sessions=1, concurrency=1
    )
    assert strict.failures_by_cause == {"unexpected_event": 1}
    assert "a message with no 'type' field (not a JSON object naming its event) at step 2" in (
        strict.samples[0].detail
    )


async def test_close_1011_mid_scenario_is_a_close_code_failure(aiohttp_server: Serve) -> None:
    async def crash(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        await send_events(ws, msg, EVENTS[:2])
        await ws.close(code=1011, message=b"orchestrator is None")

    last = await last_snapshot(await aiohttp_server(ws_app(crash)), sessions=1, concurrency=1)
    assert last.failures_by_cause == {"close_code": 1}
    assert last.close_codes == {1011: 1}
    detail = last.samples[0].detail
    assert "close code 1011 (orchestrator is None)" in detail
    assert "before tool_executing" in detail
    assert last.samples[0].transcript[-1]["dir"] == "close"


async def test_clean_close_before_all_events_is_a_missing_event(aiohttp_server: Serve) -> None:
    async def quits(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        await send_events(ws, msg, EVENTS[:3])
        await ws.close(code=1000)

    last = await last_snapshot(await aiohttp_server(ws_app(quits)), sessions=1, concurrency=1)
    assert last.failures_by_cause == {"missing_event": 1}
    assert "stream closed 1000 at step 2 before tool_completed" in last.samples[0].detail


async def test_clean_server_close_during_the_hold_fails_the_hold(aiohttp_server: Serve) -> None:
    async def short(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        await send_events(ws, msg, EVENTS)
        await asyncio.sleep(0.2)  # the server's own behaviour: close 0.2 s after the run
        await ws.close(code=1000, message=b"bye")

    url = await aiohttp_server(ws_app(short))
    last = await last_snapshot(url, sessions=1, concurrency=1, hold="60s")
    assert last.failures_by_cause == {"close_code": 1}
    assert re.match(r"server closed 1000 \(bye\) after \d+\.\d+ s", last.samples[0].detail)
    assert "hold wanted 60 s" in last.samples[0].detail
    assert last.latencies["total"]["max"] < 5


async def test_connect_error_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    last = await last_snapshot(f"http://127.0.0.1:{port}", sessions=1, concurrency=1)
    assert last.failures_by_cause == {"connect_error": 1}
    assert "could not connect" in last.samples[0].detail
    assert "nothing listens there: is the service running" in last.samples[0].detail


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts TCP connections and never answers the upgrade."""
    writers: list[asyncio.StreamWriter] = []

    async def hang(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for w in writers:
        w.close()
    server.close()
    await server.wait_closed()


@pytest.mark.fault(
    "probes", "WebSocket server accepts TCP, never answers", "timeout at connect_timeout"
)
async def test_handshake_timeout(silent_server: str) -> None:
    last = await last_snapshot(silent_server, sessions=1, concurrency=1, connect_timeout="200ms")
    assert last.failures_by_cause == {"timeout": 1}
    assert last.samples[0].detail == "handshake timed out after 0.2 s"


async def test_templates_query_headers_and_subprotocol_reach_the_server(
    aiohttp_server: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_TEST_TENANT", "acme")
    received: list[dict[str, Any]] = []
    requests: list[web.Request] = []

    async def record(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        received.append(msg)
        await send_events(ws, msg, EVENTS)

    url = await aiohttp_server(ws_app(record, requests))
    last = await last_snapshot(
        url,
        sessions=6,
        concurrency=3,
        query={"who": "{user}", "n": "{n}"},
        headers={"X-Tenant": "${PROBE_TEST_TENANT}"},
    )
    assert last.succeeded == 6
    assert sorted(int(m["text"].split()[1]) for m in received) == [1, 2, 3, 4, 5, 6]
    assert {m["user_id"] for m in received} == {"user-1", "user-2", "user-3"}
    assert len({m["session_id"] for m in received}) == 6
    for m in received:  # worker k runs sessions k, k+3: user and n agree
        assert m["user_id"] == f"user-{(int(m['text'].split()[1]) - 1) % 3 + 1}"
    assert {r.query["who"] for r in requests} == {"user-1", "user-2", "user-3"}
    assert sorted(int(r.query["n"]) for r in requests) == [1, 2, 3, 4, 5, 6]
    assert {r.headers["X-Tenant"] for r in requests} == {"acme"}


async def test_a_server_that_stops_answering_pings_fails_the_hold(aiohttp_server: Serve) -> None:
    async def chat(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)  # pings reach the handler, unanswered
        await ws.prepare(request)
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                await send_events(ws, json.loads(frame.data), EVENTS)
        return ws

    app = web.Application()
    app.router.add_get("/ws/chat", chat)
    url = await aiohttp_server(app)
    last = await last_snapshot(url, sessions=1, concurrency=1, hold="60s", ping_interval="200ms")
    assert last.failures_by_cause == {"connection_reset": 1}
    assert "keepalive timeout" in last.samples[0].detail
    assert last.latencies["total"]["max"] < 10


def closes_after_events(code: int) -> Handler:
    async def handler(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        await send_events(ws, msg, EVENTS)
        await ws.close(code=code, message=b"custom")

    return handler


@pytest.mark.fault(
    "probes", "WebSocket close code in neither fail nor clean", "session fails naming it"
)
async def test_a_close_code_that_is_not_clean_fails_the_session(aiohttp_server: Serve) -> None:
    url = await aiohttp_server(ws_app(closes_after_events(4001)))
    last = await last_snapshot(url, sessions=2, concurrency=1)
    assert last.failures_by_cause == {"close_code": 2}
    assert last.close_codes == {4001: 2}
    detail = last.samples[0].detail
    assert detail.startswith("close code 4001 (custom) after ")
    assert detail.endswith("(neither a fail nor a clean close code; close_codes.clean: 1000, 1001)")
    allowed = await last_snapshot(
        url, sessions=2, concurrency=1, close_codes={"clean": [1000, 1001, 4001]}
    )
    assert allowed.succeeded == 2
    assert allowed.close_codes == {4001: 2}


async def test_a_close_code_that_is_not_clean_mid_scenario_is_named(aiohttp_server: Serve) -> None:
    async def early(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        await send_events(ws, msg, EVENTS[:2])
        await ws.close(code=4001, message=b"custom")

    last = await last_snapshot(await aiohttp_server(ws_app(early)), sessions=1, concurrency=1)
    assert last.failures_by_cause == {"close_code": 1}
    detail = last.samples[0].detail
    assert "close code 4001 (custom) at step 2 before tool_executing after" in detail
    assert "neither a fail nor a clean close code" in detail
