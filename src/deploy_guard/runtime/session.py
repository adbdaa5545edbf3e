"""The check's session with the service: resolve the candidate, reach it, clean up.

Everything a check must know before any evidence, checked in an order that
writes nothing until it must: the policies that apply (a typo in the service
name says so), the token and ``${NAME}`` headers the probes will need (exit 2
before any API call), the candidate's Ready state, the request timeout
WebSocket rules need, and the split it will be judged against (read once
Cloud Run finished routing). :meth:`Session.resolve` ends in a
:class:`~deploy_guard.strategies.check.Preflight` for the strategy.

Reaching the candidate may add a temporary 0 % tag (through the executor);
the driver removes it whatever ends the check.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from deploy_guard.errors import ActionError, ConfigError, GuardError, NotFoundError
from deploy_guard.gcp.tags import stale_note, temporary_tags
from deploy_guard.gcp.traffic import (
    MAX_TAG_AND_SERVICE,
    TEMP_TAG_ALPHABET,
    TEMP_TAG_PREFIX,
    RevisionState,
    ServiceState,
    describe,
    failed_reconcile,
    find_tag_uri,
    rejected,
    served_split,
    settled,
    temp_tag,
)
from deploy_guard.strategies.check import Preflight

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.actions.executor import Executor
    from deploy_guard.gcp.cloudrun import CloudRun
    from deploy_guard.policy.model import Policy
    from deploy_guard.probes.auth import BearerToken, TokenChoice
    from deploy_guard.probes.target import Target
    from deploy_guard.report.recorder import Recorder
    from deploy_guard.runtime.options import CheckOptions

#: Seconds a temporary tag stays "in use" after the check's bound: the action, its
#: verification, the report-only pass and the clean-up (each bounded) fit in it.
TAG_MARGIN = 300.0


def check_request_timeout(
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


def check_token_source(choice: TokenChoice | None, auth: Any) -> None:
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


class Session:
    """One check's dealings with the service before and around the evidence."""

    def __init__(
        self,
        router: CloudRun,
        options: CheckOptions,
        recorder: Recorder,
        executor: Executor,
        *,
        service: str,
        candidate: str,
    ) -> None:
        self.router, self.options, self.recorder = router, options, recorder
        self.executor = executor
        self.service, self.candidate = service, candidate
        self.policies: list[Policy] = []
        #: The service as it was before the check wrote anything (what a rollback restores).
        self.before: ServiceState | None = None
        #: Seconds the temporary tag is held beyond the check's bound (a rollout's steps).
        self.extra_hold = 0.0

    async def applicable(self, policies: Sequence[Policy]) -> list[Policy]:
        """The policies that apply to the service; none is exit 2 (or "no such service")."""
        service = self.service
        found = [p for p in policies if p.applies_to(service)]
        if not found:
            await self._service_exists()  # a typo in the name: say that, not "no policy"
            names = ", ".join(p.name for p in policies) or "(none)"
            raise ConfigError(
                f"no policy applies to service {service!r} (policies: {names}); add the "
                "service's name, or a pattern such as 'chat*', to a policy's services:"
            )
        self.policies = found
        return found

    def check_inputs(self) -> None:
        """A bad token source or ``${NAME}`` header: exit 2, nothing touched."""
        from deploy_guard.probes.target import check_env_headers

        check_token_source(self.options.token, self.policies[0].auth)
        check_env_headers(r for p in self.policies for r in p.rules)

    async def resolve(self) -> tuple[Preflight, RevisionState, ServiceState]:
        """Wait for the candidate, read the split it is judged against, say what to know."""
        opts, service = self.options, self.service
        try:
            revision = await self.router.wait_ready(service, opts.revision, opts.ready_timeout)
        except NotFoundError:
            await self._service_exists()
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
            check_request_timeout(self.policies, revision, service)
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
        if revision.ready is None:
            why = (
                f"revision {revision.short} was still starting {opts.ready_timeout:g} s "
                "after the check began (--ready-timeout): nothing was probed or changed; check "
                "it again once it is Ready, or raise --ready-timeout"
            )
            return Preflight(ready=None, why=why), revision, before
        if revision.ready is False:
            why = f"revision {revision.short} failed to start: {revision.message}"
            return Preflight(ready=False, why=why), revision, before
        if not settled(before):
            return (
                Preflight(ready=True, settled=False, why=self._unsettled(before)),
                revision,
                before,
            )
        return Preflight(ready=True), revision, before

    async def _service_exists(self) -> None:
        """Raise "service S does not exist ..." when it does not (any other answer: return)."""
        from deploy_guard.gcp.cloudrun import service_missing

        try:
            await self.router.get_service(self.service)
        except NotFoundError:
            raise service_missing(
                self.service,
                self.options.project,
                self.options.region,
                named_by_revision=bool(self.candidate),  # a watch has no revision
            ) from None
        except GuardError:
            return

    def _record(self, before: ServiceState) -> None:
        report = self.recorder.report
        self.before = self.executor.expected = before
        split = served_split(before)
        report.traffic_before = split
        report.traffic_after = dict(split)
        report.baseline = sorted(r for r in split if r != self.candidate)
        self.recorder.event(
            "traffic_recorded",
            traffic=describe(split),
            generation=before.generation,
            latest_created=before.latest_created_revision,
        )

    def _notice(self, before: ServiceState) -> None:
        """Say up front what a person should know: a rejected candidate, leftover tags."""
        service, notes, event = before.short, self.recorder.report.notes, self.recorder.event
        if self.candidate in rejected(before.annotations):
            # --cloud-deploy writes no annotation, so its pass leaves the list as it is
            off = (
                "a pass leaves it there (Cloud Deploy owns the service: this mode writes "
                f"nothing; deploy-guard status --service {service} --clear-rejected "
                f"{self.candidate} takes it off)"
                if getattr(self.options, "cloud_deploy", None) is not None
                else "a pass with --promote takes it off"
            )
            note = (
                f"{self.candidate} is on {service}'s rejected list (a check failed it, or a "
                f"rollback moved away from it); it is checked again, and {off}"
            )
            event("candidate_was_rejected", revision=self.candidate)
            notes.append(note)
        tags = temporary_tags(before, datetime.now(UTC))
        stale = [t for t in tags if not t.in_use]
        if stale:
            event("stale_tags_found", tags=[t.tag for t in stale])
            notes.append(stale_note(service, stale))
        self._rollout_notice(before)
        in_use = [t for t in tags if t.in_use]
        if in_use:
            event("tags_in_use", tags=[t.tag for t in in_use])
            notes.append(
                "another check may be running on "
                + service
                + ": "
                + "; ".join(t.describe() for t in in_use)
            )

    def _rollout_notice(self, before: ServiceState) -> None:
        """A check on a service that a rollout is walking (or left part-way): say so."""
        from deploy_guard.gcp.rollouts import current

        report = self.recorder.report
        if report.command != "check":  # a rollout refuses or resumes it itself
            return
        try:
            record = current(before.annotations)
        except ValueError as exc:
            report.notes.append(str(exc))
            return
        if record is None:
            return
        state = "is running" if record.live(datetime.now(UTC)) else "stopped part-way"
        self.recorder.event("rollout_found", revision=record.revision, step=record.step)
        report.notes.append(
            f"a rollout {state} on {before.short}: {record.describe()}; a traffic write of "
            "this check is refused if the rollout moves traffic meanwhile (`deploy-guard "
            f"status --service {before.short}` shows it)"
        )

    def _unsettled(self, state: ServiceState) -> str:
        """Why a service still reconciling (or that failed to) is not judged."""
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
        return why

    async def reach(self, before: ServiceState, revision: RevisionState, policy: Policy) -> Target:
        """The candidate's tag URL; a temporary 0 % tag when it has none."""
        from deploy_guard.probes.target import Target

        found = find_tag_uri(before, revision.short)
        if found is not None and found[0].startswith(TEMP_TAG_PREFIX):
            found = None  # another check's tag (or a stale one) may go at any moment
        if found is None:
            tag = self._new_temp_tag(before, revision)
            until = datetime.now(UTC) + timedelta(seconds=self._tag_hold())
            url = await self.executor.add_temp_tag(
                revision.short, tag, until=until, holder=tag_holder()
            )
        else:
            url = found[1]
        self.recorder.report.target_url = url
        expected = self.executor.expected
        service_uri = expected.uri if expected else before.uri
        # The first applicable policy says how probes authenticate.
        return Target(
            base_url=url,
            token=await probe_token(
                self.options.token, policy.auth, url=url, service_uri=service_uri or before.uri
            ),
        )

    def _new_temp_tag(self, before: ServiceState, revision: RevisionState) -> str:
        """``dg-`` + random characters, as many as the service name leaves room for.

        Cloud Run refuses a tag and service name longer than 46 characters
        together; with a name of 43 characters or more no ``dg-`` tag fits, and
        the candidate can only be reached through a tag URL of its own (exit 2).
        """
        service = self.service
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
            bound = min((p.timeout for p in self.policies), default=0.0)
        return bound + self.extra_hold + self.options.log_settle + TAG_MARGIN
