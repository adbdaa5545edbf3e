"""Counting log matches over time: a pure windowed counter with bounded memory.

A check counts a revision's matching log entries once, from the rollout on; a
rollout step counts them over its own window; the watch mode counts them over
sliding windows for as long as it runs. All three are this counter: entries go
in with a time, an id and the labels they count for (a rule's pattern, the
candidate's or the baseline's side), and counts come out for any window
``[since, until)``, or as a rate per minute.

Why it is built this way:

- Cloud Logging passes overlap (each re-reads the last minute, for the
  ingestion delay), so the same entry comes back: the counter remembers the
  ids it counted and counts each entry once. It forgets ids that are older
  than ``id_horizon`` before the newest entry: a reader that re-reads at most
  that far back can never bring them again, and the counter refuses an entry
  older than that rather than count it twice (:meth:`WindowCounter.add`
  returns False). ``max_ids`` bounds a burst within the horizon: the oldest
  ids go first, and the refusal line moves up to them.
- Counts live in buckets of ``bucket`` seconds, aligned on ``origin``.
  Buckets older than ``horizon`` before the newest entry are folded into one
  running total: the count since the beginning stays exact however long the
  counter runs, while windows that start inside the folded past can no longer
  be told apart (asking for one is a ValueError, never a wrong number).
- A window ``[since, until)`` counts the buckets it overlaps: exact when
  ``since`` and ``until`` fall on bucket boundaries (``origin`` plus a
  multiple of ``bucket``: a source counting from its window's start puts
  ``origin`` there), or when no entry lies outside the window in its edge
  buckets.

No I/O, no clock: times are plain seconds (epoch seconds in practice), given
by the caller. Memory is at most ``horizon / bucket + 2`` buckets and
``max_ids`` ids, whatever the number of entries or the time they span.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WindowCounter(Generic[K]):
    """Counts per label in time buckets, each entry id once, in bounded memory."""

    def __init__(
        self,
        *,
        bucket: float = 10.0,
        horizon: float = 3600.0,
        id_horizon: float = 300.0,
        max_ids: int = 100_000,
        origin: float = 0.0,
    ) -> None:
        if bucket <= 0:
            raise ValueError("bucket must be positive")
        if horizon < bucket:
            raise ValueError("horizon must be at least one bucket")
        if not 0 <= id_horizon <= horizon:
            raise ValueError("need 0 <= id_horizon <= horizon")
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.bucket, self.horizon, self.origin = bucket, horizon, origin
        self.id_horizon, self.max_ids = id_horizon, max_ids
        self._buckets: dict[int, Counter[K]] = {}
        #: Everything counted in buckets that were folded (older than the horizon).
        self._folded: Counter[K] = Counter()
        #: Buckets with an index below this one are folded (None: none yet).
        self._folded_below: int | None = None
        self._first: int | None = None  # index of the first bucket ever counted
        self._ids: dict[str, float] = {}
        self._by_time: list[tuple[float, str]] = []  # heap of (time, id): oldest first
        #: Entries at or before this time are refused: their ids may have been forgotten.
        self._refuse_upto = -math.inf
        #: The newest entry time seen (None: nothing counted yet).
        self.newest: float | None = None
        #: Entries refused as too old to tell whether they were counted.
        self.refused = 0

    # -- feeding ---------------------------------------------------------------------------
    def add(self, entry_id: str, at: float, labels: Iterable[K]) -> bool:
        """Count the entry ``entry_id`` at time ``at`` once for each of ``labels``.

        False when it was not counted: already counted (a re-read), or older
        than ``id_horizon`` before the newest entry (its id may be forgotten, so
        it cannot be told from one already counted). An entry with no label is
        still remembered: it was seen, and a re-read must not count it later.
        """
        if entry_id in self._ids:
            return False
        if self._too_old(at):
            self.refused += 1
            return False
        self._remember(entry_id, at)
        index = self._index(at)
        if self._first is None or index < self._first:
            self._first = index
        self._buckets.setdefault(index, Counter()).update(labels)
        if self.newest is None or at > self.newest:
            self.newest = at
            self._forget()
        return True

    def _too_old(self, at: float) -> bool:
        if at <= self._refuse_upto:
            return True
        return self.newest is not None and at < self.newest - self.id_horizon

    def _remember(self, entry_id: str, at: float) -> None:
        self._ids[entry_id] = at
        heapq.heappush(self._by_time, (at, entry_id))
        while len(self._ids) > self.max_ids:  # a burst: the oldest go, and refusal moves up
            when, oldest = heapq.heappop(self._by_time)
            del self._ids[oldest]
            self._refuse_upto = max(self._refuse_upto, when)

    def _forget(self) -> None:
        """Fold buckets past the horizon and drop ids past the id horizon."""
        assert self.newest is not None
        floor = self.newest - self.id_horizon
        while self._by_time and self._by_time[0][0] < floor:
            when, oldest = heapq.heappop(self._by_time)
            del self._ids[oldest]
            self._refuse_upto = max(self._refuse_upto, when)
        keep_from = self._index(self.newest - self.horizon)
        old = [i for i in self._buckets if i < keep_from]
        for index in old:
            self._folded.update(self._buckets.pop(index))
        if old:
            self._folded_below = keep_from

    def _index(self, at: float) -> int:
        return math.floor((at - self.origin) / self.bucket)

    # -- reading ---------------------------------------------------------------------------
    def count(self, label: K, since: float | None = None, until: float | None = None) -> int:
        """Entries counted for ``label`` in the buckets overlapping ``[since, until)``.

        ``None`` leaves that side open: ``count(label)`` is everything counted.
        A ``since`` inside the folded past is a ValueError (that detail is gone).
        """
        return self.counts(since, until).get(label, 0)

    def counts(self, since: float | None = None, until: float | None = None) -> Counter[K]:
        """Every label's count over ``[since, until)`` (see :meth:`count`)."""
        lo = -math.inf if since is None else self._index(since)
        # the last bucket that starts before ``until``
        hi = math.inf if until is None else math.ceil((until - self.origin) / self.bucket) - 1
        total: Counter[K] = Counter()
        if self._folded_below is not None and self._first is not None:
            first, last = self._first, self._folded_below - 1  # the folded buckets' range
            if lo <= first and hi >= last:
                total.update(self._folded)
            elif lo <= last and hi >= first:
                raise ValueError(
                    "the window reaches into the past the counter has folded: it keeps "
                    f"{self.horizon:g} s of detail before the newest entry"
                )
        for index, tally in self._buckets.items():
            if lo <= index <= hi:
                total.update(tally)
        return total

    def per_minute(self, label: K, since: float, until: float) -> float:
        """The rate of ``label`` over ``[since, until)``, per minute (0 for an empty window)."""
        seconds = until - since
        return self.count(label, since, until) * 60.0 / seconds if seconds > 0 else 0.0

    # -- memory ----------------------------------------------------------------------------
    @property
    def buckets(self) -> int:
        """Buckets held in detail (bounded by ``horizon / bucket + 2``)."""
        return len(self._buckets)

    @property
    def ids(self) -> int:
        """Entry ids remembered for de-duplication (bounded by ``max_ids``)."""
        return len(self._ids)
