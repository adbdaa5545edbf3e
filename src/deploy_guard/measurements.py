"""Measurements: what the evidence sources hand to the decision core.

This module is the contract between the I/O side (probes, Cloud Logging,
Cloud Monitoring) and the pure judge. It imports nothing but the standard
library. Every measurement is a *cumulative snapshot* for one rule: a source
may hand the judge a new snapshot for the same rule many times while it works
(``complete=False``), and a last one with ``complete=True``. The judge can
therefore answer early, as soon as the remaining work can no longer change the
rule's outcome (one 1011 when the policy allows none).

Errors are data here, never exceptions: a source that could not measure
returns a measurement whose ``error`` says why, in words that name the likely
cause and the fix ("Cloud Logging answered UNAVAILABLE 4 times; is the
Logging API enabled in project P?").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Names of the failure causes a probe attempt may end with. A probe may add
#: others; these are the ones the reports and the judge know how to word.
CAUSES = (
    "handshake_rejected",  # WebSocket upgrade refused (status != 101)
    "connect_error",  # TCP/TLS connection failed, DNS, refused
    "timeout",  # a step, the handshake or the request timed out
    "wrong_order",  # an expected event came out of order
    "missing_event",  # the stream ended before an expected event arrived
    "unexpected_event",  # an extra event where the scenario forbids extras
    "isolation_breach",  # an event carried another user's id
    "close_code",  # the server closed with a code the rule counts as failure (1011)
    "connection_reset",  # the connection dropped with no close frame (1006)
    "status",  # HTTP status not in the expected set
    "body",  # body substring or JSON-path expectation not met
    "latency",  # slower than the rule's maximum latency
    "too_large",  # more than the probe reads: HTTP body or headers, a WebSocket message (1009)
    "protocol_error",  # the server broke HTTP or WebSocket (invalid UTF-8 1007, bad close 1002)
    "error",  # anything else; the detail says what
)


@dataclass(frozen=True)
class Attempt:
    """One probe attempt: an HTTP request or a whole WebSocket session."""

    ok: bool
    #: One of :data:`CAUSES` when not ok, else None.
    cause: str | None = None
    #: Human words: "close code 1011 (internal error) after 7.0 s".
    detail: str = ""
    #: WebSocket: the close code seen (1006 when the connection dropped); HTTP: None.
    close_code: int | None = None
    #: HTTP status, or the handshake status for a WebSocket (101 when upgraded).
    status: int | None = None
    #: Seconds, keyed by phase: "handshake", "first_event", "scenario", "total" (WS);
    #: "total" (HTTP).
    durations: dict[str, float] = field(default_factory=dict)
    #: Which user / session this was (WS), for samples and isolation reports.
    user: str | None = None
    session: str | None = None
    #: A short transcript for samples: [{"t": 0.01, "dir": "send"|"recv"|"close", "data": ...}].
    transcript: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class ProbeMeasurement:
    """Cumulative result of an ``http`` or ``websocket`` rule's probe."""

    rule: str
    kind: str  # "http" | "websocket"
    #: How many attempts the rule asks for in all (requests or sessions).
    planned: int
    #: How many have finished so far.
    done: int
    succeeded: int
    failures_by_cause: dict[str, int] = field(default_factory=dict)
    #: WebSocket close codes seen, e.g. {1000: 97, 1011: 3}.
    close_codes: dict[int, int] = field(default_factory=dict)
    #: Percentiles in seconds, e.g. {"handshake": {"p50": 0.004, "p95": ..., "p99": ...}}.
    latencies: dict[str, dict[str, float]] = field(default_factory=dict)
    #: A few failed attempts, with transcripts, as evidence.
    samples: tuple[Attempt, ...] = ()
    #: True on the last snapshot (all planned attempts finished, or the probe stopped).
    complete: bool = False
    #: Set when the probe could not run at all (bad URL, no token); the judge says `error`.
    error: str | None = None
    #: Seconds since the probe started, when the first failure was seen (for the timeline).
    first_failure_after: float | None = None

    @property
    def failed(self) -> int:
        return self.done - self.succeeded


@dataclass(frozen=True)
class LogMeasurement:
    """Matches of a ``logs`` rule's patterns in the candidate's log entries."""

    rule: str
    #: Entries the query returned (after the server-side filter), over the window.
    entries_scanned: int
    #: Matches per pattern (regular expression source -> count).
    matches: dict[str, int] = field(default_factory=dict)
    #: Seconds covered by the query window (for rates).
    window_seconds: float = 0.0
    #: The same for the baseline revision, when the rule compares against it.
    baseline_matches: dict[str, int] | None = None
    baseline_window_seconds: float | None = None
    #: A few matching entries as evidence: {"timestamp", "severity", "text"}.
    samples: tuple[dict[str, Any], ...] = ()
    complete: bool = False
    error: str | None = None

    @property
    def total(self) -> int:
        return sum(self.matches.values())


@dataclass(frozen=True)
class MetricMeasurement:
    """A Cloud Monitoring figure for a ``metric`` rule: candidate and baseline."""

    rule: str
    #: "error_rate" (a ratio 0..1), "latency" (seconds), "request_count".
    metric: str
    value: float | None
    #: Requests behind the value, for the rule's minimum sample size.
    requests: int = 0
    baseline_value: float | None = None
    baseline_requests: int = 0
    window_seconds: float = 0.0
    complete: bool = False
    error: str | None = None
    #: The candidate revision's name, so "no data" messages can name it.
    revision: str | None = None
    #: The interval read, candidate and baseline alike (None: nothing was read).
    start: datetime | None = None
    end: datetime | None = None
    #: Why ``value`` is None when the source knows better than "no requests"
    #: (a rollout step too young for complete Monitoring data).
    note: str = ""


Measurement = ProbeMeasurement | LogMeasurement | MetricMeasurement


def source_failed(rule: str, kind: str, error: str, *, metric: str = "") -> Measurement:
    """The last snapshot of a rule whose evidence source raised instead of measuring.

    The judge makes it the rule's ``error`` result with ``error`` as its
    cause, instead of a rule that was silently never measured.
    """
    if kind in ("http", "websocket"):
        return ProbeMeasurement(
            rule=rule, kind=kind, planned=0, done=0, succeeded=0, complete=True, error=error
        )
    if kind == "logs":
        return LogMeasurement(rule=rule, entries_scanned=0, complete=True, error=error)
    return MetricMeasurement(rule=rule, metric=metric, value=None, complete=True, error=error)
