"""Live Cloud Logging evidence for the watch: one ``TailLogEntries`` stream, polling as fallback.

A watch judges the serving revisions for as long as it runs, so reading logs in
passes would spend Cloud Logging's small read quota (60 to 120 ``entries.list``
a minute per project, shared with every console user) for ever. Instead
:class:`LiveLogs` keeps ONE ``TailLogEntries`` stream for all the policy's logs
rules, with the same one server-side filter a check's ``ListLogEntries`` sends
(:func:`deploy_guard.gcp.logs.build_filter`), and counts what it streams into a
:class:`~deploy_guard.analysis.window.WindowCounter` keyed by rule, pattern and
revision. Any rule can then be judged at any moment over a sliding window
(:meth:`LiveLogs.measure`): ``max_count`` within it, ``max_rate`` per minute,
``relative_to_baseline`` against the baseline revisions counted over the same
window. Memory is bounded however long it runs: the counter keeps a bounded
number of buckets and entry ids, and a few samples per rule and revision.

Tailing is not guaranteed. Cloud Logging allows 10 live-tailing sessions per
project and refuses the 11th with RESOURCE_EXHAUSTED; a stream can break (a
network blip, a server restart); the Python client is reported to misbehave
with it (googleapis/python-logging 805). Then the source falls back to
``ListLogEntries`` polling, at most one pass every ``interval`` seconds, says so
(a ``live_logs_fallback`` warning, :attr:`LiveLogs.mode` ``"poll"`` and
:attr:`LiveLogs.fallback_reason` for the caller's report) and retries tailing
with exponential back-off. No entry falls into the gaps: a read covers the
window's past at start, each poll re-reads the ingestion delay's overlap, and a
catch-up read follows every (re)opened stream and every batch the server
reports it left out (``suppression_info``); the counter counts each
``insertId`` once, however many times it is read.

The stream and the reads are seams (:data:`TailOpener`, :data:`Lister`): the
production ones (:class:`GrpcTail`, :class:`GrpcLister`) use the official
client; tests feed their own async iterators, or run the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from deploy_guard.errors import GuardError
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.livecount import LiveCounts
from deploy_guard.gcp.logs import INGESTION_OVERLAP, build_filter, rule_clause
from deploy_guard.gcp.source import RevisionSource
from deploy_guard.gcp.tailstream import (
    GrpcLister,
    GrpcTail,
    Listed,
    TailBatch,
    describe_tail_error,
)
from deploy_guard.log import get_logger
from deploy_guard.measurements import LogMeasurement

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule

Mode = Literal["tail", "poll"]
#: ``open(filter, keep_doc)``: the live entries matching ``filter``, batch by batch, until
#: the stream ends (returns) or breaks (raises).
TailOpener = Callable[[str, bool], AsyncIterator[TailBatch]]
#: ``list(filter, keep_doc, deadline)``: one ``ListLogEntries`` pass (it raises GuardError).
Lister = Callable[[str, bool, float], Awaitable[Listed]]

_OVERLAP = INGESTION_OVERLAP.total_seconds()


def _log() -> Any:
    return get_logger("deploy_guard.gcp.tail")


@dataclass(frozen=True)
class Backoff:
    """When to try tailing again after it was refused or broke.

    ``initial * multiplier ** n`` seconds before the n-th retry (from 0), at most
    ``maximum``, give or take ``jitter`` (a share), so that watchers refused
    together do not come back together. A stream that lived ``stable`` seconds
    before it ended is reopened at once and the back-off starts over.
    """

    initial: float = 30.0
    maximum: float = 600.0
    multiplier: float = 2.0
    jitter: float = 0.1
    stable: float = 300.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        return base * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))


@dataclass(frozen=True)
class LiveStatus:
    """What the caller reports about the live source."""

    mode: Mode
    #: Why it polls (None: it tails).
    fallback_reason: str | None
    #: Times it fell back to polling.
    fallbacks: int
    #: Why it last fell back (kept after it tails again, for the report).
    last_fallback_reason: str | None
    #: Streams opened (each a TailLogEntries call).
    tail_opens: int
    #: ListLogEntries passes made (catch-ups and polls).
    reads: int
    #: Entries the tail's server said it left out (a catch-up read fetched them).
    suppressed: int
    #: The last read's error, while no read has succeeded since.
    read_error: str | None


class LiveLogs(RevisionSource):
    """The watch mode's logs source: one live stream, a sliding window, polling as fallback.

    Takes :class:`~deploy_guard.gcp.source.RevisionSource`'s arguments (its
    ``since``: nothing before it counts), plus ``window`` (seconds: the sliding
    window :meth:`measure` judges over), ``interval`` (the least time between
    two ``ListLogEntries`` passes), ``backoff`` and the seams ``tail`` and
    ``lister`` (the official client's by default).
    """

    spec_field = "logs"

    def __init__(
        self,
        clients: Clients,
        *,
        window: float = 300.0,
        interval: float = 10.0,
        backoff: Backoff | None = None,
        confirm_after: float = 2.0,
        tail: TailOpener | None = None,
        lister: Lister | None = None,
        rng: random.Random | None = None,
        **scope: Any,
    ) -> None:
        super().__init__(clients, **scope)
        if window <= 0 or interval <= 0:
            raise ValueError("window and interval must be positive")
        self.window, self.interval = window, interval
        self.backoff = backoff or Backoff()
        #: A stream that has neither answered nor broken for this long is taken as open.
        self.confirm_after = confirm_after
        self._open_tail = tail or GrpcTail(clients, self.project, calls=self.calls)
        self._list = lister or GrpcLister(clients, self.project, calls=self.calls)
        self._rng = rng or random.Random()
        self.counts = LiveCounts(self.rules, origin=self.since.timestamp(), window=window)
        self._mode: Mode = "tail"
        self.fallback_reason: str | None = None
        self._last_fallback: str | None = None
        self._fallbacks = self._opens = self._reads = self._suppressed = 0
        self._read_error: str | None = None
        self._catch_up = True  # the first read fills the window's past
        self._read_at = -math.inf  # loop time the last read started
        self._read_from: float | None = None  # epoch s: where the next poll continues
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._tail_task: asyncio.Task[None] | None = None
        #: Called when entries arrived (a stream batch or a read), so a watcher judges at once.
        self.changed: Callable[[], None] | None = None

    # -- the interface the watch driver uses --------------------------------------------------
    @property
    def mode(self) -> Mode:
        """``"tail"`` while the stream is (believed) open, ``"poll"`` while it falls back."""
        return self._mode

    def status(self) -> LiveStatus:
        return LiveStatus(
            mode=self._mode,
            fallback_reason=self.fallback_reason,
            fallbacks=self._fallbacks,
            last_fallback_reason=self._last_fallback,
            tail_opens=self._opens,
            reads=self._reads,
            suppressed=self._suppressed,
            read_error=self._read_error,
        )

    async def start(self) -> None:
        """Open the stream and read the window's past; returns at once (both run on)."""
        if self._tasks or not self.rules:
            return
        self._tail_task = asyncio.create_task(self._tail_loop(), name="live-logs-tail")
        self._tasks = [
            self._tail_task,
            asyncio.create_task(self._poll_loop(), name="live-logs-poll"),
        ]

    async def stop(self) -> None:
        """Close the stream and stop reading (idempotent)."""
        tasks, self._tasks, self._tail_task = self._tasks, [], None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def measure(
        self, rule: Rule, now: datetime, *, complete: bool = True, window: float | None = None
    ) -> LogMeasurement:
        """``rule`` over the sliding window ending at ``now`` (``window`` s, the source's own by
        default, never before ``since``). ``error`` is set while the counts may have a hole:
        the stream is down and the last read failed."""
        if rule.name not in {r.name for r in self.rules}:
            raise ValueError(f"{rule.name!r} is not one of this source's logs rules")
        until = now.timestamp()
        span = min(window or self.window, self.window)
        start = self.counts.window_start(self.since.timestamp(), until, span)
        return self.counts.measurement(
            rule,
            revision=self.revision,
            baseline=self.baseline,
            start=start,
            until=until,
            complete=complete,
            error=self._gap_error(),
        )

    def retarget(
        self, revision: str, baseline: Sequence[str] = (), since: datetime | None = None
    ) -> None:
        """Watch ``revision`` (against ``baseline``) from now on: a new deploy took traffic.

        The stream is reopened when the set of revisions changed (its filter names
        them), and a read fills the new window's past.
        """
        before = {self.revision, *self.baseline}
        self.revision, self.baseline = revision, list(baseline)
        if since is not None:
            self.since = since
        self.counts.forget_revisions([revision, *baseline])
        if {revision, *baseline} == before or self._tail_task is None:
            return
        self._tail_task.cancel()
        self._tail_task = asyncio.create_task(self._tail_loop(), name="live-logs-tail")
        self._tasks = [t for t in self._tasks if not t.done()] + [self._tail_task]
        self._read_from = None
        self._request_read()

    # -- the filter -----------------------------------------------------------------------------
    def _filter(self, start: float) -> str:
        clauses = [
            rule_clause(r.logs.filter if r.logs else None, list(r.logs.patterns) if r.logs else [])
            for r in self.rules
        ]
        return build_filter(
            service=self.service,
            revisions=[self.revision, *self.baseline],
            since=datetime.fromtimestamp(start, self.since.tzinfo),
            clauses=clauses,
        )

    def _earliest(self) -> float:
        """The oldest time any window can still ask about."""
        return max(self.since.timestamp(), self.now().timestamp() - self.window - _OVERLAP)

    # -- the stream -----------------------------------------------------------------------------
    async def _tail_loop(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            opened = loop.time()
            confirm = loop.call_later(self.confirm_after, self._tail_alive)
            self._opens += 1
            try:
                stream = self._open_tail(self._filter(self._earliest()), self.counts.keep_doc)
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for batch in stream:
                        self._tail_alive()
                        self._take(batch)
                why = "the live tail ended (the server closed it)"
            except Exception as exc:  # any failure of the stream falls back; never ends the loop
                why = describe_tail_error(exc)
            finally:
                confirm.cancel()
            if loop.time() - opened >= self.backoff.stable:
                attempt = 0
                _log().info("live_logs_tail_reopened", reason=why, revision=self.revision)
                self._request_read()  # the moments between two streams
                continue
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            self._fall_back(why, delay)
            await asyncio.sleep(delay)

    def _tail_alive(self) -> None:
        """The stream answered (or stayed open ``confirm_after`` s): tailing again, if polling."""
        if self._mode == "tail":
            return
        self._mode, self.fallback_reason = "tail", None
        _log().info("live_logs_tail_resumed", revision=self.revision, fallbacks=self._fallbacks)
        self._request_read()  # what arrived between the last poll and the stream

    def _fall_back(self, why: str, retry_in: float) -> None:
        """Poll until the next try; the switch is a warning, a retry refused again is not."""
        first = self._mode == "tail"
        self._mode, self.fallback_reason, self._last_fallback = "poll", why, why
        fields = {"reason": why, "retry_tail_in_s": round(retry_in, 1), "revision": self.revision}
        if first:
            self._fallbacks += 1
            _log().warning("live_logs_fallback", mode="poll", interval_s=self.interval, **fields)
        else:
            _log().info("live_logs_tail_retry_failed", mode="poll", **fields)
        self._wake.set()

    def _take(self, batch: TailBatch) -> None:
        for entry in batch.entries:
            self.counts.add(entry)
        if batch.entries:
            self._changed()
        if batch.suppressed:
            self._suppressed += batch.suppressed
            _log().warning(
                "live_logs_suppressed",
                count=batch.suppressed,
                reasons=list(batch.reasons),
                revision=self.revision,
            )
            self._request_read()

    # -- the reads ------------------------------------------------------------------------------
    def _request_read(self) -> None:
        self._catch_up = True
        self._wake.set()

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._mode == "poll" or self._catch_up):
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._read_at + self.interval - loop.time()
            if wait > 0:  # the read quota: one pass per interval, whatever asks for it
                await asyncio.sleep(wait)
                continue
            self._read_at = loop.time()
            self._catch_up = False
            await self._read()

    async def _read(self) -> None:
        started = self.now().timestamp()
        start = self._earliest()
        if self._read_from is not None:
            start = max(start, self._read_from)
        self._reads += 1
        try:
            listed = await self._list(
                self._filter(start), self.counts.keep_doc, self.bound(self.interval)
            )
        except GuardError as exc:
            self._read_error = str(exc)
            self._catch_up = True  # the hole is still there: try again next interval
            _log().warning("live_logs_read_failed", error=str(exc), mode=self._mode)
            return
        for entry in listed.entries:
            self.counts.add(entry)
        self._read_error = None
        if listed.entries:
            self._changed()
        if listed.unfinished and listed.entries:
            # Behind: go on from the newest entry read, or the same pages come back forever.
            self._read_from = max(e.timestamp.timestamp() for e in listed.entries)
            self._catch_up = True
        else:
            self._read_from = started - _OVERLAP

    def _changed(self) -> None:
        if self.changed is not None:
            self.changed()

    def _gap_error(self) -> str | None:
        if self._read_error is None or not (self._mode == "poll" or self._catch_up):
            return None
        if self._mode == "poll":
            return (
                f"Cloud Logging cannot be read: the live tail is down ({self.fallback_reason}) "
                f"and polling failed ({self._read_error})"
            )
        return f"part of the window could not be read ({self._read_error})"
