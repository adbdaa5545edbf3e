"""One timer per probe worker, whose deadline moves for free.

A WebSocket session is bounded at every step: a send by ``connect_timeout``,
an expect step by its timeout (re-armed by every expected event), the hold by
``hold``. :func:`asyncio.timeout` pays a timer for each block and another for
each move (a heap push and a cancelled handle left in the heap): at 1,000
sessions a second, most of a session's own cost. :class:`Deadline` keeps one
timer armed at or before the current deadline and only re-arms it when it
fires early; moving the deadline later is a float assignment.

Semantics are :func:`asyncio.timeout`'s: the block is cancelled when the
deadline passes and :class:`TimeoutError` comes out of it; a cancellation from
outside still comes out as :class:`asyncio.CancelledError`. It is a plain
(synchronous) context manager used inside the session's task, and it only
cancels while a block is open: between blocks a late timer does nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType


class Deadline:
    """``with deadline.within(seconds): ...`` bounds a block; :meth:`move` re-arms it cheaply."""

    __slots__ = (
        "_armed",
        "_cancelling",
        "_clock",
        "_expired",
        "_handle",
        "_inside",
        "_loop",
        "_task",
        "_when",
    )

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task
            raise RuntimeError("a Deadline needs a task to cancel")
        self._task = task
        # asyncio's own loop reads time.monotonic(): called directly, a frame less per move.
        loop_time = type(self._loop).time
        self._clock: Callable[[], float] = (
            time.monotonic if loop_time is asyncio.BaseEventLoop.time else self._loop.time
        )
        self._handle: asyncio.TimerHandle | None = None
        self._armed = math.inf  # when the timer fires
        self._when = math.inf  # when the open block must end
        self._inside = False
        self._expired = False
        self._cancelling = 0

    def within(self, seconds: float) -> Deadline:
        """Bound the ``with`` block this opens to ``seconds`` from now."""
        self.move(seconds)
        return self

    def move(self, seconds: float) -> None:
        """The open block now ends ``seconds`` from now (sooner or later than before)."""
        when = self._clock() + seconds
        self._when = when
        if when < self._armed:
            if self._handle is not None:
                self._handle.cancel()
            self._armed = when
            self._handle = self._loop.call_at(when, self._fire)

    @property
    def task(self) -> asyncio.Task[object]:
        return self._task

    def cancel(self) -> None:
        """Disarm the timer (the session is over)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._armed = math.inf

    def __enter__(self) -> Deadline:
        self._inside = True
        self._expired = False
        self._cancelling = self._task.cancelling()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inside = False
        if self._expired:
            self._expired = False
            # As asyncio.timeout: ours unless someone else asked for a cancellation too.
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc

    def _fire(self) -> None:
        armed, self._armed, self._handle = self._armed, math.inf, None
        if not self._inside:
            return  # between blocks: the next block arms its own deadline
        if self._when > armed:  # moved later since armed: wait for the rest
            self._armed = self._when
            self._handle = self._loop.call_at(self._when, self._fire)
            return
        self._expired = True
        self._task.cancel()


_mine: ContextVar[Deadline | None] = ContextVar("deploy_guard_deadline", default=None)


def task_deadline() -> Deadline:
    """The running task's Deadline, made at its first session and kept for the next ones.

    A worker runs its sessions one after another: the timer armed for one is
    usually still armed at or before what the next needs, so most sessions arm
    none and cancel none. Left armed when the task is done, it fires once,
    cancels nothing (no block is open) and is gone.
    """
    deadline = _mine.get()
    if deadline is None or deadline.task is not asyncio.current_task():
        deadline = Deadline()
        _mine.set(deadline)
    return deadline


__all__ = ["Deadline", "task_deadline"]
