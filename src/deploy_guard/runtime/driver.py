"""The driver: runs the check's strategy, and owns time, signals, clean-up and the report.

It decides nothing itself. The pure :class:`~deploy_guard.strategies.check.CheckStrategy`
says the next move from the history so far; the driver makes it (an analysis
through :class:`~deploy_guard.analysis.engine.Engine`, a rollback or a promotion
through :class:`~deploy_guard.actions.executor.Executor`) and appends what came
of it. Around that it owns:

- time: the check's bound, the ticker that keeps the live view's clock running;
- signals: a signal while acting waits for the action (a traffic write left
  between write and verification would leave traffic in an unknown state);
  a signal after the decision changes neither verdict nor exit code;
- clean-up: the temporary tag comes off whatever ends the check;
- the report: everything learnt goes into one
  :class:`~deploy_guard.report.model.CheckReport`, so a report can be written even
  when the check ends in an error or a signal;
- telling people: the run's outcome (and a rollout's steps, a watch's rollbacks)
  is fired into the :class:`~deploy_guard.events.fanout.Notifiers` after the
  decision and its action (:meth:`Gate._notify`), delivered in the background
  and waited for (bounded) only once the run is over, so a notification never
  delays or changes a verdict, a rollback or an exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from deploy_guard import traces
from deploy_guard.actions.executor import Executor
from deploy_guard.analysis.engine import Analysis, AnalysisResult, Engine, judges_for
from deploy_guard.analysis.sources import Scope, SourceFactory
from deploy_guard.errors import ActionError, GuardError, SupersededError, UnverifiedError
from deploy_guard.events.fanout import Notifiers
from deploy_guard.events.model import Delivery, action_kind, outcome_kind
from deploy_guard.events.model import Event as Notification
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger, redact_text
from deploy_guard.report.model import CheckReport
from deploy_guard.report.recorder import Recorder
from deploy_guard.runtime.options import CheckOptions, NoProgress, Progress
from deploy_guard.runtime.session import Session, warm_imports
from deploy_guard.strategies.check import (
    Analyse,
    CheckStrategy,
    Decision,
    Event,
    Finish,
    Judged,
    Promote,
    RollBack,
)

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.cloudrun import CloudRun
    from deploy_guard.gcp.traffic import RevisionState, ServiceState
    from deploy_guard.judge import Verdict
    from deploy_guard.judge.combine import Judges
    from deploy_guard.policy.model import Policy
    from deploy_guard.probes.target import Target

T = TypeVar("T")

#: Seconds between redraws of the progress view when nothing else changed.
TICK = 0.5
log = get_logger("deploy_guard.notify")


@dataclass
class _Run:
    """What a second signal needs to know about the running check (see ``LastWord``)."""

    service: str = ""
    #: The outcome is set (a verdict acted on, or an error that ended the check):
    #: a signal during the clean-up no longer changes it.
    decided: bool = False
    #: Fail-fast decided while log or metric rules were still waiting for evidence.
    cut_short: bool = False
    executor: Executor | None = None

    @property
    def temp_tag(self) -> str:
        """The temporary tag on the service now ("" when none)."""
        return self.executor.temp_tag if self.executor is not None else ""


class Gate:
    """Runs one check; see the module docstring for who does what."""

    def __init__(
        self,
        policies: Sequence[Policy],
        options: CheckOptions,
        router: CloudRun,
        sources: SourceFactory,
        report: CheckReport,
        *,
        progress: Progress | None = None,
        notifier: Notifiers | None = None,
    ) -> None:
        self.policies = list(policies)
        #: Who hears of the run's events (nobody by default).
        self.notifier = notifier or Notifiers.none()
        self.options = options
        self.router = router
        #: Where the analysis' evidence comes from (tests wrap it to swap a source).
        self.sources = sources
        self.report = report
        self.progress = progress or NoProgress()
        self.run_state = _Run()
        #: The candidate's short name (``--revision`` may be a full resource name).
        self.candidate = options.revision.rsplit("/", 1)[-1]
        self.recorder = Recorder(
            report,
            fields=lambda: {"service": self.run_state.service, "candidate": self.options.revision},
            calls=router.calls.as_dict,
            changed=self.progress.changed,
        )

    def _event(self, name: str, **detail: Any) -> None:
        self.recorder.event(name, **detail)

    # .. telling people ..
    def _notify(self, kind: str | None, *, outcome: bool = False, **detail: Any) -> None:
        """Fire ``kind`` (None: nothing to tell) with the report as it is now; return at once."""
        if kind is None or not self.notifier.wants(kind):
            return
        report = self.report
        event = Notification(
            kind=kind,
            command=report.command,
            service=report.service or self.run_state.service,
            revision=report.revision.rsplit("/", 1)[-1],
            detail=detail,
            outcome=outcome,
        )
        self.notifier.fire(event, report.to_dict(), self._delivered)

    def _notify_action(self, action: str, **detail: Any) -> None:
        """Tell a rollback's result as it happens (a watch's, which goes on after it)."""
        self._notify(action_kind(action), **detail)

    def _notify_outcome(self) -> None:
        """Tell how the run ended: one event, named for what happened."""
        report = self.report
        tried = any(
            e.event in ("rollback_requested", "rollback_failed") for e in report.timeline.events
        )
        kind = outcome_kind(
            report.command, report.verdict, report.action, report.exit_code, rollback_tried=tried
        )
        self._notify(kind, outcome=True)

    def _delivered(self, delivery: Delivery) -> None:
        """A delivery ended: in the report, the timeline and the log (a failure as a warning)."""
        self.report.add_notification(delivery.as_dict())
        fields = {
            "notifier": delivery.notifier,
            "notification": delivery.event,
            "attempts": delivery.attempts,
        }
        if delivery.ok:
            self._event("notification_sent", **fields)
            return
        self.report.timeline.add("notification_failed", **fields, error=delivery.error)
        log.warning("notification_failed", **fields, error=delivery.error)

    async def _drain(self) -> None:
        """Wait (bounded) for the deliveries under way; a signal now cuts them short.

        As in the clean-up, a signal after the decision changes neither the
        verdict nor the exit code: the deliveries still under way are given up
        (and reported as such).
        """
        try:
            await self.notifier.drain()
        except asyncio.CancelledError:
            self.notifier.cancel()
            if not self.run_state.decided:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except Exception:  # pragma: no cover - the fan-out catches its notifiers' errors
            log.exception("notification_drain_failed")

    def _finish(self, verdict: str, action: str, code: int, message: str) -> CheckReport:
        self.report.verdict = verdict
        self.report.action = action
        self.report.exit_code = int(code)
        self.report.message = message
        return self.report

    # .. the whole check ..
    async def run(self) -> CheckReport:
        """The whole check. Clean-up runs whatever ends it; the report is always filled."""
        from deploy_guard.gcp.cloudrun import need_service

        opts = self.options
        self.report.dry_run = opts.dry_run
        self.report.project, self.report.region = opts.project, opts.region
        service = need_service(opts.service, opts.revision)
        self.run_state.service = self.report.service = service
        self.run_state.executor = Executor(
            self.router, self.recorder, service=service, project=opts.project, region=opts.region
        )
        self._event("check_started", dry_run=opts.dry_run, promote=opts.promote)
        traced = traces.bind(self.report.traces)  # what the probes saw, for the HTML report
        warm = asyncio.ensure_future(asyncio.to_thread(warm_imports))
        ticker = asyncio.ensure_future(self._tick())
        page = None
        try:
            page = await self._serve()
            if not opts.revision:  # none named (a fleet's task): the service's newest
                await self._take_latest(service)
            report = await self._check(service, self.run_state.executor)
            self.run_state.decided = True
            self._notify_outcome()
            return report
        except asyncio.CancelledError:
            self.report.error = "the check was interrupted (signal or cancellation)"
            self._finish(
                "inconclusive", "none", ExitCode.INCONCLUSIVE, "interrupted before a decision"
            )
            self._event("check_interrupted")
            raise
        except GuardError as exc:
            report_error(self.report, exc)
            self.run_state.decided = True  # the error is the outcome; the clean-up keeps it
            self._notify_outcome()
            raise
        except Exception as exc:  # google-auth's "not logged in" is the user's to fix
            from deploy_guard.gcp.errors import map_credentials_error

            mapped = map_credentials_error(exc)
            if mapped is None:
                raise
            report_error(self.report, mapped)
            self.run_state.decided = True
            self._notify_outcome()
            raise mapped from exc
        finally:
            ticker.cancel()
            if page is not None:
                await page.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await warm
            await self._cleanup()
            await self._drain()
            self.report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
            self._event(
                "check_finished",
                verdict=self.report.verdict,
                action=self.report.action,
                exit_code=self.report.exit_code,
            )
            traces.unbind(traced)

    async def _take_latest(self, service: str) -> None:
        """Judge the service's latest created revision: what its last deploy made."""
        from dataclasses import replace

        from deploy_guard.errors import NotFoundError
        from deploy_guard.gcp.cloudrun import service_missing

        opts = self.options
        try:
            state = await self.router.get_service(service)
        except NotFoundError:
            missing = service_missing(service, opts.project, opts.region, named_by_revision=False)
            raise missing from None
        latest = state.latest_created_revision.rsplit("/", 1)[-1]
        if not latest:
            raise NotFoundError(f"service {service} has no revision to check yet")
        self.options = replace(self.options, revision=latest)
        self.candidate = self.report.revision = latest
        self._event("revision_chosen", revision=latest, why="the service's latest created")

    async def _serve(self) -> Any:
        """``--serve``: the live status page, listening before the run starts (None: off)."""
        if self.options.serve is None:
            return None
        from deploy_guard.runtime.status_page import StatusPage, serve_address

        host, port = serve_address(self.options.serve)
        page = StatusPage(host, port, self.report.to_dict)
        port = await page.start()
        where = f"[{host}]" if ":" in host else host
        self._event("status_page_listening", url=f"http://{where}:{port}/", port=port)
        return page

    async def _tick(self) -> None:
        """Tell the view every :data:`TICK` s, so its clock runs while nothing else happens.

        Waiting for Ready or holding sessions open can be minutes without a new
        measurement; a view that only redrew on news would look hung.
        """
        while True:
            await asyncio.sleep(TICK)
            self.progress.changed(self.report)

    async def _session(self, service: str, executor: Executor) -> tuple[Session, list[Policy]]:
        """The run's session with the service, and the policies that apply to it."""
        session = Session(
            self.router,
            self.options,
            self.recorder,
            executor,
            service=service,
            candidate=self.candidate,
        )
        policies = await session.applicable(self.policies)
        self.report.policies = [p.name for p in policies]
        return session, policies

    async def _check(self, service: str, executor: Executor) -> CheckReport:
        opts = self.options
        session, policies = await self._session(service, executor)
        judges = judges_for(policies)
        session.check_inputs()
        preflight, revision, before = await session.resolve()
        strategy = CheckStrategy(
            promote=opts.promote,
            dry_run=opts.dry_run,
            rollback_on_fail=any(p.on_fail == "rollback" for p in policies),
            inconclusive_passes=all(p.on_inconclusive == "pass" for p in policies),
        )
        history: list[Event] = [preflight]
        if not isinstance(strategy.next(history), Analyse):
            return await self._follow(strategy, history, executor, before)
        self._event("revision_ready", revision=revision.short)
        target = await session.reach(before, revision, policies[0])
        engine = Engine(self.sources, self.recorder)
        result = await engine.run(self._analysis(judges, target, revision))
        self.run_state.cut_short = result.cut_short
        history.append(self._judged(result))
        report = await self._act_to_the_end(self._follow(strategy, history, executor, before))
        if self.run_state.cut_short:
            await engine.complete(result)
        return report

    def _bound(self, policies: Sequence[Policy]) -> float:
        """Seconds an analysis may take: ``--timeout``, else the smallest policy timeout."""
        opts = self.options
        return opts.timeout if opts.timeout is not None else min(p.timeout for p in policies)

    def _analysis(self, judges: Judges, target: Target, revision: RevisionState) -> Analysis:
        """The check's one analysis: every rule, from the rollout (or the window) on."""
        opts = self.options
        bound = self._bound(judges.policies)
        # Evidence starts at the rollout, and never further back than the window.
        window = min(p.evidence_window for p in judges.policies)
        now = datetime.now(UTC)
        rollout = datetime.fromtimestamp(revision.create_time, UTC) if revision.create_time else now
        scope = Scope(
            project=opts.project,
            service=self.run_state.service,
            revision=revision.short,
            baseline=tuple(self.report.baseline),
            since=max(rollout, now - timedelta(seconds=window)),
            rules=tuple(judges.rules()),
        )
        return Analysis(
            judges=judges,
            scope=scope,
            target=target,
            bound=bound,
            log_interval=opts.log_interval,
            log_settle=opts.log_settle,
            metric_interval=opts.metric_interval,
        )

    def _judged(self, result: AnalysisResult) -> Judged:
        """Put the analysis' verdict in the report; the strategy's view of it."""
        verdict: Verdict = result.verdict
        for rule in verdict.rules:  # rules of other policies keep their last live result
            self.report.update_rule(rule)
        self.report.reasons = list(verdict.reasons)
        self.report.deciding = list(verdict.deciding)
        self.report.verdict = verdict.status
        return Judged(verdict.status, verdict.action, verdict.reasons, verdict.deciding)

    # .. acting ..
    async def _act_to_the_end(self, acting: Coroutine[Any, Any, CheckReport]) -> CheckReport:
        """Act on the verdict; a signal that lands meanwhile waits for the action.

        Abandoning a rollback between its write and its verification would leave
        traffic in an unknown state and a report that says nothing moved. The
        action is bounded (the write's operation and re-read have their own
        timeouts), so the check finishes it, says so, and then stops.
        """
        task = asyncio.ensure_future(acting)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            self._event("signal_while_acting", note="finishing the action first")
            report = await task
            self.run_state.cut_short = False  # stop after the action: no report-only pass
            self.report.error = "interrupted while acting: the action was finished first"
            return report

    async def _follow(
        self,
        strategy: CheckStrategy,
        history: list[Event],
        executor: Executor,
        before: ServiceState,
    ) -> CheckReport:
        """Make the strategy's moves until it says the outcome."""
        while True:
            move = strategy.next(history)
            if isinstance(move, Analyse):  # pragma: no cover - the check analyses once
                raise AssertionError("the check strategy asked for a second analysis")
            if move.decision is not None:
                self._decision(move.decision)
            if isinstance(move, Finish):
                verdict = move.verdict or self.report.verdict
                return self._finish(verdict, move.action, move.exit_code, move.message)
            if isinstance(move, RollBack):
                acted = await executor.rollback(
                    before, self.candidate, move.reason, reject=move.reject
                )
            else:
                assert isinstance(move, Promote)
                acted = await executor.promote(self.candidate, self.report.traffic_before)
            history.append(acted)

    def _decision(self, decision: Decision) -> None:
        self.report.verdict = decision.verdict
        detail: dict[str, Any] = {"verdict": decision.verdict, "action": decision.action}
        if decision.reason is not None:
            self.report.reasons = [decision.reason]
            detail["reason"] = decision.reason
        if decision.deciding is not None:
            detail["deciding"] = decision.deciding
        self._event("decision", **detail)

    async def _cleanup(self) -> None:
        """Remove the temporary tag (shielded: it must run even when cancelled)."""
        executor = self.run_state.executor
        if executor is None or not executor.temp_tag:
            return
        task = asyncio.ensure_future(executor.remove_temp_tag())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task  # a signal: finish removing the tag anyway
            if not self.run_state.decided:
                raise
            # The check has its verdict and action: a signal now changes neither
            # (nor the exit code a pipeline reads); it only ends the clean-up, done.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            self._event("signal_during_cleanup", note="the decision stands")


async def finish_first(action: Awaitable[T], on_signal: Callable[[], None]) -> T:
    """``action`` runs to its end: a signal meanwhile is heard after it, never mid-write.

    A traffic write abandoned between its write and its verification would leave
    traffic in an unknown state. ``on_signal`` runs (once) when a stop signal landed
    during the action; the caller hears of the signal there and acts on it after.
    """
    task = asyncio.ensure_future(action)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.cancelled():
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        on_signal()
        return await task


def report_error(report: CheckReport, exc: GuardError) -> None:
    """Fill ``report`` for a check that an error ended: the one mapping of error to outcome.

    The gate calls it before ``check_finished``; ``deploy-guard check`` calls it
    for an error raised before the gate's own handling (a revision name that
    does not say its service), so the two can never disagree.
    """
    text = redact_text(str(exc))
    report.error = text
    report.message = report.message or text
    report.exit_code = int(exc.exit_code)
    if isinstance(exc, SupersededError):
        report.action = "superseded"
    elif isinstance(exc, UnverifiedError):  # a traffic write sent, not read back
        report.action = "unverified"
    elif isinstance(exc, ActionError):  # an API that failed a read left nothing half-done
        report.action = "failed"
    if exc.exit_code == ExitCode.USAGE:  # nothing was judged: not a verdict
        report.verdict = "error"
