"""Counting live log entries for sliding windows: per rule pattern and revision, no I/O.

:class:`LiveCounts` is the pure half of :class:`deploy_guard.gcp.tail.LiveLogs`:
entries come in from a stream or a read, in any order and any number of times;
each ``insertId`` is counted once, in a
:class:`~deploy_guard.analysis.window.WindowCounter` keyed by :class:`Label`
(rule, pattern, revision), so any rule can be judged over any window that ends
now, for the candidate and its baseline alike, whichever revision is which at
the moment (a watch follows deploys). Matching is the check's
(:class:`deploy_guard.gcp.logs.CloudLogging`): a rule's patterns on the entry's
text, and its own filter fragment again, client-side, when the rules' fragments
differ (one server-side filter brought in the entries of all of them).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from deploy_guard import traces
from deploy_guard.analysis.window import WindowCounter
from deploy_guard.gcp.logs import (
    INGESTION_OVERLAP,
    SAMPLES_PER_RULE,
    Entry,
    RuleMatcher,
    entry_sample,
)
from deploy_guard.measurements import LogMeasurement

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule

_OVERLAP = INGESTION_OVERLAP.total_seconds()


class Label(NamedTuple):
    """What one count is of: a rule's pattern (``*``: its filter) in one revision's entries."""

    rule: str
    pattern: str
    revision: str


def _scanned(revision: str) -> Label:
    """The entries of ``revision`` the filter brought in, whatever rule they matched."""
    return Label("", "", revision)


class LiveCounts:
    """Every streamed or read entry counted once per rule pattern and revision (no I/O).

    ``window`` is the longest sliding window a caller will ask for: counts are
    kept in detail that far back (plus the ingestion overlap), and entry ids
    as long, so a late read of the window's past never counts an entry twice.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        origin: float,
        window: float,
        bucket: float = 1.0,
        max_ids: int = 50_000,
    ) -> None:
        horizon = window + _OVERLAP + 2 * bucket
        self.counter: WindowCounter[Label] = WindowCounter(
            bucket=bucket, horizon=horizon, id_horizon=horizon, max_ids=max_ids, origin=origin
        )
        self.rules = list(rules)
        self.matcher = RuleMatcher(self.rules)
        #: The few newest matching entries per (rule, revision): (time, sample).
        self._samples: dict[tuple[str, str], deque[tuple[float, dict[str, Any]]]] = {}

    @property
    def keep_doc(self) -> bool:
        """Whether entries must carry their filter-language form (a rule filters client-side)."""
        return self.matcher.keep_doc

    def add(self, entry: Entry) -> bool:
        """Count ``entry`` (False: already counted, or too old to tell)."""
        at = entry.timestamp.timestamp()
        labels = [_scanned(entry.revision)]
        matched: list[str] = []
        for name, hits in self.matcher.hits(entry):
            labels.extend(Label(name, p, entry.revision) for p in hits)
            if hits:
                matched.append(name)
        if not self.counter.add(entry.key, at, labels):
            return False
        for name in matched:
            kept = self._samples.setdefault((name, entry.revision), deque(maxlen=SAMPLES_PER_RULE))
            kept.append((at, entry_sample(entry)))
            traces.log_match(
                name,
                entry.timestamp,
                severity=entry.severity,
                text=entry.text,
                revision=entry.revision,
            )
        return True

    def forget_revisions(self, keep: Sequence[str]) -> None:
        """Drop the samples of revisions no longer watched (their counts age out by themselves)."""
        wanted = {*keep, ""}
        for key in [k for k in self._samples if k[1] not in wanted]:
            del self._samples[key]

    def window_start(self, since: float, until: float, window: float) -> float:
        """Where a window ending at ``until`` starts: on a bucket boundary, so counts are exact."""
        c = self.counter
        start = c.origin + math.floor((until - window - c.origin) / c.bucket) * c.bucket
        return max(since, start)

    def measurement(
        self,
        rule: Rule,
        *,
        revision: str,
        baseline: Sequence[str],
        start: float,
        until: float,
        complete: bool,
        error: str | None,
    ) -> LogMeasurement:
        """``rule``'s counts over ``[start, until)``: ``revision`` (and unlabelled entries)
        as the candidate, ``baseline`` summed as the baseline."""
        patterns = list(rule.logs.patterns) if rule.logs and rule.logs.patterns else ["*"]
        try:
            counts = self.counter.counts(start, until)
        except ValueError as exc:  # a window reaching into the folded past: say so
            return LogMeasurement(
                rule=rule.name, entries_scanned=0, complete=complete, error=str(exc)
            )
        mine = (revision, "")

        def total(rule_name: str, pattern: str, revisions: Sequence[str]) -> int:
            return sum(counts[Label(rule_name, pattern, r)] for r in revisions)

        seconds = max(0.0, until - start)
        samples = [
            s
            for r in mine
            for at, s in self._samples.get((rule.name, r), ())
            if start <= at < until
        ]
        samples.sort(key=lambda s: str(s["timestamp"]))
        return LogMeasurement(
            rule=rule.name,
            entries_scanned=sum(counts[_scanned(r)] for r in mine),
            matches={p: total(rule.name, p, mine) for p in patterns},
            window_seconds=seconds,
            baseline_matches=(
                {p: total(rule.name, p, baseline) for p in patterns} if baseline else None
            ),
            baseline_window_seconds=seconds if baseline else None,
            samples=tuple(samples[-SAMPLES_PER_RULE:]),
            complete=complete,
            error=error,
        )
