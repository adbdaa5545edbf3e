"""A fleet's share of Cloud Logging's read quota: the slot arithmetic and the budgeted source.

:class:`LogBudget` is pure, so the promise docs/fleets.md makes (at most the budget's
reads a minute across the fleet, never two in one slot) is checked here over many guards
and arbitrary starts. :class:`BudgetedLogs` runs on a clock the test steps: a pass
outside the guard's turn reads nothing, the complete pass waits for it, and a read
Cloud Logging refuses for its quota backs off and stays missing evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_guard.analysis.budget import (
    BudgetedLogs,
    LogBudget,
    budgeted,
    parse_rate,
    quota_refused,
)
from deploy_guard.analysis.sources import Scope, Sources
from deploy_guard.measurements import LogMeasurement

QUOTA_ERROR = "reading logs of svc-00002-abc: Google answered RESOURCE_EXHAUSTED and kept doing so"


# --- the arithmetic -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("quota", "guards", "per_minute", "slot", "turn"),
    [
        (60, 50, 30, 2, 100),  # docs/fleets.md: 50 services, the quota as reported first
        (120, 50, 60, 1, 50),  # and as reported later
        (120, 10, 60, 1, 10),  # the fleet test's
        (60, 1, 30, 2, 2),
    ],
)
def test_the_budget_s_numbers(
    quota: float, guards: int, per_minute: float, slot: float, turn: float
) -> None:
    budget = LogBudget(quota=quota, guards=guards, index=0)
    assert (budget.per_minute, budget.slot, budget.turn) == (per_minute, slot, turn)


def test_a_longer_log_interval_spaces_reads_by_whole_turns() -> None:
    assert LogBudget(quota=60, guards=2, index=0, min_spacing=10).gap == 3  # turn 4 s
    assert LogBudget(quota=60, guards=50, index=0, min_spacing=10).gap == 1  # turn 100 s
    assert LogBudget(quota=120, guards=10, index=0, min_spacing=10).gap == 1  # exactly one


@pytest.mark.parametrize(
    ("text", "per_minute"), [("60/min", 60), ("120/m", 120), ("2/s", 120), ("90", 90)]
)
def test_rates_read_as_calls_a_minute(text: str, per_minute: float) -> None:
    assert parse_rate(text) == per_minute


@pytest.mark.parametrize("text", ["", "sixty", "0/min", "60/h", "-1/min", "nan/min"])
def test_what_is_not_a_rate_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


def _reads(budget: LogBudget, start: float, end: float, gap_s: float) -> list[int]:
    """The slots one guard reads in from ``start`` to ``end``, asking every ``gap_s``."""
    slots: list[int] = []
    now = start
    while now < end:
        slot = budget.next_slot(now, after=slots[-1] if slots else None)
        at = budget.start(slot)
        if at >= end:
            break
        slots.append(slot)
        now = max(now, at) + gap_s
    return slots


@settings(max_examples=60, deadline=None)
@given(
    guards=st.integers(min_value=1, max_value=60),
    quota=st.sampled_from([60.0, 120.0, 600.0]),
    starts=st.lists(st.floats(min_value=0, max_value=300), min_size=60, max_size=60),
    lengths=st.lists(st.floats(min_value=0.5, max_value=400), min_size=60, max_size=60),
)
def test_a_fleet_never_reads_twice_in_a_slot_nor_over_budget_in_a_minute(
    guards: int, quota: float, starts: Sequence[float], lengths: Sequence[float]
) -> None:
    reads: dict[int, int] = {}
    base = 1_800_000_000.0  # wall-clock seconds, as guards read them
    for index in range(guards):
        budget = LogBudget(quota=quota, guards=guards, index=index)
        start = base + starts[index]
        for slot in _reads(budget, start, start + lengths[index], gap_s=0.3):
            assert slot % guards == index
            assert slot not in reads, "two guards in one slot"
            reads[slot] = index
    budget = LogBudget(quota=quota, guards=guards, index=0)
    times = sorted(budget.start(s) for s in reads)
    for i, first in enumerate(times):  # any minute holds at most the budget's reads, +1
        in_minute = sum(1 for t in times[i:] if t < first + 60)
        assert in_minute <= budget.per_minute + 1


def test_a_guard_woken_late_in_its_slot_waits_for_its_next_turn() -> None:
    budget = LogBudget(quota=60, guards=5, index=2)  # slots of 2 s, its own every 10 s
    assert budget.next_slot(4.0) == 2  # its slot starts at 4 s
    assert budget.next_slot(4.9) == 2  # first half: still its turn
    assert budget.next_slot(5.0) == 7  # second half: too late, the next turn
    assert budget.next_slot(4.0, after=2) == 7


# --- the budgeted source ------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Passes:
    """A log source answering from a list (a refusal: the error a quota gives)."""

    def __init__(self, clock: Clock, answers: Sequence[str | None]) -> None:
        self.clock, self.answers = clock, list(answers)
        self.read_at: list[float] = []

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[LogMeasurement]:
        self.read_at.append(self.clock())
        error = self.answers.pop(0) if self.answers else None
        return [LogMeasurement(rule="no-1011", entries_scanned=0, complete=complete, error=error)]


def _source(answers: Sequence[str | None] = (), *, now: float = 1000.0, index: int = 1) -> Any:
    clock = Clock(now)
    inner = Passes(clock, answers)
    budget = LogBudget(quota=60, guards=4, index=index)  # slots of 2 s; turns of 8 s
    return BudgetedLogs(inner, budget, clock=clock, sleep=clock.sleep), inner, clock


async def test_outside_its_turn_a_pass_reads_nothing() -> None:
    source, inner, _clock = _source(now=1000.0)  # slot 500: guard 0's
    assert await source.measure(complete=False) == []
    assert inner.read_at == []


async def test_in_its_turn_a_pass_reads_once_and_then_waits_a_turn() -> None:
    source, inner, clock = _source(now=1002.3)  # slot 501: guard 1's, first half
    assert len(await source.measure(complete=False)) == 1
    assert await source.measure(complete=False) == []  # the same slot: not twice
    clock.now = 1010.2  # slot 505: guard 1's again
    assert len(await source.measure(complete=False)) == 1
    assert inner.read_at == [1002.3, 1010.2]


async def test_the_complete_pass_waits_for_the_guard_s_turn() -> None:
    source, inner, clock = _source(now=1004.0)  # slot 502; guard 1's next is 505
    got = await source.measure(complete=True)
    assert got
    assert got[0].complete
    assert inner.read_at == [1010.0]
    assert clock.slept == [6.0]


async def test_a_completion_whose_turn_comes_after_its_bound_reads_nothing() -> None:
    source, inner, _clock = _source(now=1004.0)
    assert await source.measure(complete=True, deadline=5.0) == []
    assert inner.read_at == []


async def test_a_refused_read_backs_off_and_stays_missing_evidence() -> None:
    source, inner, _clock = _source([QUOTA_ERROR, QUOTA_ERROR], now=1002.0)
    got = await source.measure(complete=True)
    # tried in its turn, then once more two turns later (backed off): both refused
    assert inner.read_at == [1002.0, 1018.0]
    assert quota_refused(got)
    assert got[0].error == QUOTA_ERROR
    assert source.refusals == 2
    assert source.gap == 4


async def test_a_refused_pass_recovers_at_a_later_turn() -> None:
    source, inner, _clock = _source([QUOTA_ERROR, None], now=1002.0)
    got = await source.measure(complete=True)
    assert inner.read_at == [1002.0, 1018.0]
    assert not quota_refused(got)
    assert got[0].error is None
    assert source.gap == 1  # back to one turn between reads


async def test_other_errors_are_not_retried_by_the_budget() -> None:
    source, inner, _clock = _source(["reading logs: Google answered UNAVAILABLE"], now=1002.0)
    got = await source.measure(complete=True)
    assert len(inner.read_at) == 1
    assert got[0].error is not None


def test_only_sources_with_logs_rules_are_budgeted(fleet_policy: Any) -> None:
    from datetime import UTC, datetime

    from deploy_guard.gcp.logs import NoLogs
    from deploy_guard.gcp.metrics import NoMetrics

    def factory(scope: Scope) -> Sources:
        return Sources(probes=None, logs=NoLogs(), metrics=NoMetrics())  # type: ignore[arg-type]

    budget = LogBudget(quota=60, guards=2, index=0)
    build = budgeted(factory, budget)
    scope = Scope("p", "svc-0", "svc-0-00002-abc", (), datetime.now(UTC), ())
    assert isinstance(build(scope).logs, NoLogs)
    with_logs = Scope("p", "svc-0", "svc-0-00002-abc", (), datetime.now(UTC), fleet_policy.rules)
    wrapped = build(with_logs).logs
    assert isinstance(wrapped, BudgetedLogs)
    assert wrapped.budget is budget


@pytest.fixture
def fleet_policy() -> Any:
    from deploy_guard.policy import load_file
    from fleets import FLEET_POLICY

    return load_file(FLEET_POLICY)
