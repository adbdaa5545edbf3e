"""Traces: what a run saw moment by moment, kept for the picture of it, bounded.

The judge needs counts; a person looking at a failed check wants to *see* it:
each probe session as a lane (handshake, every event, the hold, the close and
its code), the log lines that matched and the metric points, on one time axis.
:class:`Traces` keeps that data, and keeps it bounded whatever the run's length:
per rule, the first :data:`FIRST_SESSIONS` sessions that ended, then failed (or
cut) ones only, the first :data:`NOTABLE_HEAD` and the latest
:data:`NOTABLE_TAIL` of them; the first and latest log matches and metric
points the same way; everything else is counted, not kept. A 10,000-session
rule and a week-long watch cost the report the same few hundred kilobytes.

Recording is observability, as logging is: it happens where the thing happens
(:func:`deploy_guard.probes.websocket.run_session` when a session ends or is
cut, the log counters when an entry matches, the metric source after a pass),
and goes to the :class:`Traces` the running command bound to its task tree
with :func:`recording` (a :class:`~contextvars.ContextVar`, as structlog binds
log context: tasks and threads started inside inherit it). Nothing bound
(``deploy-guard probe``, most tests): the calls do nothing, for one context
variable read. No call changes what it observes: the judge never reads a trace.

Times: a session's ``t`` is its start in seconds on the run's timeline (the
report's ``timeline`` ``t``), every other offset of a session counts from its own
start; a log match or metric point has its UTC ``at`` and the ``t`` that puts it on
the same axis. Standard library only, like :mod:`deploy_guard.measurements`.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

#: Sessions kept per rule in the order they ended, failed or not.
FIRST_SESSIONS = 50
#: Failed or cut sessions kept per rule after those: the first ones, and the latest ones.
NOTABLE_HEAD = 25
NOTABLE_TAIL = 25
#: Received events kept per session (a chat turn has five).
EVENTS_PER_SESSION = 16
#: Log matches and metric points kept per rule: the first ones and the latest ones.
LOG_HEAD, LOG_TAIL = 50, 50
METRIC_HEAD, METRIC_TAIL = 30, 90
#: Rules traced at most (a policy has a handful): more are counted, not kept.
MAX_RULES = 64
#: Characters kept of an event name, a failure's words and a log line.
NAME_CHARS, DETAIL_CHARS, TEXT_CHARS = 40, 200, 160

T = TypeVar("T")


@dataclass(frozen=True)
class SessionTrace:
    """One probe session (``websocket``) or request (``http``); seconds from its start.

    ``cut``: the guard stopped it before it ended (a decision, a retarget, the
    run's end): it neither passed nor failed. ``events``: (arrival, name) of
    every message received, ``""`` for one that named no event.
    """

    kind: str
    ok: bool
    end: float
    handshake: float | None = None
    events: tuple[tuple[float, str], ...] = ()
    hold: float | None = None
    hold_wanted: float | None = None
    close_code: int | None = None
    closed_by: str = ""
    closed_at: float | None = None
    status: int | None = None
    cause: str | None = None
    detail: str = ""
    user: str | None = None
    session: str | None = None
    cut: bool = False


class Kept(Generic[T]):
    """The first ``head`` items and the latest ``tail`` after them; the rest only counted."""

    def __init__(self, head: int, tail: int) -> None:
        self.head: list[T] = []
        self.tail: deque[T] = deque(maxlen=tail)
        self._head_size = head
        self.seen = 0

    def add(self, item: T) -> None:
        self.seen += 1
        if len(self.head) < self._head_size:
            self.head.append(item)
        else:
            self.tail.append(item)  # the oldest of the tail falls out

    def items(self) -> list[T]:
        return [*self.head, *self.tail]

    @property
    def left_out(self) -> int:
        return self.seen - len(self.head) - len(self.tail)


class _RuleSessions:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.first: list[dict[str, Any]] = []
        self.notable: Kept[dict[str, Any]] = Kept(NOTABLE_HEAD, NOTABLE_TAIL)
        self.seen = self.failed = self.cut = 0

    def add(self, record: dict[str, Any]) -> None:
        self.seen += 1
        self.cut += record["cut"]
        self.failed += not record["ok"] and not record["cut"]
        if len(self.first) < FIRST_SESSIONS:
            self.first.append(record)
        elif record["cut"] or not record["ok"]:
            self.notable.add(record)

    def to_dict(self) -> dict[str, Any]:
        sessions = sorted([*self.first, *self.notable.items()], key=lambda r: r["t"])
        return {
            "kind": self.kind,
            "seen": self.seen,
            "failed": self.failed,
            "cut": self.cut,
            "left_out": self.seen - len(sessions),
            "sessions": [dict(r, events=[list(e) for e in r["events"]]) for r in sessions],
        }


class Traces:
    """The run's traces (see the module docstring); :meth:`to_dict` is the report's ``traces``.

    ``clock``: seconds on the run's timeline now; ``wall``: the UTC epoch now
    (the two place a log entry's timestamp on the timeline).
    """

    def __init__(
        self, clock: Callable[[], float] | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        started = time.monotonic()
        self._clock = clock or (lambda: time.monotonic() - started)
        self._wall = wall
        self._sessions: dict[str, _RuleSessions] = {}
        self._logs: dict[str, Kept[dict[str, Any]]] = {}
        self._metrics: dict[str, tuple[str, Kept[dict[str, Any]]]] = {}
        #: Records of rules beyond :data:`MAX_RULES`, counted only.
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self._sessions or self._logs or self._metrics)

    def _room(self, table: dict[str, Any], rule: str) -> bool:
        if rule in table or len(self._sessions) + len(self._logs) + len(self._metrics) < MAX_RULES:
            return True
        self.dropped += 1
        return False

    def _t(self, at: datetime) -> float:
        """``at`` on the run's timeline."""
        return round(at.timestamp() - (self._wall() - self._clock()), 3)

    def session(self, rule: str, trace: SessionTrace, *, age: float) -> None:
        """A session of ``rule`` that ended (or was cut) now, ``age`` seconds after it began."""
        if not self._room(self._sessions, rule):
            return
        book = self._sessions.setdefault(rule, _RuleSessions(trace.kind))
        record = {
            "t": round(max(0.0, self._clock() - age), 4),
            "end": round(trace.end, 4),
            "ok": trace.ok,
            "cut": trace.cut,
            "handshake": _round(trace.handshake),
            "events": tuple(
                (round(at, 4), name[:NAME_CHARS]) for at, name in trace.events[:EVENTS_PER_SESSION]
            ),
            "hold": _round(trace.hold),
            "hold_wanted": trace.hold_wanted,
            "close_code": trace.close_code,
            "closed_by": trace.closed_by,
            "closed_at": _round(trace.closed_at),
            "status": trace.status,
            "cause": trace.cause,
            "detail": trace.detail[:DETAIL_CHARS],
            "user": trace.user,
            "session": trace.session,
        }
        book.add(record)

    def log_match(
        self, rule: str, at: datetime, *, severity: str, text: str, revision: str = ""
    ) -> None:
        """A log entry of ``revision`` written at ``at`` matched ``rule`` (counted once)."""
        if not self._room(self._logs, rule):
            return
        kept = self._logs.setdefault(rule, Kept(LOG_HEAD, LOG_TAIL))
        kept.add(
            {
                "t": self._t(at),
                "at": at.isoformat(),
                "severity": severity,
                "text": text[:TEXT_CHARS],
                "revision": revision,
            }
        )

    def metric_point(
        self,
        rule: str,
        metric: str,
        *,
        value: float | None,
        end: datetime | None,
        requests: int = 0,
        baseline: float | None = None,
        error: str | None = None,
    ) -> None:
        """A metric pass of ``rule``: its figure over the interval that ended at ``end``."""
        if not self._room(self._metrics, rule):
            return
        _metric, kept = self._metrics.setdefault(rule, (metric, Kept(METRIC_HEAD, METRIC_TAIL)))
        now = self._clock()
        kept.add(
            {
                "t": self._t(end) if end is not None else round(now, 3),
                "at": end.isoformat() if end is not None else None,
                "value": value,
                "requests": requests,
                "baseline": baseline,
                "error": (error or "")[:DETAIL_CHARS] or None,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The report's ``traces`` document (described in ``docs/reports.md``)."""
        return {
            "sessions": {rule: book.to_dict() for rule, book in self._sessions.items()},
            "log_matches": {
                rule: {"seen": kept.seen, "left_out": kept.left_out, "matches": kept.items()}
                for rule, kept in self._logs.items()
            },
            "metric_points": {
                rule: {
                    "metric": metric,
                    "seen": kept.seen,
                    "left_out": kept.left_out,
                    "points": kept.items(),
                }
                for rule, (metric, kept) in self._metrics.items()
            },
            "rules_left_out": self.dropped,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


_current: ContextVar[Traces | None] = ContextVar("deploy_guard_traces", default=None)


@contextlib.contextmanager
def recording(traces: Traces) -> Iterator[Traces]:
    """Record into ``traces`` everything this task (and what it starts) traces, until exit."""
    token = _current.set(traces)
    try:
        yield traces
    finally:
        _current.reset(token)


def bind(traces: Traces) -> Token[Traces | None]:
    """:func:`recording` for a body that already has its ``try``: pair with :func:`unbind`."""
    return _current.set(traces)


def unbind(token: Token[Traces | None]) -> None:
    _current.reset(token)


def current() -> Traces | None:
    """The traces being recorded into here, or None."""
    return _current.get()


def session(rule: str, trace: SessionTrace, *, age: float) -> None:
    """Record a session that ended (or was cut) now, if traces are being recorded."""
    traces = _current.get()
    if traces is not None and rule:
        traces.session(rule, trace, age=age)


def log_match(rule: str, at: datetime, *, severity: str, text: str, revision: str = "") -> None:
    traces = _current.get()
    if traces is not None:
        traces.log_match(rule, at, severity=severity, text=text, revision=revision)


def metric_point(measurement: Any) -> None:
    """Record a :class:`~deploy_guard.measurements.MetricMeasurement` pass as a point."""
    traces = _current.get()
    if traces is None:
        return
    m = measurement
    traces.metric_point(
        m.rule,
        m.metric,
        value=m.value,
        end=m.end,
        requests=m.requests,
        baseline=m.baseline_value,
        error=m.error,
    )


__all__ = [
    "SessionTrace",
    "Traces",
    "bind",
    "current",
    "log_match",
    "metric_point",
    "recording",
    "session",
    "unbind",
]
