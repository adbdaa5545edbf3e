"""Every kind of evidence as one stream of cumulative measurements: the engine's one interface.

Probes stream by nature; Cloud Logging and Cloud Monitoring are read in passes
(each read costs quota, and points arrive late), so :class:`PolledStream`
turns passes into a stream with the probes' rhythm: a pass every interval while
the window lasts (the probes run, and a rollout step's duration has not passed),
then one last complete pass after it. A poller never reads more often than its
interval, whenever the probes end: Cloud Logging's read quota is shared. The engine pumps every
:class:`Source` the same way and turns a source that raises into errors on its
open rules, whatever kind it is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.analysis.sources import ProbeSource
    from deploy_guard.measurements import Measurement
    from deploy_guard.policy.model import Rule
    from deploy_guard.probes.target import Target

#: Seconds the log and metric pollers give the probes to get going before their
#: first pass (less when the probes report sooner): see
#: :func:`deploy_guard.runtime.session.warm_imports`.
POLL_GRACE = 0.5


@dataclass
class Pace:
    """The rhythm the polled sources keep.

    ``started``: the probes reported (or ended): the first pass may run.
    ``done``: the window is over, the probes ended and (a rollout step) its
    duration passed: the last, complete pass may run.
    """

    started: asyncio.Event
    done: asyncio.Event
    #: Loop time the analysis began (its window's clock starts then); None: unknown.
    began: float | None = None


class Source(Protocol):
    """One kind of evidence: its name, the rules it measures, and their measurements."""

    name: str
    rules: Sequence[Rule]

    def stream(self, pace: Pace) -> AsyncIterator[Measurement]: ...


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that
    lands as the awaited event fires, and a poller cancelled by a decision (the
    probes finishing at that very moment) would run one more pass, or sleep
    through ``--log-settle``, while the decision waits for it.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class ProbeStream:
    """The probe rules against the target; each snapshot tells the pace they started."""

    name = "probes"

    def __init__(self, probes: ProbeSource, rules: Sequence[Rule], target: Target) -> None:
        self.probes, self.target = probes, target
        self.rules: Sequence[Rule] = tuple(rules)

    async def stream(self, pace: Pace) -> AsyncIterator[Measurement]:
        if not self.rules:
            return
        async with contextlib.aclosing(self.probes.stream(self.rules, self.target)) as stream:  # type: ignore[type-var]
            async for m in stream:
                pace.started.set()
                yield m


class PolledStream:
    """Passes of a log or metric source, every ``interval`` s until the window is over.

    The first pass waits until the probes report (at most :data:`POLL_GRACE`
    s); the last, complete one starts ``settle`` s after ``pace.done`` (at
    once by default). Until then a pass starts ``interval`` s after the one
    before it ended, however early the probes end: the last pass is the only one
    that may follow its predecessor sooner. ``counted`` hears of every pass that measured something
    (the report counts Cloud Logging reads against the quota).

    ``paced`` (a rollout's stages: the window's duration, 0 for one without):
    no early first pass; the passes fall at ``duration - k * interval`` from the
    start, so the first is at least one interval after the stage began (after
    the previous stage's last pass) and the complete one at the window's end is
    one interval after the last: at most one read per interval across stages.
    """

    def __init__(
        self,
        name: str,
        measure: Callable[..., Awaitable[Sequence[Measurement]]],
        rules: Sequence[Rule],
        *,
        interval: float,
        settle: float = 0.0,
        counted: Callable[[str], None] = lambda _name: None,
        paced: float | None = None,
    ) -> None:
        self.name, self.measure = name, measure
        self.rules: Sequence[Rule] = tuple(rules)
        self.interval, self.settle, self.counted = interval, settle, counted
        self.paced = paced

    async def stream(self, pace: Pace) -> AsyncIterator[Measurement]:
        if self.paced is not None:
            async for m in self._paced(pace, self.paced):
                yield m
            return
        await _wait(pace.started, min(self.interval, POLL_GRACE))
        while not pace.done.is_set():
            for m in await self._pass(complete=False):
                yield m
            await _wait(pace.done, self.interval)
        async for m in self._last():
            yield m

    async def _paced(self, pace: Pace, duration: float) -> AsyncIterator[Measurement]:
        loop = asyncio.get_running_loop()
        start, interval = pace.began if pace.began is not None else loop.time(), self.interval
        end = start + duration
        whole = int(duration // interval) if interval > 0 else 0
        last = start  # the previous stage's last pass came just before this one began
        for at in [duration - k * interval for k in range(whole - 1, 0, -1)]:
            when = max(start + at, last + interval)  # a late loop shifts passes, never packs
            if when + interval > end + 1e-6:  # no room left before the complete pass
                break
            await _wait(pace.done, when - loop.time())
            if pace.done.is_set():
                break
            last = loop.time()
            for m in await self._pass(complete=False):
                yield m
        while not pace.done.is_set():  # probes outlasting the window, or no window
            # never at the window's end itself: the window closing then is the complete pass
            await _wait(pace.done, max(last, end) + interval - loop.time())
            if pace.done.is_set():
                break
            last = loop.time()
            for m in await self._pass(complete=False):
                yield m
        if last > start:  # the complete pass too comes an interval after the one before
            await asyncio.sleep(max(0.0, last + interval - loop.time()))
        async for m in self._last():
            yield m

    async def _last(self) -> AsyncIterator[Measurement]:
        if self.settle > 0:
            await asyncio.sleep(self.settle)
        for m in await self._pass(complete=True):
            yield m

    async def _pass(self, *, complete: bool) -> Sequence[Measurement]:
        got = await self.measure(complete=complete)
        if got:
            self.counted(self.name)
        return got
