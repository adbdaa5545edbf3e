"""Fixtures for the shard tests: the probe tests' helpers and a server served on port 0."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "probes"):  # numbered_server, probe_helpers
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from probe_helpers import served_apps  # noqa: E402


@pytest.fixture
async def served() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Serve an aiohttp app on a loopback port; returns its base URL."""
    async with served_apps() as start:
        yield start
