"""Helpers shared by the probe tests (imported by name: conftest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from aiohttp import web

from deploy_guard.policy.model import Rule
from deploy_guard.probes.runner import run_rule

APP_PATH = Path(__file__).resolve().parents[2] / "examples" / "chat_agent" / "app.py"
EVENTS = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def load_chat_app() -> ModuleType:
    """Import examples/chat_agent/app.py (not a package) once per process."""
    name = "chat_agent_example_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, APP_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Served:
    """A running in-process server: its base URL and (for the chat app) its state."""

    url: str
    state: Any = None


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def served_apps() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """``start(app) -> base URL`` for as many apps as a test serves; all cleaned up after."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner, url = await serve(app)
        runners.append(runner)
        return url

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


ChatFactory = Callable[..., Awaitable[Served]]


def golden_scenario(timeout: str = "2s", **expect: Any) -> list[dict[str, Any]]:
    """Send one chat message, expect the five agent events."""
    message = {"type": "message", "user_id": "{user}", "session_id": "{session}", "text": "hi {n}"}
    return [{"send": {"json": message}}, {"expect": EVENTS, "timeout": timeout, **expect}]


def ws_rule(name: str = "chat", **websocket: Any) -> Rule:
    """A websocket rule with the golden-path scenario unless overridden."""
    spec: dict[str, Any] = {
        "path": "/ws/chat",
        "scenario": golden_scenario(),
        "sessions": 4,
        "concurrency": 2,
        "isolation": {"field": "user_id"},
        "ping_interval": None,
    }
    spec.update(websocket)
    return Rule.model_validate({"name": name, "kind": "websocket", "websocket": spec})


def http_rule(name: str = "health", **http: Any) -> Rule:
    spec: dict[str, Any] = {"path": "/health", "requests": 4, "concurrency": 2}
    spec.update(http)
    return Rule.model_validate({"name": name, "kind": "http", "http": spec})


async def collect(rule: Rule, target: Any) -> list[Any]:
    """Every snapshot run_rule yields for ``rule`` (the last one is complete)."""
    return [m async for m in run_rule(rule, target)]


class ThreadServer:
    """An aiohttp app served from its own thread and loop, for sync (CLI) tests."""

    def __init__(self, app: web.Application) -> None:
        import threading

        self._app = app
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner, self.url = await serve(self._app)
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def start_chat_process(**env: str) -> tuple[Any, str]:
    """Run ``python examples/chat_agent/app.py`` with PORT=0; return (process, base URL)."""
    import json
    import os
    import subprocess
    import threading

    proc = subprocess.Popen(
        [sys.executable, str(APP_PATH)],
        env={**os.environ, "PORT": "0", **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the first line says where it listens
    port = json.loads(line)["port"]
    lines: list[str] = []
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    drain.start()  # keep reading so the service never blocks on a full pipe
    proc.output_lines = lines  # type: ignore[attr-defined]
    return proc, f"http://127.0.0.1:{port}"
