"""The check's sequence: resolve, reach, gather evidence, decide, act, clean up.

The gate owns time (the check's bound, the intervals between log and metric
passes), cancellation (fail-fast stops the probes the moment the judge says
the outcome cannot change) and clean-up (the temporary tag comes off whatever
ends the check: a verdict, an error, a timeout, Ctrl-C or SIGTERM).

It decides nothing itself: the pure :class:`deploy_guard.judge.Judge` does. It
talks to Cloud Run through :class:`~deploy_guard.gcp.cloudrun.TrafficRouter`
and to evidence through three small interfaces (:class:`ProbeSource`,
:class:`~deploy_guard.gcp.logs.LogSource`,
:class:`~deploy_guard.gcp.metrics.MetricSource`), each with a no-op stand-in
when a policy has no rules of that kind. Everything it learns goes into one
:class:`~deploy_guard.report.model.CheckReport`, so a report can be written
even when the check ends in an error or a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from deploy_guard.errors import (
    ActionError,
    ConfigError,
    GuardError,
    NotFoundError,
    SupersededError,
    UnverifiedError,
)
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.tags import (
    TAGS_ANNOTATION,
    rfc3339,
    stale_note,
    temporary_tags,
    with_holder,
    without_holders,
)
from deploy_guard.gcp.traffic import (
    LAST_KNOWN_GOOD,
    MAX_TAG_AND_SERVICE,
    REJECTED,
    SERVED_BEFORE,
    TEMP_TAG_ALPHABET,
    TEMP_TAG_PREFIX,
    Allocation,
    RevisionState,
    ServiceState,
    decode_split,
    describe,
    encode_split,
    failed_reconcile,
    find_tag_uri,
    newest_ready_before,
    pin_plan,
    rejected,
    rollback_plan,
    served_spec,
    served_split,
    settled,
    temp_tag,
    with_rejected,
    with_tag,
    without_tag,
)
from deploy_guard.log import get_logger, redact_text
from deploy_guard.measurements import (
    LogMeasurement,
    Measurement,
    MetricMeasurement,
    source_failed,
)
from deploy_guard.report.model import CheckReport

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.cloudrun import CloudRun
    from deploy_guard.gcp.logs import LogSource
    from deploy_guard.gcp.metrics import MetricSource
    from deploy_guard.judge import Judge, RuleResult, Verdict
    from deploy_guard.policy.model import Policy, Rule
    from deploy_guard.probes.auth import BearerToken, TokenChoice
    from deploy_guard.probes.target import Target

log = get_logger("deploy_guard.gate")

_STATUS_ORDER = {"pass": 0, "warn": 1, "inconclusive": 2, "fail": 3}
#: Seconds the log and metric pollers give the probes to get going before their
#: first pass (less when the probes report sooner): see :func:`warm_imports`.
POLL_GRACE = 0.5
#: Seconds between redraws of the progress view when nothing else changed.
TICK = 0.5
#: Bound (seconds) on the one log and metric pass that completes the report after
#: fail-fast decided early: see :meth:`Gate._complete_evidence`.
COMPLETION_BOUND = 5.0
#: Seconds a temporary tag stays "in use" after the check's bound: the action, its
#: verification, the report-only pass and the clean-up (each bounded) fit in it.
TAG_MARGIN = 300.0


# -- options and interfaces -----------------------------------------------------------------
@dataclass(frozen=True)
class CheckOptions:
    """What the user asked for (flags), with the gate's timing knobs."""

    project: str
    region: str
    revision: str
    service: str | None = None
    promote: bool = False
    dry_run: bool = False
    #: Bound on the evidence phase; None: the policies' ``timeout`` (the smallest).
    timeout: float | None = None
    #: Bound on waiting for the candidate to become Ready.
    ready_timeout: float = 300.0
    #: Seconds between Cloud Logging passes while probes run (quota: 60 reads/min/project).
    log_interval: float = 10.0
    #: Seconds to wait after the probes end before the last Cloud Logging pass, for
    #: entries still being ingested (Cloud Logging gives no bound; usually seconds).
    log_settle: float = 0.0
    #: Seconds between Cloud Monitoring passes (points arrive each 60 s at best).
    metric_interval: float = 60.0
    #: Bound on retrying one Cloud API call's transient errors.
    api_retry: float = 30.0
    token: TokenChoice | None = None


class ProbeSource(Protocol):
    """Runs probe rules against a target, streaming cumulative measurements."""

    def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]: ...


class RunnerProbes:
    """:class:`ProbeSource` over :func:`deploy_guard.probes.runner.run_rules`."""

    def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]:
        from deploy_guard.probes.runner import run_rules

        return run_rules(rules, target)


class Progress(Protocol):
    """Told whenever the report changed (the terminal view redraws)."""

    def changed(self, report: CheckReport) -> None: ...


class NoProgress:
    def changed(self, report: CheckReport) -> None:
        return None


@dataclass(frozen=True)
class Scope:
    """What the evidence sources need to know about the candidate."""

    project: str
    service: str
    revision: str
    baseline: tuple[str, ...]
    since: datetime
    rules: tuple[Rule, ...]


@dataclass
class Sources:
    probes: ProbeSource
    logs: LogSource
    metrics: MetricSource


SourceFactory = Callable[[Scope], Sources]


def cloud_sources(clients: Any, calls: Any, *, retry_deadline: float = 30.0) -> SourceFactory:
    """The production sources: the probe runner, Cloud Logging and Cloud Monitoring."""

    def build(scope: Scope) -> Sources:
        from deploy_guard.gcp.logs import CloudLogging, NoLogs
        from deploy_guard.gcp.metrics import CloudMonitoring, NoMetrics

        common: dict[str, Any] = {
            "project": scope.project,
            "service": scope.service,
            "revision": scope.revision,
            "rules": scope.rules,
            "since": scope.since,
            "baseline": scope.baseline,
            "calls": calls,
            "retry_deadline": retry_deadline,
        }
        has_logs = any(r.kind == "logs" for r in scope.rules)
        has_metrics = any(r.kind == "metric" for r in scope.rules)
        return Sources(
            probes=RunnerProbes(),
            logs=CloudLogging(clients, **common) if has_logs else NoLogs(),
            metrics=CloudMonitoring(clients, **common) if has_metrics else NoMetrics(),
        )

    return build


# -- several policies, one decision ---------------------------------------------------------
class Judges:
    """One :class:`Judge` per applicable policy; the worst verdict decides."""

    def __init__(self, policies: Sequence[Policy]) -> None:
        from deploy_guard.judge import Judge

        self.policies = list(policies)
        self.judges: list[Judge] = [Judge(p) for p in self.policies]
        self.owner: dict[str, Judge] = {}
        for policy, judge in zip(self.policies, self.judges, strict=True):
            for rule in policy.rules:
                if rule.name in self.owner:
                    raise ConfigError(
                        f"rule name {rule.name!r} appears in two policies that apply to this "
                        "service; rename one"
                    )
                self.owner[rule.name] = judge

    @property
    def fail_fast(self) -> bool:
        return any(p.fail_fast for p in self.policies)

    def rules(self) -> list[Rule]:
        return [r for p in self.policies for r in p.rules]

    def observe(self, m: Measurement) -> RuleResult | None:
        judge = self.owner.get(m.rule)
        return judge.observe(m) if judge is not None else None

    def early(self) -> Verdict | None:
        """A decided failure as soon as any policy's outcome is a decided fail."""
        verdicts = [j.early_verdict() for j in self.judges]
        failed = [v for v in verdicts if v is not None and v.status == "fail"]
        if failed:
            return failed[0]
        if all(v is not None for v in verdicts):
            return worst([v for v in verdicts if v is not None])
        return None

    def final(self) -> Verdict:
        return worst([j.verdict() for j in self.judges])


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` at most ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that
    lands as the awaited event fires, and a poller cancelled by a decision (the
    probes finishing at that very moment) would run one more pass, or sleep
    through ``--log-settle``, while the decision waits for it.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _waiting_for_sources(judges: Judges) -> list[RuleResult]:
    """Log and metric rules with no decided result yet (their sources were still polling)."""
    return [
        r
        for judge in judges.judges
        for r in judge.results()
        if r.kind in ("logs", "metric") and not r.decided
    ]


#: When policies with the same outcome ask for different actions, the strongest wins:
#: one policy that wants a failing candidate rolled back is enough.
_ACTION_ORDER = {"none": 0, "promote": 1, "hold": 2, "rollback": 3}


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The most severe verdict, its rules merged with the others' (for the report).

    Policies that share that outcome all count, whatever their order: their
    reasons and deciding rules are merged, and the strongest action any of them
    asks for is taken (a pass promotes if any passing policy says ``on_pass:
    promote``; a failure rolls back if any failing one says ``on_fail: rollback``).
    """
    from dataclasses import replace

    top = max(verdicts, key=lambda v: _STATUS_ORDER.get(v.status, 2))
    same = [v for v in verdicts if v.status == top.status]
    action = max((v.action for v in same), key=lambda a: _ACTION_ORDER.get(a, 0))
    return replace(
        top,
        action=action,
        rules=tuple(r for v in verdicts for r in v.rules),
        reasons=tuple(reason for v in same for reason in v.reasons),
        deciding=tuple(rule for v in same for rule in v.deciding),
    )


def _check_request_timeout(
    policies: Sequence[Policy], revision: RevisionState, service: str
) -> None:
    """Refuse WebSocket sessions that outlast the revision's request timeout (exit 2).

    Cloud Run cuts every request at the timeout, WebSocket sessions included:
    probing anyway would see healthy sessions cut and roll back a good revision.
    """
    from deploy_guard.policy.units import format_duration as dur

    limit = revision.request_timeout
    for policy in policies:
        for rule in policy.rules:
            ws = rule.websocket
            if ws is None or ws.longest_session < limit:
                continue
            longest = ws.longest_session
            needed = min(3600, int(longest + ws.connect_timeout) + 1)
            fix = (
                f"raise the service's request timeout with `gcloud run services update {service} "
                f"--timeout={needed}` or shorten the hold"
                if longest + ws.connect_timeout < 3600
                else "shorten the hold (Cloud Run's request timeout is at most 3600 s)"
            )
            raise ConfigError(
                f"rule {rule.name} (policy {policy.name}) keeps WebSocket sessions open up to "
                f"{dur(longest)} (expect timeouts {dur(longest - ws.hold)} + hold "
                f"{dur(ws.hold)}), but revision {revision.short} has a request timeout of "
                f"{dur(limit)}: Cloud Run would cut every session at {dur(limit)} and a healthy "
                f"revision would fail. Nothing was probed or changed; {fix}"
            )


def _check_token_source(choice: TokenChoice | None, auth: Any) -> None:
    """Read a token named by a flag or the policy now, before any API call.

    The probes need it only after the temporary tag is added; a missing
    variable or file found then would already have written to the service.
    The policy's ``auth.safe_query_params`` take effect here too: from now on
    output may show those query values (every other one stays redacted).
    """
    from deploy_guard.log import allow_query_params
    from deploy_guard.probes.auth import TokenChoice, named_token

    allow_query_params(auth.safe_query_params)

    named_token(
        choice or TokenChoice(),
        policy_token_env=auth.token_env,
        policy_token_file=auth.token_file,
    )


async def probe_token(
    choice: TokenChoice | None, auth: Any, *, url: str, service_uri: str
) -> BearerToken | None:
    """The token the probes send to the candidate's tag ``url``.

    Cloud Run checks an ID token's audience against the *service* URL (or a
    custom audience configured on the service), never against a tag URL, so
    the service's ``uri`` is the audience unless the flags or the policy's
    ``auth.audience`` name one.
    """
    from deploy_guard.probes.auth import TokenChoice, resolve_token

    return await resolve_token(
        choice or TokenChoice(),
        url=url,
        audience=service_uri or None,
        policy_token_env=auth.token_env,
        policy_token_file=auth.token_file,
        policy_id_token=auth.id_token,
        policy_audience=auth.audience,
    )


# -- rollback targets -----------------------------------------------------------------------
async def choose_rollback_target(
    router: CloudRun, state: ServiceState, *, exclude: str | None = None
) -> RevisionState:
    """Where ``rollback`` sends traffic when not told (see :func:`pick_rollback_target`)."""
    target, _why = await pick_rollback_target(router, state, exclude=exclude)
    return target


async def pick_rollback_target(
    router: CloudRun, state: ServiceState, *, exclude: str | None = None
) -> tuple[RevisionState, str]:
    """Where ``rollback`` sends traffic when not told, and why, in words for the report.

    In order: the last known good revision, unless it is what serves everything
    now (a check just promoted it: going back means away from it); else the
    revision that served most before the guard's last promotion (recorded in
    the :data:`SERVED_BEFORE` annotation); else the newest Ready revision older
    than everything serving now (the API keeps no traffic history, so this is
    the last resort). Never a revision recorded in :data:`REJECTED` (a check
    failed it, or a person rolled back from it). Raises :class:`ConfigError`
    when no Ready revision qualifies.
    """
    revisions = await router.list_revisions(state.name)
    by_name = {r.short: r for r in revisions}
    current = served_split(state)
    listed = rejected(state.annotations)
    refused = {*listed, *([exclude] if exclude else [])}

    def usable(name: str) -> bool:
        rev = by_name.get(name)
        return bool(rev and rev.ready and name not in refused and current != {name: 100})

    good = state.annotations.get(LAST_KNOWN_GOOD, "")
    if good and usable(good):
        return by_name[good], "the last known good revision (recorded by a passing check)"
    before = decode_split(state.annotations.get(SERVED_BEFORE, ""))
    for name, pct in sorted(before.items(), key=lambda i: -i[1]):
        if usable(name):
            whose = f" of {good}" if good else ""
            return by_name[name], f"served {pct}% before the promotion{whose}"
    if exclude:
        current.setdefault(exclude, 0)
    candidate = newest_ready_before(revisions, current, skip=refused)
    if candidate is None:
        serving = describe(served_split(state)) or "nothing"
        # rejected revisions that would otherwise qualify: say how to allow one again
        newest = max((r.create_time for r in revisions if r.short in current), default=0.0)
        held = [r.short for r in revisions if r.short in listed and r.create_time < newest]
        also = (
            f" ({', '.join(held)} recorded as rejected: `deploy-guard status --service "
            f"{state.short} --clear-rejected REV` takes one off the list)"
            if held
            else ""
        )
        if not good:
            known = "none is recorded as last known good"
        elif served_split(state) == {good: 100}:
            known = f"the last known good ({good}) is the one serving"
        elif good in refused:
            known = f"the last known good ({good}) is on the rejected list"
        else:
            known = f"the last known good ({good}) is gone or not Ready"
        raise ConfigError(
            f"no Ready revision of {state.short} to roll back to: {serving} serves now, "
            f"{known} and no usable Ready revision is older than the "
            f"serving one{also}; pass --to-revision REV to choose one"
        )
    newest = max((r.create_time for r in revisions if r.short in current), default=0.0)
    skipped = [
        r.short
        for r in revisions
        if r.short in listed and candidate.create_time < r.create_time < newest
    ]
    why = f"the newest Ready revision older than {', '.join(sorted(current))}"
    if skipped:
        why += f", skipping rejected {', '.join(skipped)}"
    return candidate, why


# -- the check ------------------------------------------------------------------------------
@dataclass
class _Run:
    """Mutable state of one check, shared by the steps below."""

    service: str = ""
    before: ServiceState | None = None
    expected: ServiceState | None = None
    temp_tag: str = ""
    first_failure: bool = False
    #: The evidence sources of the check, once gathering started.
    sources: Sources | None = None
    #: Loop time by which the evidence phase had to end (the check's bound).
    evidence_deadline: float = 0.0
    #: Fail-fast decided while log or metric rules were still waiting for evidence.
    cut_short: bool = False
    #: The outcome is set (a verdict acted on, or an error that ended the check):
    #: a signal during the clean-up no longer changes it.
    decided: bool = False
    #: The policies that apply to the service.
    policies: list[Policy] = field(default_factory=list)
    #: A traffic write of the guard's failed inside Cloud Run or could not be made.
    write_failed: bool = False


class Gate:
    """Runs one check; see the module docstring for the sequence."""

    def __init__(
        self,
        policies: Sequence[Policy],
        options: CheckOptions,
        router: CloudRun,
        sources: SourceFactory,
        report: CheckReport,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.policies = list(policies)
        self.options = options
        self.router = router
        self.sources = sources
        self.report = report
        self.progress = progress or NoProgress()
        self.run_state = _Run()
        #: The candidate's short name (``--revision`` may be a full resource name).
        self.candidate = options.revision.rsplit("/", 1)[-1]

    # .. small helpers ..
    def _event(self, name: str, **detail: Any) -> None:
        self.report.timeline.add(name, **detail)
        fields = {"service": self.run_state.service, "candidate": self.options.revision, **detail}
        log.info(name, **fields)
        self._sync_calls()

    def _sync_calls(self) -> None:
        self.report.api_calls = self.router.calls.as_dict()
        self.progress.changed(self.report)

    def _finish(self, verdict: str, action: str, code: ExitCode, message: str) -> CheckReport:
        self.report.verdict = verdict
        self.report.action = action
        self.report.exit_code = int(code)
        self.report.message = message
        return self.report

    # .. the sequence ..
    async def run(self) -> CheckReport:
        """The whole check. Clean-up runs whatever ends it; the report is always filled."""
        from deploy_guard.gcp.cloudrun import need_service

        opts = self.options
        self.report.dry_run = opts.dry_run
        self.report.project, self.report.region = opts.project, opts.region
        service = need_service(opts.service, opts.revision)
        self.run_state.service = self.report.service = service
        self._event("check_started", dry_run=opts.dry_run, promote=opts.promote)
        warm = asyncio.ensure_future(asyncio.to_thread(warm_imports))
        ticker = asyncio.ensure_future(self._tick())
        try:
            report = await self._check(service)
            self.run_state.decided = True
            return report
        except asyncio.CancelledError:
            self.report.error = "the check was interrupted (signal or cancellation)"
            self._finish(
                "inconclusive", "none", ExitCode.INCONCLUSIVE, "interrupted before a decision"
            )
            self._event("check_interrupted")
            raise
        except GuardError as exc:
            self._errored(exc)
            self.run_state.decided = True  # the error is the outcome; the clean-up keeps it
            raise
        except Exception as exc:  # google-auth's "not logged in" is the user's to fix
            from deploy_guard.gcp.errors import map_credentials_error

            mapped = map_credentials_error(exc)
            if mapped is None:
                raise
            self._errored(mapped)
            self.run_state.decided = True
            raise mapped from exc
        finally:
            ticker.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await warm
            await self._cleanup()
            self.report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
            self._event(
                "check_finished",
                verdict=self.report.verdict,
                action=self.report.action,
                exit_code=self.report.exit_code,
            )

    async def _tick(self) -> None:
        """Tell the view every :data:`TICK` s, so its clock runs while nothing else happens.

        Waiting for Ready or holding sessions open can be minutes without a new
        measurement; a view that only redrew on news would look hung.
        """
        while True:
            await asyncio.sleep(TICK)
            self.progress.changed(self.report)

    def _errored(self, exc: GuardError) -> None:
        """Fill the report for a check that ended in an error (before ``check_finished``)."""
        report_error(self.report, exc)

    async def _check(self, service: str) -> CheckReport:
        opts = self.options
        policies = [p for p in self.policies if p.applies_to(service)]
        if not policies:
            await self._service_exists(service)  # a typo in the name: say that, not "no policy"
            names = ", ".join(p.name for p in self.policies) or "(none)"
            raise ConfigError(
                f"no policy applies to service {service!r} (policies: {names}); add the "
                "service's name, or a pattern such as 'chat*', to a policy's services:"
            )
        self.report.policies = [p.name for p in policies]
        self.run_state.policies = policies
        judges = Judges(policies)
        _check_token_source(opts.token, policies[0].auth)  # a bad one: exit 2, nothing touched
        from deploy_guard.probes.target import check_env_headers

        check_env_headers(r for p in policies for r in p.rules)  # likewise a ${NAME} header
        try:
            revision = await self.router.wait_ready(service, opts.revision, opts.ready_timeout)
        except NotFoundError:
            await self._service_exists(service)
            raise NotFoundError(
                f"revision {self.candidate} does not exist in service {service} (project "
                f"{opts.project}, region {opts.region}); `deploy-guard status --service "
                f"{service}` shows what it serves"
            ) from None
        if revision.service and revision.service != service:
            raise ConfigError(
                f"revision {opts.revision} belongs to service {revision.service}, not {service}"
            )
        if revision.ready is True:  # exit 2 before anything is written
            _check_request_timeout(policies, revision, service)
        # Read the split only once the candidate is Ready and Cloud Run has finished
        # routing: a LATEST entry follows the newest Ready revision, and while the
        # service reconciles traffic_statuses may still show the split from before
        # the deploy (the candidate would look like it held no traffic).
        if revision.ready is True:
            before = await self.router.wait_settled(service, opts.ready_timeout)
        else:
            before = await self.router.get_service(service)
        self._record(before)
        self._notice(before)
        if revision.ready is not True:
            return await self._never_started(revision)
        if not settled(before):
            return self._unsettled(before)
        self._event("revision_ready", revision=revision.short)
        target = await self._reach(before, revision, policies[0])
        verdict = await self._gather(judges, target, revision)
        report = await self._act_to_the_end(verdict)
        if self.run_state.cut_short:
            await self._complete_evidence(judges)
        return report

    async def _service_exists(self, service: str) -> None:
        """Raise "service S does not exist ..." when it does not (any other answer: return)."""
        from deploy_guard.gcp.cloudrun import service_missing

        try:
            await self.router.get_service(service)
        except NotFoundError:
            raise service_missing(service, self.options.project, self.options.region) from None
        except GuardError:
            return

    def _notice(self, before: ServiceState) -> None:
        """Say up front what a person should know: a rejected candidate, leftover tags."""
        service = before.short
        if self.candidate in rejected(before.annotations):
            note = (
                f"{self.candidate} is on {service}'s rejected list (a check failed it, or a "
                "rollback moved away from it); it is checked again, and a pass with --promote "
                "takes it off"
            )
            self._event("candidate_was_rejected", revision=self.candidate)
            self.report.notes.append(note)
        tags = temporary_tags(before, datetime.now(UTC))
        stale = [t for t in tags if not t.in_use]
        if stale:
            self._event("stale_tags_found", tags=[t.tag for t in stale])
            self.report.notes.append(stale_note(service, stale))
        in_use = [t for t in tags if t.in_use]
        if in_use:
            self._event("tags_in_use", tags=[t.tag for t in in_use])
            self.report.notes.append(
                "another check may be running on "
                + service
                + ": "
                + "; ".join(t.describe() for t in in_use)
            )

    async def _act_to_the_end(self, verdict: Verdict) -> CheckReport:
        """Act on the verdict; a signal that lands meanwhile waits for the action.

        Abandoning a rollback between its write and its verification would leave
        traffic in an unknown state and a report that says nothing moved. The
        action is bounded (the write's operation and re-read have their own
        timeouts), so the check finishes it, says so, and then stops.
        """
        task = asyncio.ensure_future(self._act(verdict))
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

    def _record(self, before: ServiceState) -> None:
        self.run_state.before = self.run_state.expected = before
        split = served_split(before)
        self.report.traffic_before = split
        self.report.traffic_after = dict(split)
        self.report.baseline = sorted(r for r in split if r != self.candidate)
        self._event(
            "traffic_recorded",
            traffic=describe(split),
            generation=before.generation,
            latest_created=before.latest_created_revision,
        )

    def _unsettled(self, state: ServiceState) -> CheckReport:
        why = (
            f"{state.short} was still reconciling {self.options.ready_timeout:.0f} s after "
            f"{self.candidate} became Ready (generation {state.generation}, observed "
            f"{state.observed_generation}): what it serves cannot be known, so nothing was "
            "probed or changed"
        )
        if failed_reconcile(state):  # said at once: waiting would change nothing
            why = (
                f"Cloud Run failed to apply {state.short}'s latest change (generation "
                f"{state.generation}; it still shows generation {state.observed_generation}'s "
                f"state): {state.terminal_message}. It serves "
                f"{describe(served_split(state))}, but its spec says otherwise, so nothing was "
                "probed or changed; fix or roll back that change first"
            )
        self.report.reasons = [why]
        self._event("decision", verdict="inconclusive", action="hold", reason=why)
        return self._finish("inconclusive", "held", ExitCode.INCONCLUSIVE, why)

    async def _never_started(self, revision: RevisionState) -> CheckReport:
        if revision.ready is None:
            return self._still_starting(revision)
        why = f"revision {revision.short} failed to start: {revision.message}"
        self.report.reasons = [why]
        self.report.verdict = "fail"
        rollback = any(p.on_fail == "rollback" for p in self.run_state.policies)
        if not rollback or self.options.dry_run:
            action = "none (dry run; would rollback)" if rollback else "none"
            self._event("decision", verdict="fail", action=action, reason=why)
            word = "dry run: would roll back" if rollback else "on_fail: none"
            return self._finish("fail", "none", ExitCode.FAIL, f"{why} ({word})")
        self._event("decision", verdict="fail", action="rollback", reason=why)
        return await self._rollback(why)

    def _still_starting(self, revision: RevisionState) -> CheckReport:
        """Still starting at ``--ready-timeout``: not known to be bad, so not a failure.

        Cloud Run sends no traffic to a revision that is not Ready, so there is
        nothing to roll back; it is not added to the rejected list either.
        """
        why = (
            f"revision {revision.short} was still starting {self.options.ready_timeout:g} s "
            "after the check began (--ready-timeout): nothing was probed or changed; check "
            "it again once it is Ready, or raise --ready-timeout"
        )
        self.report.reasons = [why]
        self._event("decision", verdict="inconclusive", action="hold", reason=why)
        return self._finish("inconclusive", "held", ExitCode.INCONCLUSIVE, why)

    async def _reach(self, before: ServiceState, revision: RevisionState, policy: Policy) -> Target:
        """The candidate's tag URL; a temporary 0 % tag when it has none."""
        from deploy_guard.probes.target import Target

        found = find_tag_uri(before, revision.short)
        if found is not None and found[0].startswith(TEMP_TAG_PREFIX):
            found = None  # another check's tag (or a stale one) may go at any moment
        if found is None:
            tag = self._new_temp_tag(before, revision)
            assert self.run_state.expected is not None
            self.run_state.temp_tag = self.report.temporary_tag = tag
            until = datetime.now(UTC) + timedelta(seconds=self._tag_hold())
            self._event("tag_requested", tag=tag, until=rfc3339(until))
            # Who holds the tag and until when rides in the same write: a tag left
            # behind (a second Ctrl-C, a killed step) is known to be stale later.
            holder = with_holder(self.run_state.expected, tag, until=until, by=tag_holder())
            write = asyncio.ensure_future(
                self.router.set_traffic(
                    self.run_state.expected,
                    with_tag(self.run_state.expected, revision.short, tag),
                    why="temporary tag to reach the candidate",
                    annotations={TAGS_ANNOTATION: holder},
                )
            )
            try:
                state = await asyncio.shield(write)
            except asyncio.CancelledError:
                # The write runs on in its worker thread: let it land, so the clean-up
                # removes the tag it adds instead of racing it (and missing it).
                with contextlib.suppress(Exception):
                    await write
                raise
            self.run_state.expected = state
            found = find_tag_uri(state, revision.short)
            if found is None:
                raise ActionError(f"Cloud Run shows no URL for the temporary tag {tag}")
            self._event("tag_added", tag=tag, url=found[1])
        url = found[1]
        self.report.target_url = url
        service_uri = self.run_state.expected.uri if self.run_state.expected else before.uri
        # The first applicable policy says how probes authenticate.
        token = await probe_token(
            self.options.token, policy.auth, url=url, service_uri=service_uri or before.uri
        )
        return Target(base_url=url, token=token)

    def _new_temp_tag(self, before: ServiceState, revision: RevisionState) -> str:
        """``dg-`` + random characters, as many as the service name leaves room for.

        Cloud Run refuses a tag and service name longer than 46 characters
        together; with a name of 43 characters or more no ``dg-`` tag fits, and
        the candidate can only be reached through a tag URL of its own (exit 2).
        """
        service = self.run_state.service
        taken = {a.tag for a in (*before.traffic, *before.traffic_statuses) if a.tag}
        tag = temp_tag(
            service, taken, lambda n: "".join(secrets.choice(TEMP_TAG_ALPHABET) for _ in range(n))
        )
        if tag is not None:
            return tag
        shortest = len(TEMP_TAG_PREFIX) + 1
        if len(service) + shortest > MAX_TAG_AND_SERVICE:
            fix = (
                "deploy the candidate with a short tag of its own (`gcloud run "
                f"deploy {service} --no-traffic --tag=c`), or use a service name of at most "
                f"{MAX_TAG_AND_SERVICE - shortest} characters"
                if len(service) < MAX_TAG_AND_SERVICE
                # not even a one-character tag fits: the fix is a shorter name
                else f"no tag of any length fits a name of {MAX_TAG_AND_SERVICE} characters or "
                "more, so a candidate without traffic cannot be reached on this service: use a "
                f"service name of at most {MAX_TAG_AND_SERVICE - shortest} characters (or "
                f"{MAX_TAG_AND_SERVICE - 1} with a one-character tag of your own)"
            )
            raise ConfigError(
                f"revision {revision.short} has no tag URL of its own, and service {service}'s "
                f"name ({len(service)} characters) leaves no room for the guard's temporary tag "
                f"({TEMP_TAG_PREFIX}x, at least {shortest}): Cloud Run refuses a tag and service "
                f"name longer than {MAX_TAG_AND_SERVICE} characters together. Nothing was probed "
                f"or changed; {fix}"
            )
        raise ActionError(
            f"no free temporary tag name on service {service}: every {TEMP_TAG_PREFIX} tag the "
            "name leaves room for is taken; remove stale ones with `deploy-guard status "
            "--remove-stale-tags`"
        )

    def _tag_hold(self) -> float:
        """Seconds a temporary tag is recorded as in use: the check's bound plus a margin."""
        bound = self.options.timeout
        if bound is None:
            bound = min((p.timeout for p in self.run_state.policies), default=0.0)
        return bound + self.options.log_settle + TAG_MARGIN

    def _timeout(self, judges: Judges) -> float:
        if self.options.timeout is not None:
            return self.options.timeout
        return min(p.timeout for p in judges.policies)

    def _since(self, judges: Judges, revision: RevisionState) -> datetime:
        """Evidence starts at the rollout, and never further back than the window."""
        window = min(p.evidence_window for p in judges.policies)
        now = datetime.now(UTC)
        rollout = datetime.fromtimestamp(revision.create_time, UTC) if revision.create_time else now
        return max(rollout, now - timedelta(seconds=window))

    async def _gather(self, judges: Judges, target: Target, revision: RevisionState) -> Verdict:
        """Run every source concurrently until the judge decides, all complete, or time is up."""
        rules = judges.rules()
        scope = Scope(
            project=self.options.project,
            service=self.run_state.service,
            revision=revision.short,
            baseline=tuple(self.report.baseline),
            since=self._since(judges, revision),
            rules=tuple(rules),
        )
        sources = self.run_state.sources = self.sources(scope)
        bound = self._timeout(judges)
        self.run_state.evidence_deadline = asyncio.get_running_loop().time() + bound
        # Every rule is in the report (and the live view) from the start, pending, in
        # policy order: a rule whose first snapshot comes late (a 60 s hold) still shows.
        self.report.set_rules([result for judge in judges.judges for result in judge.results()])
        self._event("evidence_started", rules=[r.name for r in rules], timeout_s=bound)
        queue: asyncio.Queue[Measurement | None] = asyncio.Queue()
        probes_started, probes_done = asyncio.Event(), asyncio.Event()
        probe_rules = [r for r in rules if r.kind in ("http", "websocket")]

        def poller(
            source: str, measure: Callable[..., Any], interval: float, settle: float = 0.0
        ) -> Any:
            return self._poll(
                source,
                measure,
                interval,
                probes_started,
                probes_done,
                queue,
                rules=rules,
                settle=settle,
            )

        tasks = [
            asyncio.create_task(
                self._pump_probes(sources.probes, probe_rules, target, queue, probes_started)
            ),
            asyncio.create_task(
                poller(
                    "logs",
                    sources.logs.measure,
                    self.options.log_interval,
                    self.options.log_settle,
                )
            ),
            asyncio.create_task(
                poller("metrics", sources.metrics.measure, self.options.metric_interval)
            ),
        ]

        def probes_finished(_task: object) -> None:
            probes_started.set()
            probes_done.set()

        tasks[0].add_done_callback(probes_finished)
        try:
            async with asyncio.timeout(bound):
                verdict = await self._decide(judges, queue, running=len(tasks))
        except TimeoutError:
            verdict = judges.final()
            verdict = _with_reason(verdict, f"the check timed out after {bound:g} s")
            self._event("check_timed_out", after_s=bound)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._sync_calls()
        return verdict

    async def _pump_probes(
        self,
        probes: ProbeSource,
        rules: Sequence[Rule],
        target: Target,
        queue: asyncio.Queue[Measurement | None],
        started: asyncio.Event,
    ) -> None:
        complete: set[str] = set()
        try:
            if rules:
                async with contextlib.aclosing(probes.stream(rules, target)) as stream:  # type: ignore[type-var]
                    async for m in stream:
                        started.set()
                        if m.complete:
                            complete.add(m.rule)
                        queue.put_nowait(m)
        except Exception as exc:  # never swallowed: the rules still open become errors
            self._source_failed("probes", exc, [r for r in rules if r.name not in complete], queue)
        finally:
            queue.put_nowait(None)

    def _source_failed(
        self,
        source: str,
        exc: Exception,
        rules: Sequence[Rule],
        queue: asyncio.Queue[Measurement | None],
    ) -> None:
        """An evidence source raised: log it, and end each of its rules with the cause."""
        error = redact_text(f"the {source} source failed: {type(exc).__name__}: {exc}")
        names = [r.name for r in rules]
        self.report.timeline.add("evidence_source_failed", source=source, rules=names, error=error)
        log.error(
            "evidence_source_failed",
            service=self.run_state.service,
            candidate=self.options.revision,
            source=source,
            rules=names,
            error=error,
        )
        for rule in rules:
            metric = rule.metric.type if rule.metric is not None else ""
            queue.put_nowait(source_failed(rule.name, rule.kind, error, metric=metric))

    async def _poll(
        self,
        source: str,
        measure: Callable[..., Any],
        interval: float,
        probes_started: asyncio.Event,
        probes_done: asyncio.Event,
        queue: asyncio.Queue[Measurement | None],
        *,
        rules: Sequence[Rule] = (),
        settle: float = 0.0,
    ) -> None:
        """Passes every ``interval`` s while probes run, then one last complete pass.

        The first pass waits until the probes report (at most :data:`POLL_GRACE`
        s); the last one starts ``settle`` s after the probes complete (at once
        by default).
        """
        passes = self.report.evidence_passes
        kind = "logs" if source == "logs" else "metric"
        try:
            await _wait(probes_started, min(interval, POLL_GRACE))
            while not probes_done.is_set():
                got: list[LogMeasurement | MetricMeasurement] = await measure(complete=False)
                if got:
                    passes[source] = passes.get(source, 0) + 1
                for m in got:
                    queue.put_nowait(m)
                await _wait(probes_done, interval)
            if settle > 0:
                await asyncio.sleep(settle)
            got = await measure(complete=True)
            if got:
                passes[source] = passes.get(source, 0) + 1
            for m in got:
                queue.put_nowait(m)
        except Exception as exc:  # never swallowed: the source's rules become errors
            self._source_failed(source, exc, [r for r in rules if r.kind == kind], queue)
        finally:
            queue.put_nowait(None)

    async def _decide(
        self, judges: Judges, queue: asyncio.Queue[Measurement | None], *, running: int
    ) -> Verdict:
        while running:
            m = await queue.get()
            if m is None:
                running -= 1
                continue
            result = judges.observe(m)
            if result is None:
                continue
            self._on_result(result)
            early = judges.early()
            if early is not None and (judges.fail_fast or early.status != "fail"):
                if early.status == "fail":
                    self._event("fail_fast", deciding=list(early.deciding))
                    self.run_state.cut_short = bool(_waiting_for_sources(judges))
                return early
        return judges.final()

    async def _complete_evidence(self, judges: Judges) -> None:
        """After an early decision, one last log and metric pass, for the report only.

        Fail-fast acts on the first failure; log and metric rules still waiting
        then would be reported as they stood, a log rule "passing" on a pass that
        ran before the candidate's 1011 lines were written. One pass, after the
        action (it never delays a rollback) and bounded by :data:`COMPLETION_BOUND`
        and the check's own bound, fills them in. The verdict and the action stand;
        a pass that fails or is interrupted leaves the rules as they were judged.
        """
        sources = self.run_state.sources
        kinds = {r.rule: r.kind for r in _waiting_for_sources(judges)}
        if sources is None or not kinds:
            return
        waiting = list(kinds)
        remaining = self.run_state.evidence_deadline - asyncio.get_running_loop().time()
        bound = min(COMPLETION_BOUND, remaining)
        if bound <= 0:
            self._event("evidence_not_completed", rules=waiting, why="the check's bound is up")
            return
        passes: dict[str, Awaitable[Sequence[Measurement]]] = {}
        if "logs" in kinds.values():
            passes["logs"] = sources.logs.measure(complete=True, deadline=bound)
        if "metric" in kinds.values():
            passes["metrics"] = sources.metrics.measure(complete=True, deadline=bound)
        try:
            async with asyncio.timeout(bound):
                batches = await asyncio.gather(*passes.values())
        except TimeoutError:
            self._event("evidence_not_completed", rules=waiting, why=f"no answer in {bound:.1f} s")
            return
        except Exception as exc:  # the action stands whatever this report-only pass hits
            log.warning("evidence_completion_failed", error=f"{type(exc).__name__}: {exc}")
            self._event("evidence_not_completed", rules=waiting, why=type(exc).__name__)
            return
        except asyncio.CancelledError:
            # The action is done and verified: a signal now only ends the extra pass.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._event("evidence_not_completed", rules=waiting, why="interrupted")
            return
        counted = self.report.evidence_passes
        for source, batch in zip(passes, batches, strict=True):
            if batch:
                counted[source] = counted.get(source, 0) + 1
        completed: dict[str, str] = {}
        for m in (m for batch in batches for m in batch):
            if m.error is not None:  # a failed read adds nothing: the rule stays as judged
                completed[m.rule] = f"unchanged ({m.error})"
                continue
            result = judges.observe(m)
            if result is not None and result.rule in kinds:
                self.report.update_rule(result)
                completed[result.rule] = result.status
        self._sync_calls()
        self._event("evidence_completed", rules=completed)

    def _on_result(self, result: RuleResult) -> None:
        self.report.update_rule(result)
        if result.status == "fail" and not self.run_state.first_failure:
            self.run_state.first_failure = True
            self._event("first_failure_seen", rule=result.rule, counts=result.counts)
        else:
            self._sync_calls()

    # .. acting ..
    async def _act(self, verdict: Verdict) -> CheckReport:
        for result in verdict.rules:  # rules of other policies keep their last live result
            self.report.update_rule(result)
        self.report.reasons = list(verdict.reasons)
        self.report.deciding = list(verdict.deciding)
        self.report.verdict = verdict.status
        action: str = verdict.action
        if verdict.status in ("pass", "warn") and self.options.promote:
            action = "promote"  # --promote overrides the policy's on_pass
        if self.options.dry_run:
            action = f"none (dry run; would {action})" if action != "none" else "none"
        self._event("decision", verdict=verdict.status, action=action, deciding=verdict.deciding)
        reason = "; ".join(verdict.reasons) or verdict.status
        if verdict.status == "fail":
            if verdict.action == "rollback" and not self.options.dry_run:
                return await self._rollback(reason)
            word = "dry run: would roll back" if self.options.dry_run else "on_fail: none"
            return self._finish("fail", "none", ExitCode.FAIL, f"{reason} ({word})")
        if verdict.status == "inconclusive":
            return await self._inconclusive(verdict, reason)
        if (verdict.action == "promote" or self.options.promote) and not self.options.dry_run:
            return await self._promote(verdict.status)
        return self._finish(verdict.status, "none", ExitCode.PASS, reason)

    async def _inconclusive(self, verdict: Verdict, reason: str) -> CheckReport:
        if verdict.action == "rollback" and not self.options.dry_run:
            await self._rollback(reason)
            self.report.verdict = "inconclusive"
            if self.report.exit_code == ExitCode.FAIL:
                self.report.exit_code = int(ExitCode.INCONCLUSIVE)
            return self.report
        if (
            verdict.action in ("promote", "none")
            and self.run_state.policies
            and all(p.on_inconclusive == "pass" for p in self.run_state.policies)
        ):
            return self._finish(
                "inconclusive", "none", ExitCode.PASS, f"{reason} (treated as pass)"
            )
        return self._finish("inconclusive", "held", ExitCode.INCONCLUSIVE, f"{reason}; held")

    async def _rollback(self, reason: str) -> CheckReport:
        before = self.run_state.before
        assert before is not None
        candidate = self.candidate
        try:
            spec = rollback_plan(before, candidate, drop_tags=[self.run_state.temp_tag])
        except ActionError:  # the candidate held all the traffic: no split to restore
            try:
                target, why = await pick_rollback_target(self.router, before, exclude=candidate)
            except ConfigError as exc:
                self._event("rollback_failed", error=str(exc))
                return self._finish(
                    self.report.verdict,
                    "failed",
                    ExitCode.ACTION_FAILED,
                    f"{reason}; cannot roll back: {candidate} serves all of "
                    f"{before.short}'s traffic and no other revision qualifies ({exc}). Deploy "
                    f"a fixed revision, then `deploy-guard rollback --service {before.short} "
                    "--to-revision REV`",
                )
            spec = pin_plan(before, target.short, drop_tags=[self.run_state.temp_tag])
            # the candidate held 100 %: say where traffic goes, and why that revision
            chosen = f"rollback target {target.short}: {why}"
            self._event("rollback_target_chosen", revision=target.short, why=why)
            self.report.notes.append(chosen)
            reason = f"{reason}; {chosen}"
        record = {**self._rejection(), **(self._tag_record_dropped() if spec else {})}
        if spec is None:
            self._event("rollback_not_needed", reason="the candidate held no traffic")
            if record:
                await self._record_rejection(record)
            return self._finish(
                "fail",
                "none",
                ExitCode.FAIL,
                f"{reason}; the candidate held no traffic: nothing to move",
            )
        report = await self._write(
            spec, reason, kind="rollback", done_action="rolled_back", annotations=record
        )
        if REJECTED in record and report.action == "rolled_back":
            self._event("rejection_recorded", revision=self.candidate)
        return report

    def _tag_record_dropped(self) -> dict[str, str]:
        """The holder annotation without the temporary tag a traffic write drops with it."""
        expected, tag = self.run_state.expected, self.run_state.temp_tag
        if not tag or expected is None:
            return {}
        return {TAGS_ANNOTATION: without_holders(expected.annotations, [tag])}

    def _rejection(self) -> dict[str, str]:
        """The annotation that keeps a failed candidate out of later rollbacks."""
        expected = self.run_state.expected
        if self.report.verdict != "fail" or expected is None:
            return {}  # an inconclusive candidate is not known to be bad
        return {REJECTED: with_rejected(expected.annotations, self.candidate)}

    async def _record_rejection(self, record: dict[str, str]) -> None:
        """Record it on its own when no traffic moves (best effort: the verdict stands)."""
        expected = self.run_state.expected
        assert expected is not None
        try:
            self.run_state.expected = await self.router.set_annotations(expected, record)
            self._event("rejection_recorded", revision=self.candidate)
        except GuardError as exc:
            log.warning("rejection_not_recorded", revision=self.candidate, error=str(exc))
            self._event("rejection_not_recorded", revision=self.candidate, error=str(exc))

    async def _promote(self, status: str) -> CheckReport:
        expected = self.run_state.expected
        assert expected is not None
        candidate = self.candidate
        spec = pin_plan(expected, candidate, drop_tags=[self.run_state.temp_tag])
        self.report.verdict = status
        # Recorded in the same write as the traffic: where a later rollback goes.
        served_before = {r: p for r, p in self.report.traffic_before.items() if r != candidate}
        previous = expected.annotations.get(LAST_KNOWN_GOOD, "")
        if not served_before and previous and previous != candidate:
            served_before = {previous: 100}  # it already had all the traffic: the one before
        record = {LAST_KNOWN_GOOD: candidate, **self._tag_record_dropped()}
        if candidate in rejected(expected.annotations):  # it passed now: no longer refused
            record[REJECTED] = with_rejected(expected.annotations, clear=candidate)
        if served_before:  # else keep what an earlier promotion recorded
            record[SERVED_BEFORE] = encode_split(served_before)
        report = await self._write(
            spec,
            "the candidate passed",
            kind="promote",
            done_action="promoted",
            annotations=record,
        )
        if report.action == "promoted":
            self._event("last_known_good_recorded", revision=candidate)
        return report

    async def _write(
        self,
        spec: Sequence[Allocation],
        reason: str,
        *,
        kind: str,
        done_action: str,
        annotations: dict[str, str] | None = None,
    ) -> CheckReport:
        expected = self.run_state.expected
        assert expected is not None
        fail_code = ExitCode.FAIL if kind == "rollback" else ExitCode.PASS
        self._event(f"{kind}_requested", traffic=_split_text(spec))
        try:
            state = await self.router.set_traffic(expected, spec, why=kind, annotations=annotations)
        except SupersededError as exc:
            self._event(f"{kind}_refused", reason=str(exc))
            await self._read_back()
            return self._finish(self.report.verdict, "superseded", ExitCode.ACTION_FAILED, str(exc))
        except UnverifiedError as exc:
            # Sent (and maybe applied), but not read back: the last state seen, and what to
            # check; not "do it by hand" with a split that may already be there.
            if isinstance(exc.last_state, ServiceState):
                self.report.traffic_after = served_split(exc.last_state)
            self._event(f"{kind}_unverified", error=str(exc))
            msg = f"{kind} sent, not verified: {exc}"
            return self._finish(self.report.verdict, "unverified", ExitCode.ACTION_FAILED, msg)
        except GuardError as exc:
            self.run_state.write_failed = True
            await self._read_back()
            hand = _by_hand(self.run_state.service, self.options, spec)
            self._event(f"{kind}_failed", error=str(exc))
            msg = f"{kind} failed: {exc}. Do it by hand: {hand}"
            return self._finish(self.report.verdict, "failed", ExitCode.ACTION_FAILED, msg)
        self.run_state.expected = state
        if not any(a.tag == self.run_state.temp_tag for a in state.traffic):
            self.run_state.temp_tag = ""  # the write dropped it already
        self.report.traffic_after = served_split(state)
        self._event(f"{kind}_verified", traffic=describe(self.report.traffic_after))
        return self._finish(
            self.report.verdict,
            done_action,
            fail_code,
            f"{reason}; traffic now {describe(self.report.traffic_after)}",
        )

    async def _read_back(self) -> None:
        """After a refused or failed write: what the service really serves, for the report."""
        try:
            state = await self.router.get_service(self.run_state.service)
        except GuardError as exc:
            self._event("read_back_failed", error=str(exc))
            return
        self.report.traffic_after = served_split(state)

    async def _cleanup(self) -> None:
        """Remove the temporary tag (shielded: it must run even when cancelled)."""
        tag = self.run_state.temp_tag
        if not tag:
            return
        task = asyncio.ensure_future(self._remove_tag(tag))
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

    async def _remove_tag(self, tag: str) -> None:
        service = self.run_state.service
        try:
            state = await self.router.get_service(service)
            start = None
            if self.run_state.write_failed and failed_reconcile(state):
                # The guard's own write failed inside Cloud Run: its spec is not what is
                # served and may name a deleted revision. Never re-send it: start from
                # what is served (the failed spec goes with the tag).
                start = served_spec(state)
                self._event("tag_removal_from_served", tag=tag, traffic=_split_text(start))
            spec = without_tag(state, tag, start=start)
            if spec is None:
                self._event("tag_not_found", tag=tag, note="nothing to remove")
                if not any(e.event == "tag_added" for e in self.report.timeline.events):
                    # adding it failed: the report names no tag that never existed
                    self.report.temporary_tag = ""
            else:
                # Removing our own tag is the one write allowed on a changed service:
                # it touches only the entry we added, in the spec as just read.
                try:
                    state = await self.router.set_traffic(
                        state,
                        spec,
                        why="remove the temporary tag",
                        annotations={TAGS_ANNOTATION: without_holders(state.annotations, [tag])},
                    )
                except SupersededError:
                    # someone deployed right after the removal: done if the tag is gone
                    state = await self.router.get_service(service)
                    if without_tag(state, tag) is not None:
                        raise
                self._event("tag_removed", tag=tag)
            self.run_state.temp_tag = ""
            self.report.traffic_after = served_split(state)
        except GuardError as exc:
            by_hand = (
                f"gcloud run services update-traffic {service} --remove-tags {tag} "
                f"--region {self.options.region} --project {self.options.project}"
            )
            note = f"the temporary tag {tag} is still on {service} ({exc}); remove it: {by_hand}"
            self.report.error = f"{self.report.error}; {note}" if self.report.error else note
            self.report.message = f"{self.report.message}; {note}" if self.report.message else note
            log.warning("tag_left_behind", tag=tag, by_hand=by_hand)
            self._event("tag_removal_failed", tag=tag, error=str(exc))


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


def tag_holder() -> str:
    """Who holds a temporary tag: the Cloud Build build when there is one, and host/pid."""
    import os
    import socket

    here = f"{socket.gethostname()}/{os.getpid()}"
    build = os.environ.get("BUILD_ID", "")
    return f"build {build} ({here})" if build else here


def warm_imports() -> None:
    """Import the probe stack while the Cloud Run calls wait on the network.

    The probes start the moment the candidate is reachable, so what they import
    (httpx and httpcore, websockets: ~0.2-0.4 s on a busy machine) is on the
    critical path; run in a thread, it overlaps with the I/O of resolving the
    service and revision. The Logging and Monitoring clients are *not* warmed
    here: the evidence pollers import them after :data:`POLL_GRACE`, while the
    probes hold their sessions and the CPU is idle, instead of competing (under
    the GIL) with the Cloud Run client's import on the way to the first probe.
    """
    import deploy_guard.probes.runner  # noqa: F401
    from deploy_guard.probes import http, websocket  # noqa: F401

    with contextlib.suppress(ImportError):
        import httpcore  # noqa: F401  (httpx imports it only when a client is built)


def _with_reason(verdict: Verdict, reason: str) -> Verdict:
    from dataclasses import replace

    return replace(verdict, reasons=(*verdict.reasons, reason))


def _split_text(spec: Sequence[Allocation]) -> str:
    return ", ".join(f"{a.revision or 'LATEST'} {a.percent}%" for a in spec if a.percent)


def _by_hand(service: str, options: CheckOptions, spec: Sequence[Allocation]) -> str:
    pairs = ",".join(f"{a.revision}={a.percent}" for a in spec if a.percent and a.revision)
    return (
        f"gcloud run services update-traffic {service} --region {options.region} "
        f"--project {options.project} --to-revisions {pairs}"
    )
