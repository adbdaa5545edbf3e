"""The watch's side of the service: what it judges, read from the service again and again.

:class:`ServiceSide` is the part of the watch loop
(:class:`deploy_guard.runtime.watch._Watch`) that reads the service and
points the evidence at what serves: a new revision that took traffic is
followed (its own window), a rollout's live record makes the watch stand
aside, a baseline that stopped serving is dropped, a revision whose request
timeout would cut the canary's sessions is judged without them. What a read
means is decided by the pure functions of
:mod:`deploy_guard.runtime.watch_service`; this module makes it so.

Reading is also where the watch can go blind: the Run API does not answer, or
a deploy cannot be followed (the probes' token). Blind is *degraded* (said
once per episode, ``watch_degraded`` / ``watch_recovered``), never a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from deploy_guard.errors import GuardError
from deploy_guard.gcp.traffic import describe, served_split
from deploy_guard.log import get_logger, redact_text
from deploy_guard.runtime.watch_evidence import Watched, WatchEvidence, window_since
from deploy_guard.runtime.watch_service import (
    baseline_of,
    outlasting_note,
    primary_revision,
    rollout_running,
    sessions_outlasting,
)
from deploy_guard.strategies.watch import Event, StandingAside, Watching

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.actions.executor import Executor
    from deploy_guard.gcp.traffic import RevisionState, ServiceState
    from deploy_guard.policy.model import Policy
    from deploy_guard.policy.watch import WatchPlan
    from deploy_guard.probes.target import Target
    from deploy_guard.report.model import CheckReport
    from deploy_guard.runtime.watch import WatchGate

log = get_logger("deploy_guard.watch")

#: Seconds after which the probes' ID token is minted again (Google's last an hour).
TOKEN_REFRESH = 45 * 60.0


class ServiceSide:
    """Reads of the service and what follows from them; mixed into the watch's loop."""

    gate: WatchGate
    evidence: WatchEvidence
    executor: Executor
    report: CheckReport
    plan: WatchPlan
    policies: list[Policy]
    service: str
    #: What is judged now (None: nothing, or a deploy that could not be followed yet).
    revision: str | None
    #: Why the watch stands aside now (a rollout runs), else None.
    aside: str | None
    status: str
    #: Why the watch is degraded now (None: it is not).
    degraded: str | None
    #: Why the watch cannot judge what serves now (the Run API, a follow that failed).
    blind: str | None
    token_at: float
    next_poll: float

    def _degraded(self, status: str, reasons: Sequence[str], errors: Sequence[str] = ()) -> None:
        """An outage (a source's error, the Run API) or no evidence: said once per episode."""
        why = self.blind or ("; ".join(errors) if errors else None)
        if why is None and status == "inconclusive":
            why = "; ".join(reasons) or "no evidence"
        if why == self.degraded:
            return
        if why is not None and self.degraded is None:
            log.warning("watch_degraded", service=self.service, revision=self.revision, why=why)
            self.gate._event("watch_degraded", why=redact_text(why))
            self.gate._notify("watch_degraded", why=redact_text(why)[:300])
            episodes = self.report.watch.setdefault("degraded", [])
            if len(episodes) < 20:
                episodes.append({"at": now_text(), "why": redact_text(why)[:300]})
        elif why is None:
            log.info("watch_recovered", service=self.service, revision=self.revision)
            self.gate._event("watch_recovered")
        self.degraded = why
        self.report.watch["degraded_now"] = why is not None  # the live view says so

    async def _poll(self) -> Event | None:
        """Read the service: a new revision serving, a rollout starting or ending.

        Every read is also what the next write goes against (``executor.expected``).
        """
        self.next_poll = asyncio.get_running_loop().time() + self.gate.options.service_interval
        try:
            state = await self.gate.router.get_service(self.service)
        except GuardError as exc:
            self.blind = f"Cloud Run Admin API: {exc}"
            self._degraded("inconclusive", [self.blind])
            return None
        self.blind = None
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
        if self.aside is None and primary == self.revision:
            if primary is not None:
                self._rebaseline(state, primary)
            return None
        why = "a rollout ended" if self.aside else "a new revision took traffic"
        self.aside = None
        before = self.revision
        followed = await self._retarget(state, primary, why=why)
        if not followed or primary is None:  # nothing judged until a revision can be
            blind = self.blind if not followed else f"{self.service} serves no revision"
            return StandingAside(blind or "nothing to judge") if before is not None else None
        self.gate._event("deploy_followed", revision=primary, was=before, why=why)
        return Watching(primary, why)

    async def _recheck(self) -> Event | None:
        """Just before a rollback: the service as it is now.

        The failing window may have been measured on a revision the watch has
        not read yet (the canary and the probes go to the service's URL): a
        deploy or a rollout since the last read is news, and the write is not
        made; else the write goes against this read (a change after it is
        refused by the executor, never overwritten).
        """
        return await self._poll()

    def _rebaseline(self, state: ServiceState, primary: str) -> None:
        """The same revision, compared with what serves beside it now (a baseline that no
        longer serves logs nothing: any line of the watched one would break a ratio)."""
        baseline = baseline_of(state, primary)
        if self.evidence.watched is None or self.evidence.watched.baseline == baseline:
            return
        self.evidence.rebaseline(baseline)
        self.report.baseline = list(baseline)
        self.gate._event("baseline_changed", revision=primary, baseline=list(baseline))

    async def _follow(self, state: ServiceState, history: list[Event], *, why: str) -> None:
        """Start watching what serves ``state`` (or stand aside for a rollout)."""
        aside = rollout_running(state, datetime.now(UTC))
        primary = primary_revision(state)
        if primary is None:
            self.report.notes.append(f"{self.service} serves no revision yet: waiting for one")
        await self._retarget(state, primary, at_start=True)
        if primary is not None:
            history.append(Watching(primary, why))
        if aside is not None:
            self.aside = aside
            self.gate._event("watch_standing_aside", why=aside)
            history.append(StandingAside(aside))

    async def _retarget(
        self, state: ServiceState, primary: str | None, *, why: str = "", at_start: bool = False
    ) -> bool:
        """Judge ``primary`` from now on (None: nothing). At the start a failure is the
        watch's end (exit 2 for a configuration); later it is an outage: the watch is
        blind (degraded, judging nothing) and the next read of the service tries again."""
        if primary is None:
            self.revision, self.status = None, "pending"
            return True
        try:
            watched = await self._watched(state, primary, at_start=at_start)
        except GuardError as exc:
            if at_start:
                raise
            self.revision, self.status = None, "pending"
            self.blind = f"cannot follow {primary} ({why}): {exc}"
            self._degraded("inconclusive", [self.blind])
            return False
        changed = primary != self.revision
        self.revision, self.status = primary, "pending"
        if changed:
            self.report.rules = []  # what was judged of another revision says nothing here
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
        return True

    async def _watched(self, state: ServiceState, primary: str, *, at_start: bool) -> Watched:
        created = 0.0
        unfit: tuple[str, ...] = ()
        try:
            revision = await self.gate.router.get_revision(self.service, primary)
        except GuardError:
            revision = None
        if revision is not None:
            created = revision.create_time
            unfit = self._outlasting(revision, at_start=at_start)
        since = window_since(created, self.plan.window)
        return Watched(
            project=self.gate.options.project,
            service=self.service,
            revision=primary,
            baseline=baseline_of(state, primary),
            target=await self._target(state),
            since=since,
            created=window_since(created, 24 * 3600.0),
            unfit=unfit,
        )

    def _outlasting(self, revision: RevisionState, *, at_start: bool) -> tuple[str, ...]:
        """The rules whose sessions ``revision``'s request timeout would cut.

        Cloud Run cuts any request at the revision's timeout, WebSocket sessions
        included (1006): judged, they would fail a healthy revision. When the
        watch starts that is exit 2 (the check's refusal); a revision deployed
        later is watched without them, and the report and log say what to fix.
        """
        from deploy_guard.runtime.session import check_request_timeout

        if at_start:
            check_request_timeout(self.evidence.policies, revision, self.service)
        unfit = sessions_outlasting(self.evidence.policies, revision.request_timeout)
        if unfit:
            note = outlasting_note(self.service, revision, unfit)
            if note not in self.report.notes:
                self.report.notes.append(note)
            log.warning("watch_session_outlasts_timeout", revision=revision.short, rules=unfit)
        return unfit

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


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
