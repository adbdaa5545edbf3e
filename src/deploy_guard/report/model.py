"""The check's report as plain data: what every renderer (terminal, JSON, Markdown) reads.

The gate fills one :class:`CheckReport` as it goes (timeline events, rule
results, API call counts), so that whatever ends the check (a verdict, an
error, a timeout, SIGTERM) the command can still write what is known. Nothing
here does I/O. Secrets are scrubbed on the way out, in one place:
:meth:`CheckReport.to_dict`, which the JSON report, the Markdown summary and the
terminal view all read (a secret registered after a field was filled, or a
query value in a URL, is still caught).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from typing import Any

from deploy_guard.log import redact_data
from deploy_guard.traces import Traces

#: Report ``action`` values (the issue's contract).
ACTIONS = ("none", "rolled_back", "promoted", "held", "superseded", "failed", "unverified")
#: Deliveries a report keeps (the latest).
MAX_NOTIFICATIONS = 100
#: Report ``verdict`` values; ``error``: nothing was judged (a usage or configuration
#: error such as an unknown revision, exit 2); ``skipped``: an audit event that records
#: no deploy to check (``check --from-audit-event``, exit 0).
VERDICTS = ("pass", "warn", "fail", "inconclusive", "error", "skipped")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TimelineEvent:
    """One timestamped step of a check: ``check_started``, ``first_failure_seen`` ..."""

    event: str
    at: str  # ISO 8601 UTC
    t: float  # seconds since the check started (monotonic clock)
    detail: dict[str, Any] = field(default_factory=dict)


class Timeline:
    """Timestamped events, monotonic offsets for durations and UTC times for people."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self.events: list[TimelineEvent] = []
        #: Events left out in the middle (a capped timeline: see :meth:`cap`).
        self.dropped = 0
        self._head: int | None = None
        self._tail = 0

    def cap(self, head: int, tail: int) -> None:
        """Keep at most the first ``head`` and the last ``tail`` events (a watch runs for
        weeks: its report and memory stay bounded); the ones between are counted."""
        self._head, self._tail = head, tail

    def elapsed(self) -> float:
        return float(self._clock() - self._start)

    def add(self, event: str, **detail: Any) -> TimelineEvent:
        clean = {k: v for k, v in detail.items() if v is not None}
        ev = TimelineEvent(
            event=event,
            at=utc_now().isoformat(timespec="milliseconds"),
            t=round(self.elapsed(), 4),
            detail=clean,
        )
        self.events.append(ev)
        if self._head is not None and len(self.events) > self._head + self._tail:
            del self.events[self._head]
            self.dropped += 1
        return ev

    def first(self, event: str) -> TimelineEvent | None:
        return next((e for e in self.events if e.event == event), None)

    def between(self, first: str, then: str) -> float | None:
        """Seconds from the first ``first`` event to the first later ``then`` event."""
        a = self.first(first)
        if a is None:
            return None
        b = next((e for e in self.events if e.event == then and e.t >= a.t), None)
        return None if b is None else round(b.t - a.t, 4)


def rule_dict(result: Any) -> dict[str, Any]:
    """A judge :class:`RuleResult` (or any dataclass) as report data (scrubbed by ``to_dict``)."""
    data = asdict(result) if is_dataclass(result) and not isinstance(result, type) else dict(result)
    data["evidence"] = [str(e) for e in data.get("evidence", ())]
    data["message"] = str(data.get("message", ""))
    return data


def observed_text(rule: dict[str, Any]) -> str:
    """A rule's observed figure for people, in its unit; "" when there is none to show.

    Probe success ratios and error rates are shares (``95%``), latencies
    durations (``820ms``), log figures counts or rates. A rule with no data (too
    few requests, no finished session) or still pending shows nothing: a 0 there
    would read as a measurement.
    """
    value = rule.get("observed")
    status = str(rule.get("status", ""))
    if value is None or status in ("no_data", "pending", "error"):
        return ""
    if not isinstance(value, int | float):
        return str(value)
    kind, threshold = str(rule.get("kind", "")), str(rule.get("threshold", ""))
    if kind in ("http", "websocket") or (kind == "metric" and "%" in threshold):
        return f"{float(f'{value * 100:.4g}'):g}%"
    if kind == "metric" and "latency" in threshold:
        return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.3g}s"
    if kind == "logs" and "/min" in threshold:
        return f"{value:.2f}/min"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class StepRecord:
    """One stage of ``deploy-guard rollout``: what was written, verified and judged there.

    ``phase``: ``tag`` (the probes through the tag URL before any traffic, percent
    0), ``step`` (a traffic step of the policy), ``promote`` (100 %, pinned).
    ``status``: ``pending`` (not reached), ``running``, then the step's verdict
    (``pass``, ``warn``, ``fail``, ``inconclusive``) or ``interrupted`` /
    ``error``. ``stopped``: why the rollout ended at this stage ("" if it did not).
    """

    index: int
    phase: str
    percent: int
    duration_s: float = 0.0
    status: str = "pending"
    traffic_written: dict[str, int] = field(default_factory=dict)
    traffic_verified: dict[str, int] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    reasons: list[str] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""


@dataclass
class CheckReport:
    """Everything a check found and did; serialisable with :meth:`to_dict`."""

    revision: str
    project: str = ""
    region: str = ""
    service: str = ""
    policies: list[str] = field(default_factory=list)
    verdict: str = "inconclusive"
    action: str = "none"
    exit_code: int = 3
    message: str = ""
    reasons: list[str] = field(default_factory=list)
    deciding: list[str] = field(default_factory=list)
    baseline: list[str] = field(default_factory=list)
    traffic_before: dict[str, int] = field(default_factory=dict)
    traffic_after: dict[str, int] = field(default_factory=dict)
    target_url: str = ""
    temporary_tag: str = ""
    dry_run: bool = False
    rules: list[dict[str, Any]] = field(default_factory=list)
    api_calls: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Evidence passes per source ("logs", "metrics"): one Logging query each.
    evidence_passes: dict[str, int] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    error: str | None = None
    #: What a person should know besides the verdict: the candidate was on the
    #: rejected list, leftover temporary tags, which revision a rollback chose and why.
    notes: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: utc_now().isoformat(timespec="seconds"))
    finished_at: str = ""
    #: ``check`` or ``rollout``: a rollout's report adds ``steps``.
    command: str = "check"
    #: A rollout's stages in order (see :class:`StepRecord`); empty for a check.
    steps: list[StepRecord] = field(default_factory=list)
    #: A watch's summary: the revision it ended on, rollbacks (with the seconds from
    #: the first bad session or log line to traffic verified back), degraded episodes.
    watch: dict[str, Any] = field(default_factory=dict)
    #: ``check --cloud-deploy``: the Cloud Deploy phase judged (pipeline, target, release,
    #: rollout, phase, percentage, job run...); empty otherwise, and then not in the document.
    cloud_deploy: dict[str, Any] = field(default_factory=dict)
    #: Each notification's delivery (``Delivery.as_dict``): to whom, which event,
    #: delivered or failed and why; the latest :data:`MAX_NOTIFICATIONS`.
    notifications: list[dict[str, Any]] = field(default_factory=list)
    #: What the probes and evidence sources saw, moment by moment (bounded), for the
    #: HTML report's picture: the driver records into it (:mod:`deploy_guard.traces`).
    traces: Traces = field(init=False, repr=False)
    #: ``check --from-audit-event``: the audit entry that started it (method, principal,
    #: resource, time) and what was decided; empty for any other run.
    audit_event: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.traces = Traces(clock=lambda: self.timeline.elapsed())

    def add_notification(self, delivery: dict[str, Any]) -> None:
        """Keep one delivery's record (a watch of weeks keeps the latest ones)."""
        self.notifications.append(delivery)
        del self.notifications[:-MAX_NOTIFICATIONS]

    def set_rules(self, results: Any) -> None:
        self.rules = [rule_dict(r) for r in results]

    def update_rule(self, result: Any) -> None:
        data = rule_dict(result)
        for i, existing in enumerate(self.rules):
            if existing.get("rule") == data.get("rule"):
                self.rules[i] = data
                return
        self.rules.append(data)

    def to_dict(self) -> dict[str, Any]:
        """The ``--report`` document (the field names are an interface), secrets redacted."""
        document = {
            "verdict": self.verdict,
            "action": self.action,
            "exit_code": self.exit_code,
            "message": self.message,
            "project": self.project,
            "region": self.region,
            "service": self.service,
            "revision": self.revision,
            "policies": list(self.policies),
            "baseline": list(self.baseline),
            "traffic_before": dict(self.traffic_before),
            "traffic_after": dict(self.traffic_after),
            "target_url": self.target_url,
            "temporary_tag": self.temporary_tag,
            "dry_run": self.dry_run,
            "reasons": list(self.reasons),
            "deciding_rules": list(self.deciding),
            "rules": list(self.rules),
            "api_calls": {api: dict(m) for api, m in self.api_calls.items()},
            "api_calls_total": sum(sum(m.values()) for m in self.api_calls.values()),
            "evidence_passes": dict(self.evidence_passes),
            "timeline": [asdict(e) for e in self.timeline.events],
            "error": self.error or None,
            "notes": list(self.notes),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": round(self.timeline.elapsed(), 3),
            "notifications": [dict(n) for n in self.notifications],
        }
        if self.cloud_deploy:  # a Cloud Deploy verify job's phase
            document["cloud_deploy"] = dict(self.cloud_deploy)
        if self.command != "check":  # a check's document keeps exactly its fields
            document["command"] = self.command
            document["steps"] = [asdict(step) for step in self.steps]
        if self.command == "watch":
            document["watch"] = dict(self.watch)
            document["timeline_dropped"] = self.timeline.dropped
        if self.audit_event:  # only a check started by an audit event
            document["audit_event"] = dict(self.audit_event)
        if self.traces:  # only a run that probed or read evidence has any
            document["traces"] = self.traces.to_dict()
        redacted: dict[str, Any] = redact_data(document)
        return redacted
