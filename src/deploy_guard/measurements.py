"""Measurements: what the evidence sources hand to the decision core.

This module is the contract between the I/O side (probes, Cloud Logging,
Cloud Monitoring) and the pure judge. It imports nothing but the standard
library (and :mod:`deploy_guard.histogram`, which imports nothing else).
Every measurement is a *cumulative snapshot* for one rule: a source
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

from deploy_guard.histogram import Histogram

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
    #: Seconds from the probe's start to when it ended; set on the samples a measurement keeps
    #: (they are ordered, and merged across shards, by it).
    after: float | None = None


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
    #: Percentiles in seconds, e.g. {"handshake": {"p50": 0.004, "p95": ..., "p99": ...}},
    #: read from :attr:`histograms` (within 0.78 %; the max is exact).
    latencies: dict[str, dict[str, float]] = field(default_factory=dict)
    #: A few failed attempts, with transcripts, as evidence.
    samples: tuple[Attempt, ...] = ()
    #: True on the last snapshot (all planned attempts finished, or the probe stopped).
    complete: bool = False
    #: Set when the probe could not run at all (bad URL, no token); the judge says `error`.
    error: str | None = None
    #: Seconds since the probe started, when the first failure was seen (for the timeline).
    first_failure_after: float | None = None
    #: The durations behind :attr:`latencies`, by phase: what shards merge (adding buckets).
    histograms: dict[str, Histogram] = field(default_factory=dict)

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


# --- serialising probe measurements (shards write them; `deploy-guard judge` reads them) -------

_ATTEMPT_FIELDS = ("ok", "cause", "detail", "close_code", "status", "durations", "user", "session")


def attempt_to_dict(a: Attempt) -> dict[str, Any]:
    """A sample attempt as JSON-ready data (its words are already redacted by the probe)."""
    out: dict[str, Any] = {name: getattr(a, name) for name in _ATTEMPT_FIELDS}
    out["transcript"] = list(a.transcript)
    out["after"] = a.after
    return out


def attempt_from_dict(data: Any) -> Attempt:
    """Read :func:`attempt_to_dict`'s output back; ValueError naming what is wrong."""
    d = _mapping(data, "sample")
    durations = _mapping(d.get("durations", {}), "sample durations")
    transcript = d.get("transcript", [])
    if not isinstance(transcript, list) or not all(isinstance(e, dict) for e in transcript):
        raise ValueError("sample transcript is not a list of objects")
    return Attempt(
        ok=_typed(d.get("ok"), bool, "sample ok"),
        cause=_optional(d.get("cause"), str, "sample cause"),
        detail=_typed(d.get("detail", ""), str, "sample detail"),
        close_code=_optional(d.get("close_code"), int, "sample close_code"),
        status=_optional(d.get("status"), int, "sample status"),
        durations={str(k): _seconds(v, f"sample duration {k}") for k, v in durations.items()},
        user=_optional(d.get("user"), str, "sample user"),
        session=_optional(d.get("session"), str, "sample session"),
        transcript=tuple(transcript),
        after=None if d.get("after") is None else _seconds(d["after"], "sample after"),
    )


def probe_to_dict(m: ProbeMeasurement) -> dict[str, Any]:
    """A probe snapshot as JSON-ready data: counts, histograms and samples (no percentiles:
    they are read from the histograms, so they cannot disagree with them)."""
    return {
        "rule": m.rule,
        "kind": m.kind,
        "planned": m.planned,
        "done": m.done,
        "succeeded": m.succeeded,
        "failures_by_cause": dict(sorted(m.failures_by_cause.items())),
        "close_codes": {str(code): n for code, n in sorted(m.close_codes.items())},
        "histograms": {phase: h.to_dict() for phase, h in sorted(m.histograms.items())},
        "samples": [attempt_to_dict(a) for a in m.samples],
        "complete": m.complete,
        "error": m.error,
        "first_failure_after": m.first_failure_after,
    }


def probe_from_dict(data: Any) -> ProbeMeasurement:
    """Read :func:`probe_to_dict`'s output back, latencies recomputed from the histograms."""
    d = _mapping(data, "measurement")
    rule = _typed(d.get("rule"), str, "measurement rule")
    try:
        counts = {k: _count(d.get(k), k) for k in ("planned", "done", "succeeded")}
        causes = {
            str(c): _count(n, f"failures_by_cause.{c}")
            for c, n in _mapping(d.get("failures_by_cause", {}), "failures_by_cause").items()
        }
        codes = {
            _close_code(c): _count(n, f"close_codes.{c}")
            for c, n in _mapping(d.get("close_codes", {}), "close_codes").items()
        }
        histograms = {
            str(phase): Histogram.from_dict(_mapping(h, f"histograms.{phase}"))
            for phase, h in _mapping(d.get("histograms", {}), "histograms").items()
        }
        samples = d.get("samples", [])
        if not isinstance(samples, list):
            raise ValueError("samples is not a list")
        first = d.get("first_failure_after")
        if counts["succeeded"] > counts["done"] or sum(causes.values()) > counts["done"]:
            raise ValueError("more successes or failures than attempts done")
        return ProbeMeasurement(
            rule=rule,
            kind=_typed(d.get("kind"), str, "kind"),
            planned=counts["planned"],
            done=counts["done"],
            succeeded=counts["succeeded"],
            failures_by_cause=causes,
            close_codes=dict(sorted(codes.items())),
            latencies={p: h.summary() for p, h in histograms.items() if h.count},
            samples=tuple(attempt_from_dict(s) for s in samples),
            complete=_typed(d.get("complete"), bool, "complete"),
            error=_optional(d.get("error"), str, "error"),
            first_failure_after=None if first is None else _seconds(first, "first_failure_after"),
            histograms=histograms,
        )
    except ValueError as exc:
        raise ValueError(f"rule {rule}: {exc}") from None


def _mapping(x: Any, what: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise ValueError(f"{what} is not an object")
    return x


def _typed(x: Any, kind: type, what: str) -> Any:
    if not isinstance(x, kind) or (kind is int and isinstance(x, bool)):
        raise ValueError(f"{what} {x!r} is not a {kind.__name__}")
    return x


def _optional(x: Any, kind: type, what: str) -> Any:
    return None if x is None else _typed(x, kind, what)


def _count(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise ValueError(f"{what} {x!r} is not a count")
    return x


def _seconds(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not 0 <= x < float("inf"):
        raise ValueError(f"{what} {x!r} is not a number of seconds")
    return float(x)


def _close_code(x: str) -> int:
    if not x.isdigit():
        raise ValueError(f"close code {x!r} is not a number")
    return int(x)
