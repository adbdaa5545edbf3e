"""A fleet's share of Cloud Logging's read quota: each guard reads logs in its own slot.

Cloud Logging allows a project a fixed number of ``entries.list`` calls a minute
(reported as 60, later 120: Google's own RESOURCE_EXHAUSTED answers name the limit
``ReadRequestsPerMinutePerProject``), shared with every console user and tool. One
guard stays far below it; fifty guards started by one release do not: each check
reads once soon after it starts, every ``--log-interval`` while it probes and once
more at the end, so fifty of them read fifty times in the first seconds alone.

A longer interval is not enough (the first and last passes do not wait for it), and
the guards share nothing but a fleet file: no coordinator hands out reads. So the
budget is split in time, the way a shared radio channel is: the fleet may make
``budget`` reads a minute in a project (half the quota by default, leaving the rest
to people), so the wall clock is cut into *slots* of ``60 / budget`` seconds and
slot ``s`` belongs to the guard whose place in the fleet is ``s mod guards``. A guard
starts a read only in the first half of a slot of its own, so two guards never read in
one slot and the whole fleet starts at most ``budget`` reads in any minute (one more
across a minute's edge), however the guards' starts and ends fall. Clocks agree
well enough: Cloud Run tasks and Cloud Build steps keep time to the millisecond, and
a slot is a second or more.

:class:`LogBudget` is that arithmetic, pure; :class:`BudgetedLogs` wraps a check's
:class:`~deploy_guard.gcp.logs.LogSource` so its passes keep to it: a pass the
engine asks for outside the guard's turn reads nothing (the engine asks again), and
the last, complete pass waits for the guard's next turn. A pass that Cloud Logging
refuses for its quota (RESOURCE_EXHAUSTED, after the call's own retries) is missing
evidence, never a pass: the guard backs off (it lets turns go by, twice as many after
each refusal) and the complete pass tries once more at a later turn before the rule
ends as an error, which the judge counts as missing data (inconclusive unless the
policy says otherwise).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploy_guard.log import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.analysis.sources import Scope, SourceFactory, Sources
    from deploy_guard.gcp.logs import LogSource
    from deploy_guard.measurements import LogMeasurement

#: Cloud Logging's ``entries.list`` quota per project and minute when nobody raised it:
#: the lower of the two values Google's RESOURCE_EXHAUSTED answers have reported.
DEFAULT_QUOTA_PER_MIN = 60.0
#: The share of the quota a fleet's guards use together; the rest is left to people.
DEFAULT_SHARE = 0.5
#: After refusals the guard waits at most this many times its usual turns between reads.
MAX_BACKOFF = 4
#: How many more turns a complete pass that was refused for the quota tries.
COMPLETE_RETRIES = 1
#: The words a read refused for the quota carries (gcp.errors names the status).
QUOTA_REFUSED = "RESOURCE_EXHAUSTED"

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(min|minute|m|s|sec|second))?\s*$")


def parse_rate(text: str) -> float:
    """``"60/min"``, ``"120/m"``, ``"2/s"`` or ``"60"`` -> calls per minute (ValueError if not)."""
    match = _RATE.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a rate: use N/min, e.g. 60/min")
    value = float(match.group(1))
    per_minute = value * 60 if match.group(2) in ("s", "sec", "second") else value
    if not math.isfinite(per_minute) or per_minute < 1:
        raise ValueError(f"{text!r} is too low: a read quota is at least 1/min")
    return per_minute


def rate_text(per_minute: float) -> str:
    return f"{per_minute:g}/min"


@dataclass(frozen=True)
class LogBudget:
    """One guard's share of a project's Cloud Logging reads: pure arithmetic, no clock.

    ``guards`` guards of a fleet share ``quota`` reads a minute; this one is at place
    ``index`` (0-based) among them. ``min_spacing``: never read more often than this
    (``--log-interval``), whatever the budget would allow.
    """

    quota: float
    guards: int
    index: int
    share: float = DEFAULT_SHARE
    min_spacing: float = 0.0

    def __post_init__(self) -> None:
        if self.guards < 1 or not 0 <= self.index < self.guards:
            raise ValueError(f"place {self.index} among {self.guards} guards")
        if not (self.quota >= 1 and 0 < self.share <= 1):
            raise ValueError(f"quota {self.quota}/min, share {self.share}")

    @property
    def per_minute(self) -> float:
        """Reads a minute the whole fleet may make in the project."""
        return self.quota * self.share

    @property
    def slot(self) -> float:
        """Seconds of one slot: the fleet starts at most one read in each."""
        return 60.0 / self.per_minute

    @property
    def turn(self) -> float:
        """Seconds from one of this guard's slots to its next."""
        return self.slot * self.guards

    @property
    def gap(self) -> int:
        """Turns from one read to the next (more than one when ``min_spacing`` asks)."""
        return max(1, math.ceil(self.min_spacing / self.turn - 1e-9))

    @property
    def longest_wait(self) -> float:
        """The longest a complete pass may wait for its turns, a refused one retried included."""
        return self.turn * self.gap * (1 + COMPLETE_RETRIES * 2) + self.slot

    def owns(self, slot: int) -> bool:
        return slot % self.guards == self.index

    def next_slot(self, now: float, *, after: int | None = None, gap: int | None = None) -> int:
        """The first slot of this guard whose first half is not over at ``now``.

        ``after``: the slot of the previous read; the next is ``gap`` turns later at
        the earliest (``gap`` defaults to :attr:`gap`).
        """
        current = math.floor(now / self.slot)
        if now - current * self.slot >= self.slot / 2:  # too late for this one
            current += 1
        if after is not None:
            current = max(current, after + self.guards * (gap or self.gap))
        return current + (self.index - current) % self.guards

    def start(self, slot: int) -> float:
        return slot * self.slot

    def describe(self) -> str:
        """The arithmetic in words, for the report and ``deploy-guard fleet``."""
        return (
            f"Cloud Logging read budget {rate_text(self.per_minute)} for {self.guards} "
            f"guard{'s' if self.guards != 1 else ''} ({self.share:.0%} of a "
            f"{rate_text(self.quota)} quota): slots of {self.slot:g} s, this guard's "
            f"every {self.turn:g} s (place {self.index}), one log read every "
            f"{self.turn * self.gap:g} s at most"
        )


def quota_refused(measurements: Sequence[LogMeasurement]) -> bool:
    """True when a pass came back with Cloud Logging's quota refusal."""
    return any(m.error is not None and QUOTA_REFUSED in m.error for m in measurements)


class BudgetedLogs:
    """A :class:`~deploy_guard.gcp.logs.LogSource` that reads only in its guard's slots.

    ``clock`` is the wall clock (every guard of the fleet must read the same one);
    ``sleep`` waits, so a test can run the turns without waiting for them.
    """

    def __init__(
        self,
        inner: LogSource,
        budget: LogBudget,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.inner, self.budget = inner, budget
        self.clock, self.sleep = clock, sleep
        #: Slots this guard read in, in order (for tests and the log).
        self.slots: list[int] = []
        #: Turns between reads now: :attr:`LogBudget.gap`, doubled after each refusal.
        self.gap = budget.gap
        self.refusals = 0

    def _due(self) -> int:
        after = self.slots[-1] if self.slots else None
        return self.budget.next_slot(self.clock(), after=after, gap=self.gap)

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[LogMeasurement]:
        """A pass in this guard's turn; outside it, nothing (a complete pass waits for it)."""
        tries = 1 + (COMPLETE_RETRIES if complete else 0)
        got: list[LogMeasurement] = []
        for _ in range(tries):
            slot = self._due()
            wait = self.budget.start(slot) - self.clock()
            if wait > 0 and not complete:
                return []  # not this guard's turn: the engine asks again
            if deadline is not None and wait > deadline:
                return []  # no turn before the bound (a report-only completion)
            while wait > 0:  # woken late (a busy machine)? then the next turn
                await self.sleep(wait)
                now = self.clock()
                if now - self.budget.start(slot) >= self.budget.slot / 2:
                    slot = self._due()
                wait = self.budget.start(slot) - now
            self.slots.append(slot)
            get_logger("deploy_guard.budget").info(
                "log_read_turn", slot=slot, place=self.budget.index, complete=complete
            )
            got = await self.inner.measure(complete=complete, deadline=deadline)
            if not quota_refused(got):
                self.gap = self.budget.gap
                return got
            self.refusals += 1
            self.gap = min(self.gap * 2, MAX_BACKOFF * self.budget.gap)
            get_logger("deploy_guard.budget").warning(
                "log_quota_exhausted",
                refusals=self.refusals,
                next_read_in_s=round(self.gap * self.budget.turn, 1),
                complete=complete,
            )
        return got


def budgeted(factory: SourceFactory, budget: LogBudget) -> SourceFactory:
    """``factory`` with its Cloud Logging source kept to ``budget`` (when it has logs rules)."""

    def build(scope: Scope) -> Sources:
        sources = factory(scope)
        if any(rule.kind == "logs" for rule in scope.rules):
            sources.logs = BudgetedLogs(sources.logs, budget)
        return sources

    return build


__all__ = [
    "DEFAULT_QUOTA_PER_MIN",
    "DEFAULT_SHARE",
    "BudgetedLogs",
    "LogBudget",
    "budgeted",
    "parse_rate",
    "quota_refused",
    "rate_text",
]
