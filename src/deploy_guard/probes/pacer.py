"""The runner's scheduler for a rule's ramp and rate (see :mod:`deploy_guard.policy.pacing`).

Two waits, both on the event loop's monotonic clock, measured from the moment the
rule's run starts:

- :meth:`Pacer.user_ready` holds user ``k`` back until its place on the ramp,
  ``ramp * (k - 1) / (C - 1)``; users that have not started have no session open,
  so the users active at any moment never exceed the ramp's allowance then.
- :meth:`Pacer.admit` hands out starts on a fixed grid, ``1 / rate`` apart: the
  j-th start never comes before ``j / rate`` into the run, so by any moment at most
  ``1 + elapsed * rate`` sessions have started. A timer wakes a little late (the
  loop's epoll rounds its timeout up to the millisecond, the machine is busy): a
  start late by at most :data:`JITTER` (and half an interval) keeps the grid, so
  the next one is on time and the rate is kept; a start later than that moves the
  grid to itself, so the starts that fell behind stay behind and never come in a
  burst to catch up. Two starts are thus never closer than ``1/rate`` minus that
  allowance. Waiting users take their turns in the order they asked
  (``asyncio.Lock`` wakes its waiters first in, first out).

A rule with neither ramp nor rate gets no pacer (:meth:`Pacer.for_spec` is None), so
the unpaced path costs nothing per session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from deploy_guard.policy.pacing import Pacing

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import HttpSpec, WebSocketSpec


#: The most a start may be late and still keep the rate's grid (seconds); capped at
#: half an interval, so two starts are never closer than half of ``1 / rate``.
JITTER = 0.002


def allowance_for_jitter(rate: float) -> float:
    """How much closer than ``1 / rate`` two starts may come: a late timer's catch-up."""
    return min(JITTER, 0.5 / rate)


class Pacer:
    """One rule run's ramp and rate; create it inside the running loop, when the run starts."""

    def __init__(self, pacing: Pacing, *, clock: Callable[[], float] | None = None) -> None:
        self.pacing = pacing
        self._clock = clock if clock is not None else asyncio.get_running_loop().time
        #: When the run started, on :attr:`clock`: the ramp is measured from here.
        self.start = self._clock()
        self._interval = 1.0 / pacing.rate if pacing.rate else 0.0
        self._jitter = allowance_for_jitter(pacing.rate) if pacing.rate else 0.0
        self._next = -math.inf
        self._turn = asyncio.Lock()

    @classmethod
    def for_spec(cls, spec: HttpSpec | WebSocketSpec, *, share: float = 1.0) -> Pacer | None:
        """The pacer of a rule's block, or None when nothing holds its starts back.

        ``share`` is the fraction of the rule's attempts this process runs (a shard's:
        its attempts over the rule's). It takes that fraction of the rate, so the shards
        together start sessions at the rule's rate, not N times it, and each ends when
        an unsharded run would: a rate split evenly would slow the shard with more
        workers than the others, and leave the rate unused of shards with none.
        """
        pacing = Pacing.of(spec)
        if share <= 0:
            return None  # no attempts here: nothing to pace
        if pacing.rate is not None and share < 1:
            pacing = dataclasses.replace(pacing, rate=pacing.rate * share)
        return cls(pacing) if pacing.paced else None

    def clock(self) -> float:
        """The pacer's clock (the loop's ``time()`` unless a test gave another)."""
        return self._clock()

    async def user_ready(self, k: int) -> float:
        """Wait until user ``k`` (1-based) may start; returns the time it may."""
        return await self._until(self.start + self.pacing.user_start(k))

    async def admit(self) -> float:
        """Wait for this start's turn at the rate; returns the time of the start."""
        if not self._interval:
            return self._clock()
        async with self._turn:
            slot = self._next
            now = await self._until(slot)
            # late by a timer's hair: keep the grid; later: the grid restarts here
            self._next = (slot if now - slot <= self._jitter else now) + self._interval
            return now

    async def _until(self, when: float) -> float:
        """Sleep until the clock reads ``when`` or later (a sleep may wake a hair early)."""
        while (now := self._clock()) < when:  # noqa: ASYNC110 - a deadline, not an event
            await asyncio.sleep(when - now)
        return now
