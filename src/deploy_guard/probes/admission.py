"""At most a few WebSocket sessions begin per turn of the event loop.

A rule of 10,000 sessions at concurrency 10,000 starts 10,000 workers at once,
and each one's first step (a socket, a connect, a handshake to write) would run
in the same turn of the event loop: seconds in which nothing else runs, no
pong is read, no timer fires, and a server's own handshake timeout may pass
before the probe has even sent its request. :class:`Admission` lets
:data:`PER_TURN` sessions begin per turn and the rest wait for the next turns,
so a turn stays a few milliseconds long however many sessions are asked for.

It is not a rate: a turn is as short as the loop makes it, so sessions begin as
fast as the process can open them (thousands a second) and never wait for a
slow server, only for their place in the loop. A rule's own ``rate`` or ramp is
the runner's (:mod:`deploy_guard.probes.runner`).

While sessions wait (a burst), Python's full garbage collections are put off.
A burst builds long-lived objects only (~90 per session), and the collector
scans the whole heap each time it grew by a quarter: a dozen scans while
10,000 sessions open, seconds of stall each on a busy machine and nearly half
the probe's CPU. The young generations are still collected; the full
collection runs once the burst is over (:func:`full_collections_put_off`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import deque

#: Sessions that may begin in one turn of the event loop (each costs ~0.2 ms to open).
PER_TURN = 64
#: The full-collection threshold while a burst lasts (never reached: gen-1 collections).
_PUT_OFF = 1 << 30
#: Admissions in a burst, process-wide, and the threshold to give back when none is.
_bursts = 0
_threshold: int | None = None


def full_collections_put_off() -> bool:
    """Whether a burst is putting off the garbage collector's full collections now."""
    return _threshold is not None


def _burst_began() -> None:
    global _bursts, _threshold
    _bursts += 1
    if _bursts == 1:
        g0, g1, g2 = gc.get_threshold()
        _threshold = g2
        gc.set_threshold(g0, g1, _PUT_OFF)


def _burst_ended() -> None:
    global _bursts, _threshold
    _bursts -= 1
    if _bursts == 0 and _threshold is not None:
        g0, g1, _ = gc.get_threshold()
        gc.set_threshold(g0, g1, _threshold)
        _threshold = None


class Admission:
    """``if not admission.now(): await admission.wait()`` before a session begins."""

    def __init__(self, per_turn: int = PER_TURN) -> None:
        self.per_turn = per_turn
        self._begun = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._turn_pending = False
        self._bursting = False

    def now(self) -> bool:
        """Begin at once when this turn has room and no one waits (the common case)."""
        if self._begun < self.per_turn and not self._waiting:
            self._begun += 1
            self._next_turn_soon()
            return True
        return False

    async def wait(self) -> None:
        """Wait for a place in a later turn."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        if not self._bursting:
            self._bursting = True
            _burst_began()
        self._next_turn_soon()
        try:
            await waiter
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):  # still queued: give up the place
                self._waiting.remove(waiter)
            self._maybe_over()
            raise

    def _maybe_over(self) -> None:
        if self._bursting and not self._waiting:
            self._bursting = False
            _burst_ended()

    def _next_turn_soon(self) -> None:
        if not self._turn_pending:
            self._turn_pending = True
            asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        """A new turn: room for ``per_turn`` sessions, the waiting ones first."""
        self._turn_pending = False
        self._begun = 0
        while self._waiting and self._begun < self.per_turn:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._begun += 1
        self._maybe_over()
        if self._waiting or self._begun:
            self._next_turn_soon()


__all__ = ["PER_TURN", "Admission", "full_collections_put_off"]
