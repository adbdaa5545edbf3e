"""Waiting in tests: poll a condition with a deadline, never sleep a fixed time for luck.

Importable from any test (``from waiting import eventually``): pytest puts ``tests/`` on
``sys.path`` (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: How often a condition is polled.
POLL_S = 0.02


def wait_until(predicate: Callable[[], T], within: float = 10.0, what: str = "") -> T:
    """Block until ``predicate()`` is truthy and return it; fail the test after ``within`` s."""
    deadline = time.monotonic() + within
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {within} s")
        time.sleep(POLL_S)
    return found


async def eventually(predicate: Callable[[], object], within: float = 10.0, what: str = "") -> None:
    """Like :func:`wait_until`, letting the event loop run between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what or 'condition'} not met within {within} s")
        await asyncio.sleep(POLL_S)


def process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
