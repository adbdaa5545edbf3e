"""The watch's driver: keeps judging what serves a service, and rolls back by itself.

It decides nothing itself: the pure
:class:`~deploy_guard.strategies.watch.WatchStrategy` says the next move from
the history; this driver makes it and owns the rest:

- **what is watched**: the service is read every ``service_interval`` seconds.
  The revision judged is the newest one serving traffic (the latest Ready one
  when it serves, else the largest share); the last known good revision is its
  baseline while it still serves (:mod:`deploy_guard.runtime.watch_service`).
  A new revision taking traffic is followed
  (:class:`~deploy_guard.strategies.watch.Watching`); while a rollout's record
  is live on the service the watch stands aside: the rollout judges its own
  steps. Nothing is kept locally: a restarted watch reads the same annotations
  and the window's past from Cloud Logging;
- **the evidence**: :class:`~deploy_guard.runtime.watch_evidence.WatchEvidence`,
  judged every ``tick`` and at once when a source has news (a failed session,
  new log lines, a metric read). Only a change of status enters the history;
- **the rollback**: the service is read once more first: the canary and the
  probes go to the service's URL, so a failing window may have been measured
  on a revision deployed since the last read, which is then followed, not
  acted on. The write goes through the one
  :class:`~deploy_guard.actions.executor.Executor` against that read (someone
  else's change since is refused, exit 4), finished and verified even when a
  signal lands meanwhile (the watch stops after it); the report gets the
  seconds from the first bad thing seen to traffic verified back;
- **degraded**: an inconclusive window (a source's outage, no data), a
  failed read of the service or a deploy it could not follow (the probes'
  token) is logged and reported once per episode
  (``watch_degraded``, ``watch_recovered``), never acted on;
- **the heartbeat**: ``watch_heartbeat`` every ``watch.heartbeat``, with
  what it judged, so a log-based alert can fire when the watcher goes silent;
- **time and signals**: ``--for`` ends it (:class:`~deploy_guard.strategies.watch.TimeUp`);
  the first SIGINT/SIGTERM is an :class:`~deploy_guard.strategies.watch.Interrupted`
  wherever it lands (but in the rollback's write, which it waits for).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from deploy_guard import signals
from deploy_guard.actions.result import ActionResult
from deploy_guard.errors import NotFoundError
from deploy_guard.gcp.traffic import served_split
from deploy_guard.log import get_logger, redact_text
from deploy_guard.report.model import CheckReport
from deploy_guard.runtime.driver import Gate, finish_first
from deploy_guard.runtime.options import CheckOptions
from deploy_guard.runtime.watch_evidence import (
    DEFAULT_METRIC_LAG,
    Judgement,
    WatchEvidence,
)
from deploy_guard.runtime.watch_follow import ServiceSide, now_text
from deploy_guard.runtime.watch_service import primary_revision
from deploy_guard.strategies.check import Finish, RollBack
from deploy_guard.strategies.watch import (
    Event,
    Interrupted,
    Judged,
    Keep,
    TimeUp,
    Watching,
    WatchStrategy,
)

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.actions.executor import Executor
    from deploy_guard.gcp.traffic import ServiceState
    from deploy_guard.policy.model import Policy
    from deploy_guard.policy.watch import WatchPlan
    from deploy_guard.runtime.session import Session

T = TypeVar("T")
log = get_logger("deploy_guard.watch")

#: Events kept in a watch's report timeline: the first ones and the latest ones.
TIMELINE_HEAD = 50
TIMELINE_TAIL = 450
#: Seconds at most between news (log lines streamed, a metric read) and the look that judges
#: it: a steady stream of lines costs one look per NEWS_DELAY, not one per batch.
NEWS_DELAY = 0.25
#: A watch's history past this many events keeps its first, its last HISTORY_KEEP and
#: its actions' outcomes.
HISTORY_MAX = 200
HISTORY_KEEP = 100


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


class _Watch(ServiceSide):
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
            wake=self._urgent,
            news=self._news,
        )
        #: A source heard something bad: judge at once. News (log lines, a metric read):
        #: judge within NEWS_DELAY, so a steady stream costs at most one look per NEWS_DELAY.
        self.urgent = False
        self.has_news = False
        self.last_look = -math.inf
        loop = asyncio.get_running_loop()
        self.began = loop.time()
        self.deadline = None if opts.duration is None else self.began + opts.duration
        # When the service is read next, and the heartbeat logged: kept across events, so a
        # status that changes more often than either cannot starve them.
        self.next_poll = self.began + opts.service_interval
        self.next_beat = self.began + plan.heartbeat
        self.revision: str | None = None  # what is judged now (None: nothing, or not yet)
        self.aside: str | None = None  # why the watch stands aside now
        self.status = "pending"
        self.degraded: str | None = None
        #: Why the watch cannot judge what serves now (the Run API, a follow that failed).
        self.blind: str | None = None
        self.last: Judgement | None = None
        self.windows = 0
        self.token_at = loop.time()
        self.first_bad_at: float | None = None
        #: The stop signal that came during a rollback's write (heard once it is done).
        self.heard: str | None = None

    # .. the loop ..
    async def run(self, state: ServiceState) -> CheckReport:
        """Make the strategy's moves until it finishes; a stop signal anywhere but in the
        rollback's write (which is finished first) is an :class:`Interrupted` event."""
        history: list[Event] = []
        try:
            started = await self._unless_stopped(self._follow(state, history, why=""))
            if started is not None:
                history.append(started)
            while True:
                move = self.strategy.next(history)
                if isinstance(move, RollBack):
                    news = await self._unless_stopped(self._recheck())
                    if news is not None:  # the verdict was on what no longer serves
                        _append(history, news)
                        continue
                decision = getattr(move, "decision", None)
                if decision is not None:
                    self.gate._decision(decision)
                if isinstance(move, Finish):
                    verdict = move.verdict or self.report.verdict
                    if verdict in ("pass", "warn"):
                        self._unjudged()
                    return self.gate._finish(verdict, move.action, move.exit_code, move.message)
                if isinstance(move, RollBack):
                    await self._act(move, history)
                    continue
                assert isinstance(move, Keep)
                _append(history, await self._unless_stopped(self._next_event()))
        finally:
            self._summarise()  # whatever ended it (an API error too): the summary's facts
            await self.evidence.stop()

    async def _act(self, move: RollBack, history: list[Event]) -> None:
        result = await self._finished(self._rollback(move))
        history.append(result)
        if result.action != "rolled_back" or not self.strategy.keep_watching:
            return  # the strategy finishes on the rollback's outcome, signal or not
        if self.heard is not None:
            self.gate._event("watch_interrupted", signal=self.heard)
            history.append(Interrupted(self.heard))
            return
        stopped = await self._unless_stopped(self._after_rollback(history))
        if stopped is not None:
            history.append(stopped)

    async def _unless_stopped(self, step: Awaitable[T]) -> T | Interrupted:
        """``step``'s result, or :class:`Interrupted` when a stop signal cancels it."""
        try:
            return await step
        except asyncio.CancelledError:
            return self._interrupted()

    def _interrupted(self) -> Interrupted:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        name = signals.pending() or "cancellation"
        self.gate._event("watch_interrupted", signal=name)
        return Interrupted(name)

    async def _next_event(self) -> Event:
        """Wait for what the strategy needs to hear: a new status, a deploy, time up."""
        loop = asyncio.get_running_loop()
        opts = self.gate.options
        while True:
            now = loop.time()
            if self.deadline is not None and now >= self.deadline:
                return TimeUp(now - self.began)
            if now >= self.next_beat:
                self._heartbeat()
                self.next_beat = now + self.plan.heartbeat
            if now >= self.next_poll:
                changed = await self._poll()
                if changed is not None:
                    return changed
            now = loop.time()
            due = (
                self.urgent
                or now >= self.last_look + opts.tick
                or (self.has_news and now >= self.last_look + NEWS_DELAY)
            )
            if due and self.revision is not None and self.aside is None:
                self.urgent = self.has_news = False
                self.last_look = now
                judged = self._look()
                if judged is not None:
                    return judged
            wake_at = min(
                max(self.last_look, now) + opts.tick,
                self.last_look + NEWS_DELAY if self.has_news else math.inf,
                self.next_poll,
                self.next_beat,
                self.deadline if self.deadline is not None else math.inf,
            )
            self.wake.clear()
            if self.urgent:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - loop.time())):
                    await self.wake.wait()

    # .. judging ..
    def _urgent(self) -> None:
        self.urgent = True
        self.wake.set()

    def _news(self) -> None:
        self.has_news = True
        self.wake.set()

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

    # .. acting ..
    async def _rollback(self, move: RollBack) -> ActionResult:
        """Traffic back to the last known good (or what served before), verified."""
        expected = self.executor.expected
        assert expected is not None
        assert self.revision is not None
        failing = self.revision
        result = await self.executor.rollback(expected, failing, move.reason, reject=move.reject)
        verified_at = time.time()
        if result.action == "rolled_back":
            bad = self.first_bad_at
            record: dict[str, Any] = {"revision": failing, "verified_at": now_text()}
            if bad is not None and bad <= verified_at:
                record["first_bad_to_verified_s"] = round(verified_at - bad, 3)
                self.report.notes.append(
                    f"{failing}: {verified_at - bad:.2f} s from the first bad session or log "
                    "line to traffic verified back"
                )
            self.report.watch.setdefault("rollbacks", []).append(record)
            self.gate._event("watch_rolled_back", **record)
        self.gate._notify_action(
            result.action, **(record if result.action == "rolled_back" else {})
        )
        return result

    async def _after_rollback(self, history: list[Event]) -> None:
        """``--keep-watching``: watch what serves after the rollback (the write's verified
        read: no new read that could fail and leave the rolled back revision judged)."""
        self.first_bad_at = None
        state = self.executor.expected
        assert state is not None
        if self.evidence.canary is not None:
            self.evidence.canary.reset()
        primary, why = primary_revision(state), "restored by the watch's rollback"
        if await self._retarget(state, primary, why=why) and primary is not None:
            history.append(Watching(primary, why))

    async def _finished(self, action: Awaitable[T]) -> T:
        """An action runs to its end: a signal meanwhile is heard after it (never mid-write)."""

        def heard() -> None:
            self.heard = signals.pending() or "cancellation"
            self.gate._event("signal_while_acting", note="finishing the write first")
            self.report.error = "a stop signal came during the rollback, which was finished first"

        return await finish_first(action, heard)

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
    """Keep the history short: a new status replaces the last one's record.

    A watch running for weeks keeps the first event, the recent ones and the
    rollbacks between (a rollback long ago still makes the end a fail), at most
    :data:`HISTORY_MAX` events in all.
    """
    if isinstance(event, Judged) and history and isinstance(history[-1], Judged):
        history[-1] = event
        return
    history.append(event)
    if len(history) > HISTORY_MAX:
        middle = [
            e
            for e in history[1:-HISTORY_KEEP]
            if isinstance(e, ActionResult) and e.action == "rolled_back"
        ]
        history[1:-HISTORY_KEEP] = middle[-(HISTORY_MAX - HISTORY_KEEP - 1) :]
