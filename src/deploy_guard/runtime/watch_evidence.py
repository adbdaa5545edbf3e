"""The watch's evidence: what serves, measured continuously, judged over a sliding window.

A check's evidence ends when its probes end; a watch's never does. This module
keeps four sources running for the revision the watch judges, each in its own
rhythm, and can judge the window at any moment (:meth:`WatchEvidence.judge`,
pure counting: the driver calls it every second and at once when a source has
news):

- **logs**: one ``TailLogEntries`` stream for every logs rule
  (:class:`~deploy_guard.gcp.tail.LiveLogs`), counted into a sliding window of
  ``watch.window``; it falls back to ``ListLogEntries`` polling by itself;
- **probes**: the policy's probe rules every ``watch.probe_interval``, scaled
  down to ``watch.sessions`` (:class:`~deploy_guard.probes.watching.ProbeRounds`);
- **the canary user**: one WebSocket session kept open and renewed
  (:class:`~deploy_guard.probes.watching.CanaryUser`), so sessions closed with
  1011 are seen within a second of the close;
- **metrics**: every metric rule read once per ``watch.metric_interval``,
  counting only points older than the Monitoring lag.

A rule with no measurement yet (the first probe round still running, the first
metric read not made) is *pending*: it is left out of the verdict, neither a
pass nor missing evidence. A source's error is data (the rule says ``error``)
and makes the verdict inconclusive: the watch is then *degraded*, never failed.
That holds whatever a rule's ``missing_data`` says: ``fail`` there keeps a
check from promoting what it could not judge, but a watch acting on it would
roll back a serving revision because Cloud Logging was down. A rule whose
sessions the watched revision's request timeout would cut is not judged on it
(:attr:`Watched.unfit`), and ``failure_limit`` counts failing passes over the
window (:class:`~deploy_guard.runtime.watch_passes.FailingPasses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from deploy_guard.analysis.sources import Scope, SourceFactory
from deploy_guard.judge.combine import Judges
from deploy_guard.log import get_logger, redact_text
from deploy_guard.measurements import (
    Attempt,
    LogMeasurement,
    Measurement,
    MetricMeasurement,
    ProbeMeasurement,
)
from deploy_guard.report.steps import parse_time
from deploy_guard.runtime.watch_passes import FailingPasses

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.tail import LiveLogs
    from deploy_guard.judge import RuleResult, Verdict
    from deploy_guard.policy.model import Policy, Rule
    from deploy_guard.policy.watch import WatchPlan
    from deploy_guard.probes.target import Target
    from deploy_guard.probes.watching import CanaryUser, ProbeRounds

log = get_logger("deploy_guard.watch")

#: Cloud Monitoring's lag when no policy names one (``rollout.metric_lag``'s default).
DEFAULT_METRIC_LAG = 180.0


@dataclass(frozen=True)
class Watched:
    """What the evidence is about: the revision judged, its baseline, where users reach it."""

    project: str
    service: str
    revision: str
    baseline: tuple[str, ...]
    target: Target
    #: Nothing before this counts (the revision's creation, at most a window back).
    since: datetime
    #: The revision's creation: metric rules read their own windows back to it.
    created: datetime
    #: Rules not judged on this revision: its request timeout would cut their sessions.
    unfit: tuple[str, ...] = ()


@dataclass
class Judgement:
    """One look at the window: the verdict, every rule's result, and what is pending."""

    verdict: Verdict
    results: list[RuleResult]
    pending: list[str] = field(default_factory=list)
    #: Epoch seconds of the first bad thing seen (a failed session, a matching log line).
    first_bad_at: float | None = None
    #: What the sources could not read (an outage), whatever the policies make of it.
    errors: list[str] = field(default_factory=list)


class WatchEvidence:
    """The watch's sources for one revision at a time; see the module docstring."""

    def __init__(
        self,
        policies: Sequence[Policy],
        plan: WatchPlan,
        sources: SourceFactory,
        *,
        log_interval: float,
        metric_lag: float,
        wake: Callable[[], None],
        news: Callable[[], None] | None = None,
    ) -> None:
        from deploy_guard.policy.watch import watch_probe_rules

        # ``wake``: judge at once (a session failed); ``news``: judge soon (log lines or a
        # metric read landed: a steady stream must not make the watcher judge per batch)
        self.plan, self.sources, self.wake = plan, sources, wake
        self.news = news or wake
        self.log_interval, self.metric_lag = log_interval, metric_lag
        self.policies = list(policies)
        self.canary_rule = plan.canary
        owner = _canary_owner(self.policies, plan.canary)
        if plan.canary is not None and owner is not None:
            self.policies = [
                p.model_copy(update={"rules": [*p.rules, plan.canary]}) if p is owner else p
                for p in self.policies
            ]
        else:
            self.canary_rule = None
        self.policies = [_never_fail_on_missing(p) for p in self.policies]
        rules = [r for p in self.policies for r in p.rules]
        self.log_rules = [r for r in rules if r.kind == "logs"]
        self.metric_rules = [r for r in rules if r.kind == "metric"]
        self.probe_rules = watch_probe_rules(policies, plan) if plan.probe_interval else []
        self.watched: Watched | None = None
        self.live: LiveLogs | None = None
        self.canary: CanaryUser | None = None
        self.rounds: ProbeRounds | None = None
        self.metrics: dict[str, MetricMeasurement] = {}
        self.metric_reads = 0
        self.passes = FailingPasses(rules, window=plan.window, log_interval=log_interval)
        self._metric_task: asyncio.Task[None] | None = None

    # -- the sources' lives ---------------------------------------------------------------------
    async def start(self, watched: Watched) -> None:
        """Start every source on ``watched`` (a revision that takes traffic)."""
        from deploy_guard.probes.watching import CanaryUser, ProbeRounds

        self.watched = watched
        scope = self._scope(watched, self.log_rules)
        built = self.sources(scope)
        if self.log_rules and built.live_logs is not None:
            self.live = built.live_logs(self.plan.window, self.log_interval)
            self.live.changed = self.news
            await self.live.start()
        if self.canary_rule is not None:
            self.canary = CanaryUser(
                self.canary_rule, watched.target, window=self.plan.window, changed=self._bad
            )
            await self.canary.start()
        if self.probe_rules and self.plan.probe_interval:
            self.rounds = ProbeRounds(
                self.probe_rules,
                watched.target,
                interval=self.plan.probe_interval,
                changed=self._bad_snapshot,
            )
            await self.rounds.start()
        if self.metric_rules:
            self._metric_task = asyncio.create_task(self._metric_loop(), name="watch-metrics")

    async def retarget(self, watched: Watched) -> None:
        """Judge ``watched`` from now on (a new deploy took traffic, or a rollback)."""
        self.watched = watched
        self.metrics.clear()
        self.passes.clear()
        if self.live is not None:
            self.live.retarget(watched.revision, watched.baseline, since=watched.since)
        if self.canary is not None:
            self.canary.retarget(watched.target)
        if self.rounds is not None:
            self.rounds.retarget(watched.target)
        if self._metric_task is not None:  # read the new revision's metrics now
            self._metric_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metric_task
            self._metric_task = asyncio.create_task(self._metric_loop(), name="watch-metrics")

    def rebaseline(self, baseline: tuple[str, ...]) -> None:
        """Compare with ``baseline`` from now on: the same revision, its evidence kept."""
        watched = self.watched
        if watched is None or watched.baseline == baseline:
            return
        self.watched = _replace(watched, baseline=baseline)
        if self.live is not None:
            self.live.retarget(watched.revision, baseline)

    def refresh_target(self, target: Target) -> None:
        """A fresh token for the same revision: the next sessions use it, nothing is forgotten."""
        if self.canary is not None:
            self.canary.use(target)
        if self.rounds is not None:
            self.rounds.use(target)

    async def stop(self) -> None:
        """Stop every source; each closes its stream and sockets (idempotent)."""
        if self._metric_task is not None:
            self._metric_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._metric_task
            self._metric_task = None
        for source in (self.canary, self.rounds, self.live):
            if source is not None:
                with contextlib.suppress(Exception):
                    await source.stop()

    # -- judging ----------------------------------------------------------------------------------
    def judge(self, now: datetime | None = None) -> Judgement:
        """The window ending ``now``: every rule with evidence judged, the others pending."""
        now = now or datetime.now(UTC)
        measured = self._measurements(now)
        names = {m.rule for m in measured}
        fed = self.passes.feed(measured, now.timestamp())
        policies = [
            p.model_copy(update={"rules": [r for r in p.rules if r.name in names]})
            for p in self.policies
        ]
        judges = Judges(policies)
        for m in fed:
            judges.observe(m)
        early = judges.early()
        verdict = early if early is not None and early.status == "fail" else judges.final()
        pending = [r.name for p in self.policies for r in p.rules if r.name not in names]
        return Judgement(
            verdict=verdict,
            results=judges.results(),
            pending=pending,
            first_bad_at=self._first_bad(measured),
            errors=list(dict.fromkeys(_source_error(m) for m in measured if m.error)),
        )

    def _measurements(self, now: datetime) -> list[Measurement]:
        found: list[Measurement] = []
        if self.live is not None:
            found.extend(self.live.measure(rule, now) for rule in self.log_rules)
        found.extend(self.metrics.values())
        if self.rounds is not None:
            found.extend(self.rounds.measurements().values())
        if self.canary is not None:
            canary = self.canary.measurement()
            if canary.done or canary.error:
                found.append(canary)
        unfit = self.watched.unfit if self.watched is not None else ()
        return [m for m in found if m.rule not in unfit]

    def _first_bad(self, measured: Sequence[Measurement]) -> float | None:
        """The earliest bad thing in the window: a failed canary session or a matching line."""
        seen: list[float] = []
        canary = self.canary
        judged = canary is not None and any(m.rule == canary.rule.name for m in measured)
        if canary is not None and judged and canary.first_failure_at is not None:
            seen.append(canary.first_failure_at)
        for m in measured:
            if not isinstance(m, LogMeasurement):
                continue
            for sample in m.samples:
                when = parse_time(sample.get("timestamp"))
                if when is not None:
                    seen.append(when.timestamp())
        return min(seen) if seen else None

    def pending_row(self, name: str, revision: str) -> dict[str, Any]:
        """The report's row for a rule with no evidence on ``revision`` yet (``pending``).

        It replaces whatever the row said of the revision watched before, and says
        why nothing is known yet, so neither the live view nor the summary shows a
        rule as judged when it is not (or hides it).
        """
        rule = next(r for p in self.policies for r in p.rules if r.name == name)
        return {
            "rule": name,
            "kind": rule.kind,
            "severity": rule.severity,
            "dry_run": rule.dry_run,
            "status": "pending",
            "observed": None,
            "threshold": "",
            "counts": "",
            "evidence": [],
            "message": self._why_pending(rule, revision),
            "decided": False,
        }

    def _why_pending(self, rule: Rule, revision: str) -> str:
        from deploy_guard.policy.units import format_duration as dur

        plan = self.plan
        if self.watched is not None and rule.name in self.watched.unfit:
            return (
                f"not judged on {revision}: its request timeout is shorter than this rule's "
                "sessions, which Cloud Run would cut (see the notes)"
            )
        if self.canary_rule is not None and rule.name == self.canary_rule.name:
            return (
                f"the canary's first session on {revision} has not ended yet (each one runs "
                f"the scenario, then stays open {dur(plan.canary_renew)})"
            )
        if rule.kind == "metric":
            return (
                f"no complete Cloud Monitoring data for {revision} yet (a point counts once "
                f"{dur(self.metric_lag)} old; read every {dur(plan.metric_interval)})"
            )
        if rule.kind == "logs":
            return f"no window of {revision}'s logs counted yet"
        if plan.probe_interval is None or not any(r.name == rule.name for r in self.probe_rules):
            return "not run by the watch: its policy's watch: has no probe rounds"
        return (
            f"the first probe round on {revision} has not finished yet (a round every "
            f"{dur(plan.probe_interval)})"
        )

    def status(self) -> dict[str, Any]:
        """What the heartbeat says about the sources."""
        out: dict[str, Any] = {"metric_reads": self.metric_reads}
        if self.live is not None:
            live = self.live.status()
            out["logs_mode"] = live.mode
            out["logs_reads"] = live.reads
            out["tail_opens"] = live.tail_opens
        if self.canary is not None:
            out["canary_sessions"] = self.canary.sessions
        if self.rounds is not None:
            out["probe_rounds"] = self.rounds.rounds
        return out

    def fallback(self) -> str | None:
        """Why the logs are polled instead of tailed (None: tailing, or no logs rules)."""
        return self.live.fallback_reason if self.live is not None else None

    # -- the sources' callbacks -----------------------------------------------------------------
    def _bad(self, attempt: Attempt) -> None:
        if not attempt.ok:
            self.wake()

    def _bad_snapshot(self, _snapshot: ProbeMeasurement) -> None:
        self.wake()

    # -- metrics ----------------------------------------------------------------------------------
    def _scope(self, watched: Watched, rules: Sequence[Rule]) -> Scope:
        metrics = any(r.kind == "metric" for r in rules)
        return Scope(
            project=watched.project,
            service=watched.service,
            revision=watched.revision,
            baseline=watched.baseline,
            since=watched.created if metrics else watched.since,
            rules=tuple(rules),
            metric_lag=self.metric_lag,
        )

    async def _metric_loop(self) -> None:
        """Every metric rule, once per ``metric_interval``: one read per rule per interval."""
        interval = self.plan.metric_interval
        while True:
            started = time.monotonic()
            watched = self.watched
            if watched is not None:
                await self._read_metrics(watched, bound=interval)
            await asyncio.sleep(max(0.0, started + interval - time.monotonic()))

    async def _read_metrics(self, watched: Watched, *, bound: float) -> None:
        source = self.sources(self._scope(watched, self.metric_rules)).metrics
        self.metric_reads += 1
        try:
            async with asyncio.timeout(bound):
                batch = await source.measure(complete=True, deadline=bound)
        except Exception as exc:  # an outage is data: every metric rule says so
            error = redact_text(f"Cloud Monitoring could not be read: {type(exc).__name__}: {exc}")
            log.warning("watch_metrics_failed", error=error)
            batch = [
                MetricMeasurement(
                    rule=r.name,
                    metric=r.metric.type if r.metric else "",
                    value=None,
                    complete=True,
                    error=error,
                )
                for r in self.metric_rules
            ]
        if self.watched is not watched:  # retargeted while reading: not this revision's
            return
        for m in batch:
            if m.start is None and m.error is None:  # too young for complete data: pending
                self.metrics.pop(m.rule, None)
            else:
                self.metrics[m.rule] = m
        self.news()


def _canary_owner(policies: Sequence[Policy], canary: Rule | None) -> Policy | None:
    """The policy whose websocket rule the canary runs (its judge judges the canary)."""
    if canary is None or canary.websocket is None:
        return None
    ws = canary.websocket
    for policy in policies:
        if any(
            r.websocket is not None
            and r.websocket.path == ws.path
            and r.websocket.scenario == ws.scenario
            for r in policy.rules
        ):
            return policy
    return None


def _never_fail_on_missing(policy: Policy) -> Policy:
    """``policy`` with ``missing_data: fail`` read as ``inconclusive`` (see the module doc)."""
    if not any(r.missing_data == "fail" for r in policy.rules):
        return policy
    rules = [
        r.model_copy(update={"missing_data": "inconclusive"}) if r.missing_data == "fail" else r
        for r in policy.rules
    ]
    return policy.model_copy(update={"rules": rules})


def _source_error(m: Measurement) -> str:
    """A measurement's error, named by where it came from (a degraded watch says what is down)."""
    if isinstance(m, MetricMeasurement):
        where = "Cloud Monitoring"
    elif isinstance(m, ProbeMeasurement):
        where = f"probe {m.rule}"
    else:
        where = "Cloud Logging"
    return f"{where}: {m.error}"


def window_since(created: float, window: float, now: datetime | None = None) -> datetime:
    """Where a watched revision's evidence starts: its creation, at most ``window`` back."""
    now = now or datetime.now(UTC)
    start = now - timedelta(seconds=window)
    if created <= 0:
        return start
    return max(start, datetime.fromtimestamp(created, UTC))
