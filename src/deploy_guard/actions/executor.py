"""The one place a check writes traffic: write, re-read, verify, refuse to clobber.

:class:`Executor` holds what the guard last saw of the service (``expected``):
every write is made against it, so :class:`~deploy_guard.gcp.cloudrun.CloudRun`
refuses when someone else changed the service meanwhile (exit 4, nothing
overwritten), and a write is done only when a re-read shows it. What the guard
records about a write (the last known good revision, the rejected list, who
holds a temporary tag) rides in the same write, so it is there exactly when the
traffic change is.

An action's outcome comes back as an :class:`ActionResult` (verdict, action,
exit code, message) for the strategy and the driver; the traffic actually
served, read back, goes into the report as soon as it is known, so a report
written after a signal still says where traffic is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from deploy_guard.actions.result import ActionResult
from deploy_guard.actions.target import pick_rollback_target
from deploy_guard.errors import (
    ActionError,
    ConfigError,
    GuardError,
    SupersededError,
    UnverifiedError,
)
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.tags import TAGS_ANNOTATION, rfc3339, with_holder, without_holders
from deploy_guard.gcp.traffic import (
    LAST_KNOWN_GOOD,
    REJECTED,
    SERVED_BEFORE,
    Allocation,
    ServiceState,
    describe,
    encode_split,
    failed_reconcile,
    find_tag_uri,
    pin_plan,
    plan,
    rejected,
    renormalise,
    rollback_plan,
    served_spec,
    served_split,
    tags_without,
    with_rejected,
    with_tag,
    without_tag,
)
from deploy_guard.report.recorder import Recorder, log

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.cloudrun import CloudRun


class Executor:
    """Traffic writes of one check on one service, each verified by a re-read."""

    def __init__(
        self, router: CloudRun, recorder: Recorder, *, service: str, project: str, region: str
    ) -> None:
        self.router = router
        self.recorder = recorder
        self.service, self.project, self.region = service, project, region
        #: The service as the guard last wrote or read it: every write is made against it.
        self.expected: ServiceState | None = None
        #: The temporary tag the guard added and has not removed yet ("" when none).
        self.temp_tag = ""
        #: A traffic write of the guard's failed inside Cloud Run or could not be made.
        self.write_failed = False

    # .. the temporary tag ..
    async def add_temp_tag(self, revision: str, tag: str, *, until: datetime, holder: str) -> str:
        """Add ``tag`` (0 %) to ``revision`` and return its URL.

        Who holds the tag and until when ride in the same write: a tag left behind
        (a second Ctrl-C, a killed step) is known to be stale later.
        """
        expected = self.expected
        assert expected is not None
        self.temp_tag = self.recorder.report.temporary_tag = tag
        self.recorder.event("tag_requested", tag=tag, until=rfc3339(until))
        write = asyncio.ensure_future(
            self.router.set_traffic(
                expected,
                with_tag(expected, revision, tag),
                why="temporary tag to reach the candidate",
                annotations={TAGS_ANNOTATION: with_holder(expected, tag, until=until, by=holder)},
            )
        )
        try:
            state = await asyncio.shield(write)
        except asyncio.CancelledError:
            # The write runs on in its worker thread: let it land, so the clean-up
            # removes the tag it adds instead of racing it (and missing it), and so the
            # guard's next write is made against it (not refused as someone else's).
            with contextlib.suppress(Exception):
                self.expected = await write
            raise
        self.expected = state
        found = find_tag_uri(state, revision)
        if found is None:
            raise ActionError(f"Cloud Run shows no URL for the temporary tag {tag}")
        self.recorder.event("tag_added", tag=tag, url=found[1])
        return found[1]

    async def remove_temp_tag(self) -> None:
        """Take the temporary tag off; on failure the report says how to do it by hand."""
        tag, service, report = self.temp_tag, self.service, self.recorder.report
        event = self.recorder.event
        try:
            state = await self.router.get_service(service)
            start = None
            if self.write_failed and failed_reconcile(state):
                # The guard's own write failed inside Cloud Run: its spec is not what is
                # served and may name a deleted revision. Never re-send it: start from
                # what is served (the failed spec goes with the tag).
                start = served_spec(state)
                event("tag_removal_from_served", tag=tag, traffic=split_text(start))
            spec = without_tag(state, tag, start=start)
            if spec is None:
                event("tag_not_found", tag=tag, note="nothing to remove")
                if not any(e.event == "tag_added" for e in report.timeline.events):
                    # adding it failed: the report names no tag that never existed
                    report.temporary_tag = ""
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
                event("tag_removed", tag=tag)
            self.temp_tag = ""
            report.traffic_after = served_split(state)
        except GuardError as exc:
            by_hand = (
                f"gcloud run services update-traffic {service} --remove-tags {tag} "
                f"--region {self.region} --project {self.project}"
            )
            note = f"the temporary tag {tag} is still on {service} ({exc}); remove it: {by_hand}"
            report.error = f"{report.error}; {note}" if report.error else note
            report.message = f"{report.message}; {note}" if report.message else note
            log.warning("tag_left_behind", tag=tag, by_hand=by_hand)
            event("tag_removal_failed", tag=tag, error=str(exc))

    # .. rollback and promotion ..
    async def rollback(
        self, before: ServiceState, candidate: str, reason: str, *, reject: bool
    ) -> ActionResult:
        """Put traffic back on the split from before the check (or pin a chosen revision).

        ``reject``: the candidate failed, so it goes on the rejected list (an
        inconclusive one is not known to be bad and does not).
        """
        try:
            spec = rollback_plan(before, candidate, drop_tags=[self.temp_tag])
        except ActionError:  # the candidate held all the traffic: no split to restore
            try:
                target, why = await pick_rollback_target(self.router, before, exclude=candidate)
            except ConfigError as exc:
                self.recorder.event("rollback_failed", error=str(exc))
                return ActionResult(
                    "rollback",
                    "failed",
                    int(ExitCode.ACTION_FAILED),
                    f"{reason}; cannot roll back: {candidate} serves all of "
                    f"{before.short}'s traffic and no other revision qualifies ({exc}). Deploy "
                    f"a fixed revision, then `deploy-guard rollback --service {before.short} "
                    "--to-revision REV`",
                )
            except GuardError as exc:  # the Run API did not answer: nothing was written
                self.recorder.event("rollback_failed", error=str(exc))
                return ActionResult(
                    "rollback",
                    "failed",
                    int(ExitCode.ACTION_FAILED),
                    f"{reason}; cannot roll back: the revisions of {before.short} could not be "
                    f"read to choose where traffic goes ({exc}); nothing was written, "
                    f"{candidate} still serves. Once the API answers: `deploy-guard rollback "
                    f"--service {before.short}`",
                )
            spec = pin_plan(before, target.short, drop_tags=[self.temp_tag])
            # the candidate held 100 %: say where traffic goes, and why that revision
            chosen = f"rollback target {target.short}: {why}"
            self.recorder.event("rollback_target_chosen", revision=target.short, why=why)
            self.recorder.report.notes.append(chosen)
            reason = f"{reason}; {chosen}"
        record = {
            **(self._rejection(candidate) if reject else {}),
            **(self._tag_record_dropped() if spec else {}),
        }
        if spec is None:
            return await self._nothing_to_move(candidate, reason, record)
        result = await self.write(
            spec, reason, kind="rollback", done_action="rolled_back", annotations=record
        )
        if REJECTED in record and result.action == "rolled_back":
            self.recorder.event("rejection_recorded", revision=candidate)
        return result

    async def shift(self, split: dict[str, int], *, step: str, record: str) -> ActionResult:
        """A rollout's step: ``split`` written (every tag kept), with the rollout's record.

        ``record`` is the ``deploy-guard.dev/rollout`` annotation's new value: it
        rides in the same write, so the service says which step it is at exactly
        when it serves that step's split.
        """
        from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION

        expected = self.expected
        assert expected is not None
        spec = plan(split, tags_without(expected.traffic))
        return await self.write(
            spec,
            step,
            kind="shift",
            done_action="shifted",
            annotations={ROLLOUT_ANNOTATION: record},
        )

    async def restore(
        self, before: dict[str, int], candidate: str, reason: str, *, reject: bool
    ) -> ActionResult:
        """A rollout's rollback: the split from before the rollout, without the candidate.

        The rollout's record comes off in the same write (and the candidate goes
        on the rejected list when it failed). When the candidate serves nothing
        (it failed before its first step) nothing moves; the records are written
        on their own.
        """
        from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION

        expected = self.expected
        assert expected is not None
        rest = renormalise({r: p for r, p in before.items() if r != candidate})
        record = {
            **(self._rejection(candidate) if reject else {}),
            **self._tag_record_dropped(),
        }
        if ROLLOUT_ANNOTATION in expected.annotations:
            record[ROLLOUT_ANNOTATION] = ""
        if not rest:  # refused before the first write: the candidate held all of it
            message = f"{reason}; no split from before the rollout to restore"
            return ActionResult("rollback", "failed", int(ExitCode.ACTION_FAILED), message)
        if served_split(expected).get(candidate, 0) == 0:
            return await self._nothing_to_move(candidate, reason, record)
        spec = plan(rest, tags_without(expected.traffic, drop_tags=[self.temp_tag]))
        result = await self.write(
            spec, reason, kind="rollback", done_action="rolled_back", annotations=record
        )
        if REJECTED in record and result.action == "rolled_back":
            self.recorder.event("rejection_recorded", revision=candidate)
        return result

    async def _nothing_to_move(
        self, candidate: str, reason: str, record: dict[str, str]
    ) -> ActionResult:
        """The candidate serves nothing: no traffic write; the records on their own."""
        self.recorder.event("rollback_not_needed", reason="the candidate held no traffic")
        if record:
            await self._record_rejection(candidate, record)
        return ActionResult(
            "rollback",
            "none",
            int(ExitCode.FAIL),
            f"{reason}; the candidate held no traffic: nothing to move",
            verdict="fail",
        )

    async def promote(
        self,
        candidate: str,
        traffic_before: dict[str, int],
        *,
        also: dict[str, str] | None = None,
    ) -> ActionResult:
        """All traffic to the candidate, pinned by name, recorded as last known good.

        ``also``: more annotations for the same write (a rollout's record, cleared).
        """
        expected = self.expected
        assert expected is not None
        spec = pin_plan(expected, candidate, drop_tags=[self.temp_tag])
        # Recorded in the same write as the traffic: where a later rollback goes.
        served_before = {r: p for r, p in traffic_before.items() if r != candidate}
        previous = expected.annotations.get(LAST_KNOWN_GOOD, "")
        if not served_before and previous and previous != candidate:
            served_before = {previous: 100}  # it already had all the traffic: the one before
        record = {LAST_KNOWN_GOOD: candidate, **self._tag_record_dropped(), **(also or {})}
        from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION

        if expected.annotations.get(ROLLOUT_ANNOTATION):  # a rollout left part-way ends here:
            record[ROLLOUT_ANNOTATION] = ""  # 100 % elsewhere, its record would only block
        if candidate in rejected(expected.annotations):  # it passed now: no longer refused
            record[REJECTED] = with_rejected(expected.annotations, clear=candidate)
        if served_before:  # else keep what an earlier promotion recorded
            record[SERVED_BEFORE] = encode_split(served_before)
        result = await self.write(
            spec,
            "the candidate passed",
            kind="promote",
            done_action="promoted",
            annotations=record,
        )
        if result.action == "promoted":
            self.recorder.event("last_known_good_recorded", revision=candidate)
        return result

    def _tag_record_dropped(self) -> dict[str, str]:
        """The holder annotation without the temporary tag a traffic write drops with it."""
        expected, tag = self.expected, self.temp_tag
        if not tag or expected is None:
            return {}
        return {TAGS_ANNOTATION: without_holders(expected.annotations, [tag])}

    def _rejection(self, candidate: str) -> dict[str, str]:
        """The annotation that keeps a failed candidate out of later rollbacks."""
        if self.expected is None:
            return {}
        return {REJECTED: with_rejected(self.expected.annotations, candidate)}

    async def _record_rejection(self, candidate: str, record: dict[str, str]) -> None:
        """Record it on its own when no traffic moves (best effort: the verdict stands)."""
        expected = self.expected
        assert expected is not None
        try:
            self.expected = await self.router.set_annotations(expected, record)
            self.recorder.event("rejection_recorded", revision=candidate)
        except GuardError as exc:
            log.warning("rejection_not_recorded", revision=candidate, error=str(exc))
            self.recorder.event("rejection_not_recorded", revision=candidate, error=str(exc))

    # .. the write ..
    async def write(
        self,
        spec: Sequence[Allocation],
        reason: str,
        *,
        kind: str,
        done_action: str,
        annotations: dict[str, str] | None = None,
    ) -> ActionResult:
        """Write ``spec`` against what the guard last saw; done only when re-read."""
        expected = self.expected
        assert expected is not None
        report, event = self.recorder.report, self.recorder.event
        fail_code = ExitCode.FAIL if kind == "rollback" else ExitCode.PASS
        event(f"{kind}_requested", traffic=split_text(spec))
        try:
            state = await self.router.set_traffic(expected, spec, why=kind, annotations=annotations)
        except SupersededError as exc:
            event(f"{kind}_refused", reason=str(exc))
            await self._read_back()
            return ActionResult(kind, "superseded", int(ExitCode.ACTION_FAILED), str(exc))
        except UnverifiedError as exc:
            # Sent (and maybe applied), but not read back: the last state seen, and what to
            # check; not "do it by hand" with a split that may already be there.
            if isinstance(exc.last_state, ServiceState):
                report.traffic_after = served_split(exc.last_state)
            event(f"{kind}_unverified", error=str(exc))
            msg = f"{kind} sent, not verified: {exc}"
            return ActionResult(kind, "unverified", int(ExitCode.ACTION_FAILED), msg)
        except GuardError as exc:
            self.write_failed = True
            await self._read_back()
            event(f"{kind}_failed", error=str(exc))
            msg = f"{kind} failed: {exc}. Do it by hand: {self._by_hand(spec)}"
            if kind == "shift":  # the rollout's record says where it stopped: go on from there
                msg = (
                    f"the step's traffic write failed: {exc}. Traffic stays at the last verified "
                    f"step: `deploy-guard rollout --resume --service {self.service}` continues "
                    f"once the cause is fixed, `deploy-guard rollback --service {self.service}` "
                    "undoes it"
                )
            return ActionResult(kind, "failed", int(ExitCode.ACTION_FAILED), msg)
        self.expected = state
        if not any(a.tag == self.temp_tag for a in state.traffic):
            self.temp_tag = ""  # the write dropped it already
        report.traffic_after = served_split(state)
        event(f"{kind}_verified", traffic=describe(report.traffic_after))
        return ActionResult(
            kind,
            done_action,
            int(fail_code),
            f"{reason}; traffic now {describe(report.traffic_after)}",
        )

    async def _read_back(self) -> None:
        """After a refused or failed write: what the service really serves, for the report."""
        try:
            state = await self.router.get_service(self.service)
        except GuardError as exc:
            self.recorder.event("read_back_failed", error=str(exc))
            return
        self.recorder.report.traffic_after = served_split(state)

    def _by_hand(self, spec: Sequence[Allocation]) -> str:
        pairs = ",".join(f"{a.revision}={a.percent}" for a in spec if a.percent and a.revision)
        return (
            f"gcloud run services update-traffic {self.service} --region {self.region} "
            f"--project {self.project} --to-revisions {pairs}"
        )


def split_text(spec: Sequence[Allocation]) -> str:
    return ", ".join(f"{a.revision or 'LATEST'} {a.percent}%" for a in spec if a.percent)
