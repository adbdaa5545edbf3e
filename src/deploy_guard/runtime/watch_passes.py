"""``failure_limit`` in a watch: failing passes counted over the sliding window (pure).

A check judges a logs or metric rule in passes (one read each) and fails it
once more than ``failure_limit`` passes failed. A watch judges its window
every second, each time from scratch; fed one measurement per look, a rule
with ``failure_limit: 1`` would see one failing pass, tolerate it, and never
fail, however long its limit stays broken. :class:`FailingPasses` keeps what
the judge needs between looks: the rule's recent failing passes, which the
watch feeds before the current measurement, so the rule's own state counts
them as a check would.

What a pass is: for a metric rule, one read of Cloud Monitoring (a new
measurement interval); for a logs rule, whose window slides continuously, one
look per ``log_interval`` (the rhythm of a check's passes). A failing pass
counts while it is within the watch's window, so rare blips over a long watch
never add up to a failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from deploy_guard.judge.logs import assess_logs
from deploy_guard.judge.metric import assess_metric
from deploy_guard.measurements import LogMeasurement, Measurement, MetricMeasurement

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule


class FailingPasses:
    """Each tolerant rule's failing passes within the last ``window`` seconds."""

    def __init__(self, rules: Sequence[Rule], *, window: float, log_interval: float) -> None:
        self.window, self.log_interval = window, max(log_interval, 1e-3)
        self.rules = {
            r.name: r for r in rules if r.kind in ("logs", "metric") and r.failure_limit > 0
        }
        #: rule -> (pass key, seconds, measurement) of its recent failing passes.
        self._failing: dict[str, deque[tuple[object, float, Measurement]]] = {}

    def clear(self) -> None:
        """Forget every pass (the watch judges another revision now)."""
        self._failing.clear()

    def feed(self, measured: Sequence[Measurement], now: float) -> list[Measurement]:
        """``measured`` with each tolerant rule's earlier failing passes before its current one
        (those marked incomplete, so the rule's state counts them and decides on the last)."""
        out: list[Measurement] = []
        for m in measured:
            rule = self.rules.get(m.rule)
            if rule is None or m.error is not None:
                out.append(m)
                continue
            key = self._key(m, now)
            kept = self._failing.setdefault(rule.name, deque(maxlen=rule.failure_limit + 1))
            while kept and kept[0][1] <= now - self.window:
                kept.popleft()
            if kept and kept[-1][0] == key:
                kept.pop()  # the same pass judged again: its latest look stands
            if _fails(rule, m):
                kept.append((key, now, m))
            out.extend(replace(old, complete=False) for k, _, old in kept if k != key)
            out.append(m)
        return out

    def _key(self, m: Measurement, now: float) -> object:
        if isinstance(m, MetricMeasurement):
            return ("read", m.end)
        return ("look", int(now // self.log_interval))


def _fails(rule: Rule, m: Measurement) -> bool:
    if isinstance(m, LogMeasurement):
        return assess_logs(rule, m).outcome == "fail"
    if isinstance(m, MetricMeasurement):
        return assess_metric(rule, m).outcome == "fail"
    return False
