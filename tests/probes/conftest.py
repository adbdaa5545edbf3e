"""Fixtures for the probe tests: the example chat service and small servers on port 0."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))

from probe_helpers import ChatFactory, Served, load_chat_app, serve, served_apps


@pytest.fixture
async def chat_server() -> AsyncIterator[ChatFactory]:
    """``await chat_server(event_delay=0.001, fail_1011_after=0.5, ...)`` -> Served."""
    app_module = load_chat_app()
    runners: list[web.AppRunner] = []

    async def start(**config: Any) -> Served:
        config.setdefault("event_delay", 0.001)
        app = app_module.make_app(app_module.ChatConfig(**config))
        runner, url = await serve(app)
        runners.append(runner)
        return Served(url=url, state=app[app_module.STATE])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def aiohttp_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Serve any purpose-built aiohttp app on port 0; returns its base URL."""
    async with served_apps() as start:
        yield start
