"""Cloud Logging's live tailing (``TailLogEntries``) on a :class:`LogStore`.

A watcher (issue 12) keeps one stream open for hours, so the emulator has to
behave like the real service where a long-running client can notice:

- **Sessions are scarce.** Cloud Logging allows 10 open live-tailing sessions
  per project; the 11th is refused with RESOURCE_EXHAUSTED, and a session's
  slot comes back when its stream ends, however it ends (the client half-closes
  its requests, cancels, the server breaks it).
- **A buffer window orders entries.** The first request's ``buffer_window``
  (0 to 60 s, 2 s when unset) is how long an entry is held before it is sent,
  so that a late entry with an earlier timestamp can be sent before it. Each
  response's entries are in timestamp order; across responses there is no
  promise, as the API says ("Ordering is not guaranteed between separate
  responses").
- **Nothing grows without bound.** A session holds at most ``max_pending``
  entries. A client that does not read (gRPC flow control stops the server's
  writes) makes the session drop what does not fit, and the next response says
  how many in ``suppression_info`` (reason ``NOT_CONSUMED``); more than
  ``entries_per_minute`` entries sent for one project in a minute (60,000 on
  Cloud Logging) are dropped with reason ``RATE_LIMIT``. The counts are those
  "since the last streamed response", at most one per reason per response; a
  response may carry only suppression counts.
- **Filtering happens where entries are written.** The store calls the hub in
  the appending thread; each session keeps only the entries its filter
  matches, so what waits for a slow reader is bounded by matches, not by
  everything the project logs.

The stream ends with OK when the client closes its side (its request iterator
ends), after the held entries are sent. Cloud Logging does not document what it
does then; a half-closed session here ends rather than streams on, so a client
that tails must keep its request iterator open for as long as it wants entries
(the Java and Node.js wrappers never close their side). With the Python client
``tail_log_entries(iter([request]))`` ends at once: use a generator that waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc

from deploy_guard.emulator.logstore import LogStore, StoredEntry
from deploy_guard.errors import EmulatorError
from deploy_guard.logfilter import Filter, parse

#: Cloud Logging's quota: open live-tailing sessions per project.
MAX_SESSIONS = 10
#: Live-tailing entries returned per minute (per project here).
ENTRIES_PER_MINUTE = 60_000
#: ``buffer_window`` when the first request leaves it unset, and its bounds.
DEFAULT_BUFFER_WINDOW_S = 2.0
MAX_BUFFER_WINDOW_S = 60.0
#: Entries one session holds for its client at most (then NOT_CONSUMED drops).
MAX_PENDING = 10_000
#: Entries in one response at most (the rest follow in the next ones).
MAX_RESPONSE_ENTRIES = 1_000


def _invalid(message: str) -> EmulatorError:
    return EmulatorError("INVALID_ARGUMENT", message)


def buffer_window_s(request: Any) -> float:
    """The first request's ``buffer_window`` in seconds (2 s unset; 0-60 s, else invalid)."""
    from google.cloud.logging_v2.types import TailLogEntriesRequest

    if not TailLogEntriesRequest.pb(request).HasField("buffer_window"):
        return DEFAULT_BUFFER_WINDOW_S
    window: timedelta = request.buffer_window
    seconds = window.total_seconds()
    if not 0.0 <= seconds <= MAX_BUFFER_WINDOW_S:
        raise _invalid(
            f"buffer_window {seconds:g}s is out of range: valid values are between "
            f"0 and {int(MAX_BUFFER_WINDOW_S * 1000)} milliseconds"
        )
    return seconds


@dataclass
class _Held:
    """One entry a session holds: ordered by its timestamp key in the heap."""

    key: tuple[int, int]
    arrival: float
    item: StoredEntry
    sent: bool = False

    def __lt__(self, other: _Held) -> bool:
        return self.key < other.key


@dataclass
class TailSession:
    """One open ``TailLogEntries`` stream: what it selects and what it holds.

    ``offer`` runs in whatever thread appends to the store; ``take`` runs on
    the server's event loop. The lock keeps the two apart.
    """

    projects: frozenset[str]
    flt: Filter
    window_s: float
    max_pending: int = MAX_PENDING
    clock: Callable[[], float] = time.monotonic
    #: Called (from any thread) when the flusher should look again.
    wake: Callable[[], None] = lambda: None
    _by_arrival: deque[_Held] = field(default_factory=deque)
    _by_key: list[_Held] = field(default_factory=list)
    _held: int = 0
    #: Entries with a key at or below it are due (the newest key of a due entry).
    _watermark: tuple[int, int] = (-1, -1)
    _not_consumed: int = 0
    _woken: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, batch: list[StoredEntry]) -> None:
        """Keep the entries of a stored batch this session selects (dropping past the cap)."""
        matched = [s for s in batch if s.project in self.projects and self.flt.matches(s.data)]
        if not matched:
            return
        with self._lock:
            was_empty = self._held == 0
            now = self.clock()
            self._drop_sent_arrivals()
            for item in matched:
                # The arrival queue also keeps entries sent early (before their window
                # passed) until their window passes: it is what the cap bounds.
                if len(self._by_arrival) >= self.max_pending:
                    self._not_consumed += 1
                    continue
                held = _Held(item.key, now, item)
                self._by_arrival.append(held)
                heapq.heappush(self._by_key, held)
                self._held += 1
            # A window of 0 sends at once; otherwise only the oldest entry sets the deadline.
            notify = (self.window_s == 0 or was_empty) and not self._woken
            if notify:
                self._woken = True
        if notify:
            self.wake()

    def wait_s(self) -> float | None:
        """Seconds until an entry is due (0: now; None: nothing held)."""
        with self._lock:
            self._woken = False
            if self._watermark >= (self._by_key[0].key if self._by_key else (1 << 62, 0)):
                return 0.0
            self._drop_sent_arrivals()
            if not self._by_arrival:
                return None
            return max(0.0, self._by_arrival[0].arrival + self.window_s - self.clock())

    def take(self, *, everything: bool = False) -> tuple[list[StoredEntry], int]:
        """Due entries in timestamp order (at most a response's worth) and the count of
        entries dropped for a slow reader since the last take.

        Due: held for the window, and every held entry with an earlier timestamp
        (a late arrival is sent before, not after, the entries it precedes).
        ``everything`` (the session is ending) sends what is held regardless.
        """
        with self._lock:
            self._woken = False
            deadline = self.clock() - self.window_s
            while self._by_arrival and (everything or self._by_arrival[0].arrival <= deadline):
                held = self._by_arrival.popleft()
                if not held.sent and held.key > self._watermark:
                    self._watermark = held.key
            out: list[StoredEntry] = []
            while (
                self._by_key
                and (everything or self._by_key[0].key <= self._watermark)
                and len(out) < MAX_RESPONSE_ENTRIES
            ):
                held = heapq.heappop(self._by_key)
                held.sent = True
                self._held -= 1
                out.append(held.item)
            dropped, self._not_consumed = self._not_consumed, 0
            return out, dropped

    @property
    def held(self) -> int:
        """Entries waiting to be sent."""
        with self._lock:
            return self._held

    def _drop_sent_arrivals(self) -> None:
        while self._by_arrival and self._by_arrival[0].sent:
            self._by_arrival.popleft()


class _MinuteRate:
    """Entries sent in the last 60 s, in per-second buckets (at most 60 of them)."""

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()  # [second, count]
        self._total = 0

    def admit(self, wanted: int, limit: int, now: float) -> int:
        second = int(now)
        while self._buckets and self._buckets[0][0] <= second - 60:
            self._total -= self._buckets.popleft()[1]
        allowed = max(0, min(wanted, limit - self._total))
        if allowed:
            if self._buckets and self._buckets[-1][0] == second:
                self._buckets[-1][1] += allowed
            else:
                self._buckets.append([second, allowed])
            self._total += allowed
        return allowed


class TailHub:
    """The live-tailing sessions on one store: the per-project limit and the fan-out.

    One store listener serves every session. ``max_sessions``,
    ``entries_per_minute`` and ``max_pending`` default to Cloud Logging's
    numbers; tests lower them to reach the limits quickly.
    """

    def __init__(
        self,
        store: LogStore,
        *,
        max_sessions: int = MAX_SESSIONS,
        entries_per_minute: int = ENTRIES_PER_MINUTE,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_sessions = max_sessions
        self.entries_per_minute = entries_per_minute
        self.max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: list[TailSession] = []
        self._rates: dict[str, _MinuteRate] = {}
        #: Entries dropped so far, by reason (``RATE_LIMIT``, ``NOT_CONSUMED``).
        self.suppressed: dict[str, int] = {"RATE_LIMIT": 0, "NOT_CONSUMED": 0}
        store.subscribe(self._fan_out)

    def _fan_out(self, batch: list[StoredEntry]) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.offer(batch)

    def open(self, projects: frozenset[str], flt: Filter, window_s: float) -> TailSession:
        """A new session, or RESOURCE_EXHAUSTED when a project has all its sessions open."""
        with self._lock:
            for project in sorted(projects):
                count = sum(project in s.projects for s in self._sessions)
                if count >= self.max_sessions:
                    raise EmulatorError(
                        "RESOURCE_EXHAUSTED",
                        f"Quota exceeded: project {project} has {count} live-tailing sessions "
                        f"open (at most {self.max_sessions} per project); end one, or read "
                        "with ListLogEntries",
                    )
            session = TailSession(
                projects, flt, window_s, max_pending=self.max_pending, clock=self._clock
            )
            self._sessions.append(session)
        return session

    def close(self, session: TailSession) -> None:
        """Give the session's slot back (idempotent)."""
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def open_sessions(self, project: str | None = None) -> int:
        """Sessions open (for ``project``, or in all)."""
        with self._lock:
            return sum(project is None or project in s.projects for s in self._sessions)

    def held(self) -> int:
        """Entries the open sessions hold for their clients, in all."""
        with self._lock:
            sessions = list(self._sessions)
        return sum(s.held for s in sessions)

    def admit(self, items: list[StoredEntry]) -> tuple[list[StoredEntry], int]:
        """The entries the per-project rate lets through, and how many it dropped."""
        if not items:
            return items, 0
        now = self._clock()
        by_project: dict[str, int] = {}
        for item in items:
            by_project[item.project] = by_project.get(item.project, 0) + 1
        with self._lock:
            allowed = {
                project: self._rates.setdefault(project, _MinuteRate()).admit(
                    wanted, self.entries_per_minute, now
                )
                for project, wanted in by_project.items()
            }
        kept: list[StoredEntry] = []
        for item in items:
            if allowed[item.project] > 0:
                allowed[item.project] -= 1
                kept.append(item)
        return kept, len(items) - len(kept)

    def count_suppressed(self, reason: str, count: int) -> None:
        if count:
            with self._lock:
                self.suppressed[reason] += count


def _response(entries: list[StoredEntry], rate_limited: int, not_consumed: int) -> Any:
    from google.cloud.logging_v2 import types

    info = types.TailLogEntriesResponse.SuppressionInfo
    suppression = [
        info(reason=reason, suppressed_count=count)
        for reason, count in (
            (info.Reason.RATE_LIMIT, rate_limited),
            (info.Reason.NOT_CONSUMED, not_consumed),
        )
        if count
    ]
    return types.TailLogEntriesResponse(
        entries=[item.proto() for item in entries], suppression_info=suppression
    )


def stream_handler(
    hub: TailHub, projects_of: Callable[[list[str]], set[str]]
) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """The ``TailLogEntries`` handler (an async generator function) serving ``hub``."""

    async def tail_log_entries(
        requests: AsyncIterator[Any], _context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return  # closed before asking for anything
        projects = frozenset(projects_of(list(first.resource_names)))
        flt = parse(first.filter)
        window = buffer_window_s(first)
        session = hub.open(projects, flt, window)
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the stream is gone
                loop.call_soon_threadsafe(woken.set)

        session.wake = wake
        reader = asyncio.create_task(_drain(requests, woken))
        try:
            while True:
                if not reader.done():
                    await _sleep_until_due(session, woken)
                ending = reader.done()
                if ending and (error := reader.exception()) is not None:
                    raise error
                while True:
                    entries, not_consumed = session.take(everything=ending)
                    sent, rate_limited = hub.admit(entries)
                    hub.count_suppressed("RATE_LIMIT", rate_limited)
                    hub.count_suppressed("NOT_CONSUMED", not_consumed)
                    if sent or rate_limited or not_consumed:
                        yield _response(sent, rate_limited, not_consumed)
                    if len(entries) < MAX_RESPONSE_ENTRIES:
                        break
                if ending:
                    return
        finally:
            hub.close(session)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    return tail_log_entries


async def _drain(requests: AsyncIterator[Any], woken: asyncio.Event) -> None:
    """Read (and ignore) later requests; when the client closes its side, wake the flusher."""
    try:
        async for _ in requests:
            pass
    finally:
        woken.set()


async def _sleep_until_due(session: TailSession, woken: asyncio.Event) -> None:
    """Wait for a wake-up, or for the held entries' window to pass."""
    wait = session.wait_s()
    if wait == 0.0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(woken.wait(), timeout=wait)
    woken.clear()
