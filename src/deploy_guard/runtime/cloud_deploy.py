"""``check --cloud-deploy``: judge a Cloud Deploy canary phase; the exit code is the verdict.

Cloud Deploy runs the guard as a phase's verify container. It owns releases,
approvals and traffic: it moved the phase's share to the candidate before the
job started, and its repair rule rolls the rollout back when the job exits
non-zero. So :class:`VerifyGate` is the check's driver with every write taken
out: no rollback, no promotion, no temporary tag, no annotation. It resolves
the candidate and the split Cloud Deploy set, judges the phase with the same
:class:`~deploy_guard.analysis.engine.Engine` a check uses, and finishes with
:class:`~deploy_guard.strategies.verify.VerifyStrategy`'s outcome.

Where the probes go:

- the candidate's tag URL when it has one (Cloud Deploy adds the pipeline's
  ``canaryRevisionTags`` to the canary revision while the phase runs): every
  session is the candidate's;
- else, if the candidate serves part of the traffic, the service URL (the
  service's own ``run.app`` URL, else ``CLOUD_RUN_SERVICE_URLS``' first): only about the
  phase's share of the sessions reach the candidate. A failure seen there is one
  users saw during the phase, so it fails the phase; a pass says less, and the
  report says so (the candidate's logs and metrics are its own either way);
- else (no tag and no traffic) nothing reaches the candidate: exit 2.

Evidence is scoped to the phase: the candidate's logs and metrics from the
check's start (or the revision's creation, if later: the same revision serves
every phase of a rollout, and an earlier phase's lines are not this phase's),
the baseline being what else serves (the revision Cloud Deploy keeps as stable).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deploy_guard.analysis.engine import Analysis, Engine, judges_for
from deploy_guard.analysis.sources import Scope
from deploy_guard.errors import ConfigError
from deploy_guard.gcp.traffic import TEMP_TAG_PREFIX, find_tag_uri, served_split
from deploy_guard.report.model import CheckReport
from deploy_guard.runtime.cloud_deploy_env import CloudDeployPhase, with_serving
from deploy_guard.runtime.driver import Gate
from deploy_guard.runtime.options import CheckOptions
from deploy_guard.runtime.session import probe_token
from deploy_guard.strategies.check import Analyse, Event, Finish
from deploy_guard.strategies.verify import VerifyStrategy

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.actions.executor import Executor
    from deploy_guard.gcp.traffic import RevisionState, ServiceState
    from deploy_guard.judge.combine import Judges
    from deploy_guard.policy.model import Policy
    from deploy_guard.probes.target import Target


@dataclass(frozen=True)
class VerifyOptions(CheckOptions):
    """A check's options plus the phase Cloud Deploy described (always set in this mode)."""

    cloud_deploy: CloudDeployPhase | None = None


def attribution_note(phase: CloudDeployPhase, url: str) -> str:
    """What a person must know when the probes share the service URL with real users."""
    share = phase.serving
    return (
        f"the candidate has no tag URL, so the probes went through the service URL {url}, "
        f"where it serves {share} %: about {share} % of the probe sessions reached it and the "
        "rest the stable revision. A failure there is one users saw during the phase; a pass "
        "says less about the candidate than its logs and metrics, which are its own. Give the "
        "candidate a tag (canaryRevisionTags in the pipeline's canary runtimeConfig) to probe it "
        "alone"
    )


class VerifyGate(Gate):
    """Judges one Cloud Deploy phase and writes nothing; see the module docstring."""

    options: VerifyOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        phase = self.options.cloud_deploy
        assert phase is not None, "VerifyOptions.cloud_deploy is set by --cloud-deploy"
        self.phase = phase
        self.report.cloud_deploy = phase.as_dict()
        #: The phase's start, as far as the evidence goes: when this check began.
        self.started = datetime.now(UTC)

    def _set_phase(self, phase: CloudDeployPhase) -> None:
        self.phase = phase
        self.report.cloud_deploy = phase.as_dict()

    async def _check(self, service: str, executor: Executor) -> CheckReport:
        said = {k: v for k, v in self.phase.as_dict().items() if v not in ("", None)}
        self._event("cloud_deploy_phase", **said)
        session, policies = await self._session(service, executor)
        judges = judges_for(policies)
        session.check_inputs()
        preflight, revision, before = await session.resolve()
        strategy = VerifyStrategy(
            phase=self.phase.phase,
            inconclusive_passes=all(p.on_inconclusive == "pass" for p in policies),
        )
        phase, note = with_serving(self.phase, served_split(before).get(self.candidate, 0))
        self._set_phase(phase)
        if note is not None:
            self.report.notes.append(note)
        history: list[Event] = [preflight]
        move = strategy.next(history)
        if isinstance(move, Analyse):
            self._event("revision_ready", revision=revision.short)
            target = await self._reach(before, revision, policies[0])
            engine = Engine(self.sources, self.recorder)
            result = await engine.run(self._analysis(judges, target, revision))
            if result.cut_short:
                self._cut_short_note(result.judges)
            history.append(self._judged(result))
            move = strategy.next(history)
        assert isinstance(move, Finish)
        if move.decision is not None:
            self._decision(move.decision)
        verdict = move.verdict or self.report.verdict
        return self._finish(verdict, move.action, move.exit_code, move.message)

    async def _reach(self, before: ServiceState, revision: RevisionState, policy: Policy) -> Target:
        """The candidate's tag URL, else the service URL at the phase's split; never a write."""
        from deploy_guard.probes.target import Target

        found = find_tag_uri(before, revision.short)
        if found is not None and found[0].startswith(TEMP_TAG_PREFIX):
            found = None  # a check's temporary tag: it may go at any moment
        share = self.phase.serving or 0
        if found is not None:
            url, how = found[1], "tag"
            self._event("probing_tag_url", tag=found[0], url=url)
        elif share > 0:
            # the service's own URL: its ID token's audience, no load balancer in between
            url, how = before.uri or next(iter(self.phase.service_urls), ""), "service_url"
            if not url:
                raise ConfigError(f"service {before.short} has no URL to probe")
            self._event("probing_service_url", url=url, candidate_share=share)
            if share < 100:
                self.report.notes.append(attribution_note(self.phase, url))
        else:
            raise ConfigError(
                f"revision {revision.short} has no tag URL and serves no traffic in phase "
                f"{self.phase.phase}: nothing can reach it, and --cloud-deploy never adds a "
                "tag (Cloud Deploy owns the service). Set canaryRevisionTags (e.g. [canary]) in "
                "the pipeline stage's strategy.canary.runtimeConfig.cloudRun so that the "
                "candidate has a tag URL"
            )
        self._set_phase(replace(self.phase, probes=how))
        self.report.target_url = url
        token = await probe_token(self.options.token, policy.auth, url=url, service_uri=before.uri)
        return Target(base_url=url, token=token)

    def _analysis(self, judges: Judges, target: Target, revision: RevisionState) -> Analysis:
        """The check's analysis, its evidence from the phase's start on."""
        analysis = super()._analysis(judges, target, revision)
        created = (
            datetime.fromtimestamp(revision.create_time, UTC)
            if revision.create_time
            else self.started
        )
        scope: Scope = replace(analysis.scope, since=max(self.started, created))
        return replace(analysis, scope=scope)

    def _cut_short_note(self, judges: Judges) -> None:
        """Fail-fast decided before every rule had its evidence: say which stood where."""
        waiting = [r.rule for r in judges.waiting_for_sources()]
        if not waiting:
            return
        self.report.notes.append(
            "fail-fast decided before " + ", ".join(waiting) + " had all their evidence: they "
            "are shown as they stood (the guard exits at once, so that Cloud Deploy's repair "
            "starts without waiting for a report-only pass)"
        )
