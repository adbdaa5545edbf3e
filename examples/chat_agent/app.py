"""A small chat-agent service to probe: the background story, runnable.

One user message over the WebSocket ``/ws/chat`` is answered with five agent
events (``agent_started`` .. ``agent_completed``), each a JSON object tagged
with the user's id. ``/health`` answers 200 while the chat may be broken, which
is the point: the failures this service can reproduce live *inside* a session,
where an HTTP health check never looks.

Failure switches are environment variables (see README.md). They are read once
at start-up into :class:`ChatConfig`, so tests can also build the app in-process
with an explicit config.

Run it as Cloud Run would: ``PORT=8080 python examples/chat_agent/app.py``.
It logs one JSON object per line on stdout with ``severity`` and ``message``,
the shape Cloud Logging parses into ``jsonPayload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

EVENTS = ("agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed")


@dataclass(frozen=True)
class ChatConfig:
    """What the service does, healthy or broken; built from the environment."""

    revision: str = "local"
    event_delay: float = 0.01
    #: Seconds after a connection opens when it is closed with 1011 (None: never).
    fail_1011_after: float | None = None
    #: Share of sessions (0..1) whose agent run dies with 1011 mid-stream.
    fail_1011_ratio: float = 0.0
    drop_event: str | None = None
    swap_events: bool = False
    leak_users: bool = False
    slow_ms: float = 0.0
    error_logs: bool = False
    health_status: int = 200
    #: Seconds after the first chat session opens when the process dies (None: never).
    crash_after: float | None = None
    #: Each agent run ends in an exception that escapes to the server's stderr.
    tracebacks: bool = False
    #: Seconds of the process's life after which it turns bad (None: never): every
    #: session opened from then on dies with 1011 after its first agent event.
    bad_after: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChatConfig:
        e = os.environ if env is None else env

        def num(name: str, default: float) -> float:
            raw = e.get(name, "").strip()
            return float(raw) if raw else default

        after = e.get("CHAT_FAIL_1011_AFTER", "").strip()
        crash = e.get("CHAT_CRASH_AFTER", "").strip()
        bad = e.get("CHAT_BAD_AFTER", "").strip()
        return cls(
            revision=e.get("K_REVISION", "local"),
            event_delay=num("CHAT_EVENT_DELAY", 0.01),
            fail_1011_after=float(after) if after else None,
            fail_1011_ratio=num("CHAT_FAIL_1011_RATIO", 0.0),
            drop_event=e.get("CHAT_DROP_EVENT", "").strip() or None,
            swap_events=e.get("CHAT_SWAP_EVENTS", "") not in ("", "0", "false"),
            leak_users=e.get("CHAT_LEAK_USERS", "") not in ("", "0", "false"),
            slow_ms=num("CHAT_SLOW_MS", 0.0),
            error_logs=e.get("CHAT_ERROR_LOGS", "") not in ("", "0", "false"),
            health_status=int(num("CHAT_HEALTH_STATUS", 200)),
            crash_after=float(crash) if crash else None,
            tracebacks=e.get("CHAT_TRACEBACKS", "") not in ("", "0", "false"),
            bad_after=float(bad) if bad else None,
        )


def log(severity: str, message: str, **fields: Any) -> None:
    """One Cloud Run style JSON log line on stdout."""
    record = {
        "severity": severity,
        "message": message,
        "time": datetime.now(UTC).isoformat(),
        **fields,
    }
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


@dataclass
class ChatState:
    """Process-wide state: the open sockets (for the leak switch and for tests)."""

    config: ChatConfig
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    sessions_started: int = 0
    connections_total: int = 0
    crash_timer: asyncio.TimerHandle | None = None
    #: Seconds, monotonic; tests pass a clock they move by hand.
    clock: Callable[[], float] = time.monotonic
    born: float = field(init=False)
    #: Sessions that opened after the process turned bad (``bad_after``).
    bad_sessions: int = 0

    def __post_init__(self) -> None:
        self.born = self.clock()

    def turned_bad(self) -> bool:
        """The process has lived ``bad_after`` seconds: new sessions are broken from now on."""
        after = self.config.bad_after
        return after is not None and self.clock() - self.born >= after

    def event_order(self) -> list[str]:
        order = [e for e in EVENTS if e != self.config.drop_event]
        if self.config.swap_events and "tool_executing" in order and "tool_completed" in order:
            i, j = order.index("tool_executing"), order.index("tool_completed")
            order[i], order[j] = order[j], order[i]
        return order

    def session_fails(self, index: int) -> bool:
        """Deterministic share: exactly ``ratio`` of sessions 1..N fail (rounded down)."""
        ratio = self.config.fail_1011_ratio
        return ratio > 0 and math.floor(index * ratio) != math.floor((index - 1) * ratio)


STATE = web.AppKey("state", ChatState)


async def _close_1011(ws: web.WebSocketResponse, why: str, **fields: Any) -> None:
    log(
        "ERROR",
        f"{why}; closing websocket with close code 1011",
        error="AttributeError",
        **fields,
    )
    await ws.close(code=1011, message=b"internal error")


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.config.slow_ms:
        await asyncio.sleep(state.config.slow_ms / 1000)
    status = state.config.health_status
    body = {"status": "ok" if status < 400 else "error", "revision": state.config.revision}
    return web.json_response(body, status=status)


ORCHESTRATOR_NONE = "orchestrator is None: 'NoneType' object has no attribute 'run'"


async def _run_agent(
    state: ChatState, ws: web.WebSocketResponse, msg: dict[str, Any], *, bad: bool = False
) -> None:
    """Stream the agent's events for one message (to everyone, if users leak).

    ``bad``: the session opened after the process turned bad, so the run dies as
    the incident's did: ``agent_started`` goes out, then setting up the agent's
    orchestrator reaches the shared one, still None, and the socket closes with 1011.
    """
    state.sessions_started += 1
    index = state.sessions_started
    user, session = msg.get("user_id"), msg.get("session_id")
    cfg = state.config
    if cfg.error_logs:
        log("ERROR", "tool call failed: upstream returned 503", user_id=user)
    delay = cfg.event_delay + cfg.slow_ms / 1000
    for seq, name in enumerate(state.event_order(), start=1):
        if delay:
            await asyncio.sleep(delay)
        if (seq == 3 and state.session_fails(index)) or (seq == 2 and bad):
            await _close_1011(ws, ORCHESTRATOR_NONE, user_id=user, session_id=session)
            return
        event = {"type": name, "user_id": user, "session_id": session, "seq": seq}
        targets = list(state.sockets) if cfg.leak_users else [ws]
        for target in targets:
            if not target.closed:
                with contextlib.suppress(ConnectionError):
                    await target.send_json(event)
    if cfg.tracebacks:
        _escaped_exception(msg)


def _save_transcript(msg: dict[str, Any]) -> None:
    store: dict[str, Any] | None = None  # the bug: the transcript store was never set up
    store[str(msg.get("session_id"))] = msg  # type: ignore[index]


def _escaped_exception(msg: dict[str, Any]) -> None:
    """An exception no handler catches, printed as uvicorn prints one: plain lines on
    stderr, which Cloud Run logs one entry per line at severity DEFAULT."""
    try:
        _save_transcript(msg)
    except TypeError:
        print("ERROR:    Exception in ASGI application", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()


async def chat(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    ws = web.WebSocketResponse(heartbeat=None)
    await ws.prepare(request)
    state.sockets.add(ws)
    state.connections_total += 1
    loop = asyncio.get_running_loop()
    if state.config.crash_after is not None and state.crash_timer is None:
        # A crash with no last words (a segfault, the OOM killer): the process is gone
        # mid-session; only Cloud Run's "Container called exit(1)." says so in the logs.
        state.crash_timer = loop.call_later(state.config.crash_after, os._exit, 1)
    tasks: set[asyncio.Task[None]] = set()  # agent runs: cancelled when the socket ends
    closers: set[asyncio.Task[None]] = set()  # the 1011 close: never cancelled half-way
    timer: asyncio.TimerHandle | None = None
    # Decided when the session opens: sessions opened before the process turned bad
    # keep working (Cloud Run never moves an open WebSocket), every new one is broken.
    bad = state.turned_bad()
    if bad:
        state.bad_sessions += 1
    if state.config.fail_1011_after is not None:

        def fire() -> None:
            t = loop.create_task(_close_1011(ws, ORCHESTRATOR_NONE))
            closers.add(t)
            t.add_done_callback(closers.discard)

        timer = loop.call_later(state.config.fail_1011_after, fire)
    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                msg = json.loads(frame.data)
            except ValueError:
                await ws.send_json({"type": "error", "error": "not JSON"})
                continue
            if isinstance(msg, dict) and msg.get("type") == "message":
                t = loop.create_task(_run_agent(state, ws, msg, bad=bad))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
    finally:
        if timer is not None:
            timer.cancel()
        for t in list(tasks):
            t.cancel()
        if closers:
            await asyncio.gather(*closers, return_exceptions=True)
        state.sockets.discard(ws)
    return ws


def make_app(
    config: ChatConfig | None = None, *, clock: Callable[[], float] = time.monotonic
) -> web.Application:
    """The service; ``clock`` (monotonic seconds) is what ``CHAT_BAD_AFTER`` counts on."""
    app = web.Application()
    app[STATE] = ChatState(config or ChatConfig.from_env(), clock=clock)
    app.router.add_get("/health", health)
    app.router.add_get("/ws/chat", chat)
    return app


async def serve(host: str, port: int, config: ChatConfig | None = None) -> None:
    """Serve until cancelled; logs the bound port (useful with PORT=0)."""
    app = make_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    log(
        "INFO",
        f"chat-agent listening on {host}:{bound}",
        port=bound,
        revision=app[STATE].config.revision,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("PORT", "8080"))
        config = ChatConfig.from_env()
    except ValueError as exc:  # a mistyped switch: say which, not a traceback
        log("ERROR", f"bad setting: {exc}; PORT and CHAT_* switches take numbers (see README.md)")
        sys.exit(2)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(host, port, config))
    except OSError as exc:  # port in use, host not local
        log("ERROR", f"cannot listen on {host}:{port}: {exc.strerror}; pick another PORT (0: any)")
        sys.exit(2)


if __name__ == "__main__":
    main()
