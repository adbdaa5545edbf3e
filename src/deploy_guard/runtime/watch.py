"""The watch's driver: keeps judging what serves a service, and rolls back by itself.

It decides nothing itself: the pure
:class:`~deploy_guard.strategies.watch.WatchStrategy` says the next move from
the history; this driver makes it and owns the rest:

- **what is watched**: the service is read every ``service_interval`` seconds.
  The revision judged is the newest one serving traffic (the latest Ready one
  when it serves, else the largest share); the last known good revision is its
  baseline while it still serves. A new revision taking traffic is followed
  (:class:`~deploy_guard.strategies.watch.Watching`); while a rollout's record
  is live on the service the watch stands aside: the rollout judges its own
  steps. Nothing is kept locally: a restarted watch reads the same annotations
  and the window's past from Cloud Logging;
- **the evidence**: :class:`~deploy_guard.runtime.watch_evidence.WatchEvidence`,
  judged every ``tick`` and at once when a source has news (a failed session,
  new log lines, a metric read). Only a change of status enters the history;
- **the rollback**: through the one
  :class:`~deploy_guard.actions.executor.Executor`, against the service as last
  read (someone else's change since is refused, exit 4), finished and verified
  even when a signal lands meanwhile; the report gets the seconds from the
  first bad thing seen to traffic verified back;
- **degraded**: an inconclusive window (a source's outage, no data) or a
  failed read of the service is logged and reported once per episode
  (``watch_degraded``, ``watch_recovered``), never acted on;
- **the heartbeat**: ``watch_heartbeat`` every ``watch.heartbeat``, with
  what it judged, so a log-based alert can fire when the watcher goes silent;
- **time and signals**: ``--for`` ends it (:class:`~deploy_guard.strategies.watch.TimeUp`);
  the first SIGINT/SIGTERM is an :class:`~deploy_guard.strategies.watch.Interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from deploy_guard import signals
from deploy_guard.actions.result import ActionResult
from deploy_guard.errors import GuardError, NotFoundError
from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, describe, served_split
from deploy_guard.log import get_logger, redact_text
from deploy_guard.report.model import CheckReport
from deploy_guard.runtime.driver import Gate
from deploy_guard.runtime.options import CheckOptions
from deploy_guard.runtime.watch_evidence import (
    DEFAULT_METRIC_LAG,
    Judgement,
    Watched,
    WatchEvidence,
    window_since,
)
from deploy_guard.strategies.check import Finish, RollBack
from deploy_guard.strategies.watch import (
    Event,
    Interrupted,
    Judged,
    Keep,
    StandingAside,
    TimeUp,
    Watching,
    WatchStrategy,
)

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.actions.executor import Executor
    from deploy_guard.gcp.traffic import RevisionState, ServiceState
    from deploy_guard.policy.model import Policy
    from deploy_guard.policy.watch import WatchPlan
    from deploy_guard.probes.target import Target
    from deploy_guard.runtime.session import Session

T = TypeVar("T")
log = get_logger("deploy_guard.watch")

#: Events kept in a watch's report timeline: the first ones and the latest ones.
TIMELINE_HEAD = 50
TIMELINE_TAIL = 450
#: Seconds after which the probes' ID token is minted again (Google's last an hour).
TOKEN_REFRESH = 45 * 60.0


@dataclass(frozen=True)
class WatchOptions(CheckOptions):
    """A check's options plus the watch's own flags (``revision`` is unused: "")."""

    #: ``--for``: seconds to watch (None: until stopped).
    duration: float | None = None
    keep_watching: bool = False
    #: Seconds between reads of the service (a new deploy, a rollout's record).
    service_interval: float = 10.0
    #: Seconds between two looks at the window when no source had news.
    tick: float = 1.0
    #: ``--health-port``: answer HTTP here (a watcher run as a Cloud Run service).
    health_port: int | None = None


def primary_revision(state: ServiceState) -> str | None:
    """The revision a watch judges: the latest Ready one if it serves, else the largest share."""
    split = {r: p for r, p in served_split(state).items() if p > 0}
    if not split:
        return None
    if state.latest_ready_revision in split:
        return state.latest_ready_revision
    return max(split, key=lambda r: (split[r], r))


def rollout_running(state: ServiceState, now: datetime) -> str | None:
    """Words for a live rollout on the service (None: none, or its process is gone)."""
    from deploy_guard.gcp.rollouts import current, holder_gone, overtaken

    try:
        record = current(state.annotations)
    except ValueError:
        return None
    if record is None or overtaken(record, served_split(state)):
        return None
    if not record.live(now) or holder_gone(record):
        return None
    return f"a rollout is in progress ({record.describe()})"


class WatchGate(Gate):
    """Runs one watch; see the module docstring."""

    options: WatchOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # every event names the service and what is watched now (a watch has no candidate)
        self.recorder._fields = lambda: {
            "service": self.run_state.service,
            **({"watched": self.report.revision} if self.report.revision else {}),
        }
        self.report.command = "watch"
        self.report.timeline.cap(TIMELINE_HEAD, TIMELINE_TAIL)
        self.report.watch = {}

    async def _check(self, service: str, executor: Executor) -> CheckReport:
        from deploy_guard.gcp.cloudrun import service_missing
        from deploy_guard.policy.watch import watch_plan

        session, policies = await self._session(service, executor)
        plan = watch_plan(policies)
        session.check_inputs()
        try:
            state = await self.router.get_service(service)
        except NotFoundError:
            raise service_missing(
                service, self.options.project, self.options.region, named_by_revision=False
            ) from None
        executor.expected = state
        self.report.traffic_before = served_split(state)
        self.report.traffic_after = served_split(state)
        watch = _Watch(self, session, policies, plan, executor)
        health = None
        if self.options.health_port is not None:
            from deploy_guard.runtime.health import HealthServer

            health = HealthServer(self.options.health_port, watch.health)
            port = await health.start()
            self._event("health_listening", port=port)
        try:
            return await watch.run(state)
        finally:
            if health is not None:
                await health.stop()


class _Watch:
    """One watch's loop (the strategy's moves, made)."""

    def __init__(
        self,
        gate: WatchGate,
        session: Session,
        policies: Sequence[Policy],
        plan: WatchPlan,
        executor: Executor,
    ) -> None:
        opts = gate.options
        self.gate, self.session, self.plan, self.executor = gate, session, plan, executor
        self.policies = list(policies)
        self.report = gate.report
        self.service = session.service
        self.strategy = WatchStrategy(
            bounded=opts.duration is not None,
            keep_watching=opts.keep_watching,
            rollback_on_fail=any(p.on_fail == "rollback" for p in policies),
            service=self.service,
        )
        lags = [p.rollout.metric_lag for p in policies if p.rollout is not None]
        self.wake = asyncio.Event()
        self.evidence = WatchEvidence(
            policies,
            plan,
            gate.sources,
            log_interval=opts.log_interval,
            metric_lag=min(lags) if lags else DEFAULT_METRIC_LAG,
            wake=self.wake.set,
        )
        loop = asyncio.get_running_loop()
        self.began = loop.time()
        self.deadline = None if opts.duration is None else self.began + opts.duration
        self.revision: str | None = None  # what is judged now (None: nothing serves)
        self.aside: str | None = None  # why the watch stands aside now
        self.status = "pending"
        self.degraded: str | None = None
        self.run_api_error: str | None = None
        self.last: Judgement | None = None
        self.windows = 0
        self.token_at = loop.time()
        self.first_bad_at: float | None = None
        self.acting = False

    # .. the loop ..
    async def run(self, state: ServiceState) -> CheckReport:
        history: list[Event] = []
        try:
            await self._follow(state, history, why="")
            while True:
                move = self.strategy.next(history)
                decision = getattr(move, "decision", None)
                if decision is not None:
                    self.gate._decision(decision)
                if isinstance(move, Finish):
                    verdict = move.verdict or self.report.verdict
                    if verdict in ("pass", "warn"):
                        self._unjudged()
                    return self.gate._finish(verdict, move.action, move.exit_code, move.message)
                if isinstance(move, RollBack):
                    result = await self._finished(self._rollback(move))
                    history.append(result)
                    if result.action == "rolled_back" and self.strategy.keep_watching:
                        await self._after_rollback(history)
                    continue
                assert isinstance(move, Keep)
                try:
                    event = await self._next_event(history)
                except asyncio.CancelledError:
                    event = self._interrupted()
                _append(history, event)
        finally:
            self._summarise()  # whatever ended it (an API error too): the summary's facts
            await self.evidence.stop()

    def _interrupted(self) -> Interrupted:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        name = signals.pending() or "cancellation"
        self.gate._event("watch_interrupted", signal=name)
        return Interrupted(name)

    async def _next_event(self, history: list[Event]) -> Event:
        """Wait for what the strategy needs to hear: a new status, a deploy, time up."""
        loop = asyncio.get_running_loop()
        opts = self.gate.options
        next_poll = loop.time() + opts.service_interval
        next_beat = loop.time() + self.plan.heartbeat
        while True:
            now = loop.time()
            if self.deadline is not None and now >= self.deadline:
                return TimeUp(now - self.began)
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self.plan.heartbeat
            if now >= next_poll:
                next_poll = now + opts.service_interval
                changed = await self._poll(history)
                if changed is not None:
                    return changed
            if self.revision is not None and self.aside is None:
                judged = self._look()
                if judged is not None:
                    return judged
            wake_at = min(
                now + opts.tick,
                next_poll,
                next_beat,
                self.deadline if self.deadline is not None else next_poll,
            )
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - loop.time())):
                    await self.wake.wait()

    # .. judging ..
    def _look(self) -> Judged | None:
        """Judge the window now; a Judged when the status changed (or it failed)."""
        judgement = self.evidence.judge()
        self.last = judgement
        self.windows += 1
        verdict = judgement.verdict
        for rule in judgement.results:
            self.report.update_rule(rule)
        assert self.revision is not None
        for name in judgement.pending:  # said, never hidden nor left as the last revision's
            self.report.update_rule(self.evidence.pending_row(name, self.revision))
        status = verdict.status if judgement.results else "pending"
        if judgement.first_bad_at is not None and verdict.status == "fail":
            self.first_bad_at = judgement.first_bad_at
        self._degraded(verdict.status, verdict.reasons, judgement.errors)
        if status == self.status and status != "fail":
            return None
        self.status = status
        self.report.verdict = status if status != "pending" else "inconclusive"
        self.report.reasons = list(verdict.reasons)
        self.report.deciding = list(verdict.deciding)
        self.gate._event("window_judged", revision=self.revision, status=status)
        if status == "pending":
            return None
        return Judged(self.revision, status, verdict.reasons, verdict.deciding)

    def _degraded(self, status: str, reasons: Sequence[str], errors: Sequence[str] = ()) -> None:
        """An outage (a source's error, the Run API) or no evidence: said once per episode."""
        why = self.run_api_error or ("; ".join(errors) if errors else None)
        if why is None and status == "inconclusive":
            why = "; ".join(reasons) or "no evidence"
        if why == self.degraded:
            return
        if why is not None and self.degraded is None:
            log.warning("watch_degraded", service=self.service, revision=self.revision, why=why)
            self.gate._event("watch_degraded", why=redact_text(why))
            episodes = self.report.watch.setdefault("degraded", [])
            if len(episodes) < 20:
                episodes.append({"at": _now(), "why": redact_text(why)[:300]})
        elif why is None:
            log.info("watch_recovered", service=self.service, revision=self.revision)
            self.gate._event("watch_recovered")
        self.degraded = why
        self.report.watch["degraded_now"] = why is not None  # the live view says so

    # .. the service ..
    async def _poll(self, history: list[Event]) -> Event | None:
        """Read the service: a new revision serving, a rollout starting or ending."""
        try:
            state = await self.gate.router.get_service(self.service)
        except GuardError as exc:
            self.run_api_error = f"Cloud Run Admin API: {exc}"
            self._degraded("inconclusive", [self.run_api_error])
            return None
        self.run_api_error = None
        if not self.acting:
            self.executor.expected = state
        await self._maybe_refresh_token(state)
        aside = rollout_running(state, datetime.now(UTC))
        primary = primary_revision(state)
        if aside is not None:
            if self.aside is None:
                self.aside = aside
                self.gate._event("watch_standing_aside", why=aside)
                return StandingAside(aside)
            return None
        if self.aside is not None or primary != self.revision:
            why = "a rollout ended" if self.aside else "a new revision took traffic"
            self.aside = None
            before = self.revision
            await self._retarget(state, primary)
            if primary is None:
                return None
            self.gate._event("deploy_followed", revision=primary, was=before, why=why)
            return Watching(primary, why)
        return None

    async def _follow(self, state: ServiceState, history: list[Event], *, why: str) -> None:
        """Start watching what serves ``state`` (or stand aside for a rollout)."""
        aside = rollout_running(state, datetime.now(UTC))
        primary = primary_revision(state)
        if primary is None:
            self.report.notes.append(f"{self.service} serves no revision yet: waiting for one")
        await self._retarget(state, primary)
        if primary is not None:
            history.append(Watching(primary, why))
        if aside is not None:
            self.aside = aside
            self.gate._event("watch_standing_aside", why=aside)
            history.append(StandingAside(aside))

    async def _retarget(self, state: ServiceState, primary: str | None) -> None:
        self.revision, self.status = primary, "pending"
        if primary is None:
            return
        watched = await self._watched(state, primary)
        self.report.revision = primary
        self.report.baseline = list(watched.baseline)
        self.report.traffic_after = served_split(state)
        self.report.target_url = watched.target.base_url
        self.gate._event(
            "watching",
            revision=primary,
            baseline=list(watched.baseline),
            split=describe(served_split(state)),
        )
        if self.evidence.watched is None:
            await self.evidence.start(watched)
        else:
            await self.evidence.retarget(watched)

    async def _watched(self, state: ServiceState, primary: str) -> Watched:
        split = served_split(state)
        good = state.annotations.get(LAST_KNOWN_GOOD, "")
        baseline = (good,) if good and good != primary and split.get(good, 0) > 0 else ()
        created = 0.0
        try:
            revision = await self.gate.router.get_revision(self.service, primary)
        except GuardError:
            revision = None
        if revision is not None:
            created = revision.create_time
            self._fits_request_timeout(revision)
        since = window_since(created, self.plan.window)
        return Watched(
            project=self.gate.options.project,
            service=self.service,
            revision=primary,
            baseline=baseline,
            target=await self._target(state),
            since=since,
            created=window_since(created, 24 * 3600.0),
        )

    def _fits_request_timeout(self, revision: RevisionState) -> None:
        """Cloud Run cuts any request at the revision's timeout, WebSocket sessions included:
        a canary or probe session longer than that would fail a healthy revision. Exit 2 when
        the watch starts; a revision deployed later with a shorter timeout is said, not fatal
        (the watcher keeps guarding; its report and log say what to fix)."""
        from deploy_guard.errors import ConfigError
        from deploy_guard.runtime.session import check_request_timeout

        try:
            check_request_timeout(self.evidence.policies, revision, self.service)
        except ConfigError as exc:
            if self.evidence.watched is None:
                raise
            self.report.notes.append(str(exc))
            log.warning("watch_session_outlasts_timeout", revision=revision.short, why=str(exc))

    async def _target(self, state: ServiceState) -> Target:
        """Where the probes go: the service's URL, where its users go."""
        from deploy_guard.probes.target import Target
        from deploy_guard.runtime.session import probe_token

        auth = self.policies[0].auth
        token = await probe_token(
            self.gate.options.token, auth, url=state.uri, service_uri=state.uri
        )
        self.token_at = asyncio.get_running_loop().time()
        return Target(base_url=state.uri, token=token)

    async def _maybe_refresh_token(self, state: ServiceState) -> None:
        if asyncio.get_running_loop().time() - self.token_at < TOKEN_REFRESH:
            return
        with contextlib.suppress(GuardError):
            self.evidence.refresh_target(await self._target(state))

    # .. acting ..
    async def _rollback(self, move: RollBack) -> ActionResult:
        """Traffic back to the last known good (or what served before), verified."""
        self.acting = True
        try:
            expected = self.executor.expected
            assert expected is not None
            assert self.revision is not None
            failing = self.revision
            result = await self.executor.rollback(
                expected, failing, move.reason, reject=move.reject
            )
        finally:
            self.acting = False
        verified_at = time.time()
        if result.action == "rolled_back":
            bad = self.first_bad_at
            record: dict[str, Any] = {"revision": failing, "verified_at": _now()}
            if bad is not None and bad <= verified_at:
                record["first_bad_to_verified_s"] = round(verified_at - bad, 3)
                self.report.notes.append(
                    f"{failing}: {verified_at - bad:.2f} s from the first bad session or log "
                    "line to traffic verified back"
                )
            self.report.watch.setdefault("rollbacks", []).append(record)
            self.gate._event("watch_rolled_back", **record)
        return result

    async def _after_rollback(self, history: list[Event]) -> None:
        """``--keep-watching``: watch what serves after the rollback."""
        self.first_bad_at = None
        try:
            state = await self.gate.router.get_service(self.service)
        except GuardError as exc:
            self.run_api_error = f"Cloud Run Admin API: {exc}"
            return
        self.executor.expected = state
        if self.evidence.canary is not None:
            self.evidence.canary.reset()
        await self._retarget(state, primary_revision(state))
        if self.revision is not None:
            history.append(Watching(self.revision, "restored by the watch's rollback"))

    async def _finished(self, action: Awaitable[T]) -> T:
        """An action runs to its end: a signal meanwhile is heard after it (never mid-write)."""
        task = asyncio.ensure_future(action)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            self.gate._event("signal_while_acting", note="finishing the write first")
            result = await task
            self.report.error = "a stop signal came during the rollback, which was finished first"
            return result

    # .. the heartbeat and the report ..
    def health(self) -> dict[str, Any]:
        """What ``--health-port`` answers: names and words, no secret."""
        return {
            "service": self.service,
            "revision": self.revision,
            "status": self.status,
            "degraded": self.degraded is not None,
            "standing_aside": self.aside is not None,
        }

    def _heartbeat(self) -> None:
        rules = {str(r.get("rule")): str(r.get("status")) for r in self.report.rules}
        log.info(
            "watch_heartbeat",
            service=self.service,
            revision=self.revision,
            status=self.status,
            degraded=self.degraded is not None,
            standing_aside=self.aside is not None,
            rules=rules,
            windows=self.windows,
            **self.evidence.status(),
        )

    def _unjudged(self) -> None:
        """A note on the rules the watch ends without judging: a pass is not about them."""
        pending = self.last.pending if self.last is not None else []
        if self.revision is not None and pending:
            self.report.notes.append(
                f"not judged on {self.revision} before the watch ended (no evidence yet): "
                + ", ".join(pending)
            )

    def _summarise(self) -> None:
        watch = self.report.watch
        watch["revision"] = self.revision
        watch["windows_judged"] = self.windows
        watch["status"] = self.status
        watch["degraded_now"] = self.degraded is not None
        watch.update(self.evidence.status())
        fallback = self.evidence.fallback()
        if fallback:
            watch["logs_fallback"] = redact_text(fallback)
        loop = asyncio.get_running_loop()
        watch["watched_s"] = round(loop.time() - self.began, 3)


def _append(history: list[Event], event: Event) -> None:
    """Keep the history short: a new status replaces the last one's record."""
    if isinstance(event, Judged) and history and isinstance(history[-1], Judged):
        history[-1] = event
        return
    history.append(event)
    if len(history) > 200:  # a watch running for weeks: the first event and the recent ones
        del history[1:-100]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
