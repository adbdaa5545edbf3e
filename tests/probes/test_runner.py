"""The runner: snapshot streaming, merging rules, and cancellation without leaks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import WSMsgType, web
from probe_helpers import ChatFactory, collect, http_rule, ws_rule

from deploy_guard.errors import ConfigError
from deploy_guard.policy.model import Rule
from deploy_guard.probes.runner import run_rule, run_rules
from deploy_guard.probes.target import Target
from waiting import eventually

Serve = Callable[[web.Application], Awaitable[str]]


class Tracker:
    """Counts the WebSocket connections a test server has open right now."""

    def __init__(self) -> None:
        self.open = 0
        self.total = 0

    def app(self, *, fail_n: str | None = None) -> web.Application:
        """Holds every session open; the session whose ``n`` is ``fail_n`` gets 1011."""

        async def chat(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.open += 1
            self.total += 1
            try:
                if request.query.get("n") == fail_n:
                    await ws.close(code=1011, message=b"internal error")
                async for frame in ws:
                    if frame.type == WSMsgType.TEXT:
                        msg = json.loads(frame.data)
                        await ws.send_json({"type": "agent_started", "user_id": msg["user_id"]})
            finally:
                self.open -= 1
            return ws

        app = web.Application()
        app.router.add_get("/ws/chat", chat)
        return app


def held_rule(sessions: int, concurrency: int) -> Rule:
    message = {"type": "message", "user_id": "{user}", "session_id": "{session}"}
    return ws_rule(
        sessions=sessions,
        concurrency=concurrency,
        hold="60s",
        query={"n": "{n}"},
        scenario=[{"send": {"json": message}}, {"expect": ["agent_started"], "timeout": "2s"}],
    )


def client_tasks() -> list[asyncio.Task[object]]:
    """Tasks still running code of the probes or their client libraries (not the test server)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        if any(part in where for part in ("deploy_guard", "/websockets/", "/httpx/", "/httpcore/")):
            found.append(task)
    return found


async def test_cancelling_the_consumer_closes_every_socket(aiohttp_server: Serve) -> None:
    tracker = Tracker()
    url = await aiohttp_server(tracker.app())

    async def consume() -> None:
        async for _ in run_rule(held_rule(20, 10), Target(url)):
            pass

    task = asyncio.create_task(consume())
    await eventually(lambda: tracker.open == 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # the runner waited for its sessions: nothing of the client is left running at once...
    assert client_tasks() == []
    # ...and the server sees every socket closed
    await eventually(lambda: tracker.open == 0, within=5)
    assert tracker.total == 10


async def test_closing_the_stream_after_the_first_failure_stops_all_sessions(
    aiohttp_server: Serve,
) -> None:
    """The gate's early stop: one 1011 and nothing else needs to run."""
    tracker = Tracker()
    url = await aiohttp_server(tracker.app(fail_n="1"))
    seen = []
    async with contextlib.aclosing(run_rule(held_rule(12, 4), Target(url))) as stream:
        async for m in stream:
            seen.append(m)
            if m.failed:
                break
    assert seen[-1].failures_by_cause == {"close_code": 1}
    assert not seen[-1].complete
    await eventually(lambda: tracker.open == 0, within=5)
    assert tracker.total <= 5  # the other users' sessions were cut, not run to the end


async def test_snapshots_are_cumulative_and_end_complete(chat_server: ChatFactory) -> None:
    served = await chat_server(fail_1011_ratio=0.5)
    snaps = await collect(ws_rule(sessions=8, concurrency=2), Target(served.url))
    done = [s.done for s in snaps]
    assert done == sorted(done)
    assert snaps[-1].complete
    assert sum(s.complete for s in snaps) == 1
    # every failure was reported on its own snapshot at once
    failed = [s.failed for s in snaps]
    assert set(range(1, 5)) <= set(failed)


async def test_run_rules_merges_http_and_websocket(chat_server: ChatFactory) -> None:
    served = await chat_server()
    rules = [ws_rule("chat", sessions=4, concurrency=2), http_rule("health", requests=3)]
    snaps = [m async for m in run_rules(rules, Target(served.url))]
    finals = {m.rule: m for m in snaps if m.complete}
    assert set(finals) == {"chat", "health"}
    assert finals["chat"].kind == "websocket"
    assert finals["chat"].succeeded == 4
    assert finals["health"].kind == "http"
    assert finals["health"].succeeded == 3


async def test_cancelling_run_rules_stops_every_rule(aiohttp_server: Serve) -> None:
    tracker = Tracker()
    url = await aiohttp_server(tracker.app())
    rules = [held_rule(6, 3), held_rule(6, 3).model_copy(update={"name": "second"})]

    async def consume() -> None:
        async for _ in run_rules(rules, Target(url)):
            pass

    task = asyncio.create_task(consume())
    await eventually(lambda: tracker.open == 6)
    assert len(client_tasks()) >= 6  # the check below can see leaks: these are the workers
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert client_tasks() == []
    await eventually(lambda: tracker.open == 0, within=5)


async def test_a_non_probe_rule_is_refused_before_anything_runs() -> None:
    rule = Rule.model_validate(
        {"name": "logs", "kind": "logs", "logs": {"patterns": ["close code 1011"]}}
    )
    with pytest.raises(ConfigError, match="not a probe"):
        await anext(run_rule(rule, Target("http://127.0.0.1:9")))


async def test_consumer_cancelled_outside_the_generator_still_stops_sessions(
    aiohttp_server: Serve,
) -> None:
    """A consumer that stops iterating (without aclose) and is then cancelled leaks nothing."""
    tracker = Tracker()
    url = await aiohttp_server(tracker.app(fail_n="1"))
    got_first = asyncio.Event()

    async def consume() -> None:
        stream = run_rule(held_rule(8, 4), Target(url))
        await anext(stream)  # the failure snapshot; then wait elsewhere, never closing it
        got_first.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(consume())
    await got_first.wait()
    await eventually(lambda: tracker.open >= 1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await eventually(lambda: tracker.open == 0, within=5)


class _BrokenHeaders(Target):
    """A target whose header expansion raises: the probe code hits a path it did not expect."""

    def headers_for(self, extra: object = None) -> dict[str, str]:
        raise RuntimeError("header table corrupted")


@pytest.mark.fault("probes", "probe code raises inside a rule", "rule error with the cause, logged")
async def test_a_probe_that_raises_is_the_rules_error_with_its_cause(
    chat_server: ChatFactory,
) -> None:
    from structlog.testing import capture_logs

    served = await chat_server()
    target = _BrokenHeaders(served.url)
    rules = [ws_rule("chat", sessions=2), http_rule("health", requests=3, concurrency=1)]
    with capture_logs() as events:
        snapshots = [m async for m in run_rules(rules, target)]
    last = {m.rule: m for m in snapshots}
    # the WebSocket rule plans its sessions once: the crash ends the rule, as an error
    assert last["chat"].complete
    assert last["chat"].error == "the probe crashed: RuntimeError: header table corrupted"
    # the HTTP rule meets it per request: each attempt is an error naming it, and it goes on
    assert last["health"].complete
    assert last["health"].failures_by_cause == {"error": 3}
    assert last["health"].samples[0].detail == "probe error: RuntimeError: header table corrupted"
    logged = {e["event"]: e for e in events if e["log_level"] == "error"}
    assert logged["probe_crashed"]["rule"] == "chat"
    assert "header table corrupted" in logged["probe_crashed"]["error"]
    assert logged["probe_attempt_error"]["rule"] == "health"
    assert sum(e["event"] == "probe_attempt_error" for e in events) == 1  # once per rule and kind
