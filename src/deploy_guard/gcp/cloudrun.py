"""Cloud Run Admin v2: read services and revisions, change traffic, verify by re-reading.

The reads, the conversion into snapshots and the polls live in
:mod:`deploy_guard.gcp.run_reads`; this module is the write path and the
helpers every command opens a service with.

Writes follow four rules:

1. *Write only what the guard means to change*: the UpdateService request
   carries a Service with ``name``, ``traffic``, ``annotations`` (the whole map
   as read, the guard's keys changed: a FieldMask path replaces a map) and the
   ``etag`` read, with ``update_mask`` ``traffic,annotations``. The template is
   never sent, so a write can never put back a template someone replaced
   meanwhile (which would start a new revision from old, possibly failed,
   code), and a service deployed with a named revision (``--revision-suffix``),
   which refuses any write that re-sends its template with 409, takes it.
2. *Refuse to clobber*: right before writing, re-read and compare with what
   the guard last saw (its own last write included). If ``generation``,
   ``latest_created_revision`` or the traffic spec moved, someone else deployed
   or moved traffic: raise :class:`SupersededError` and write nothing. This
   check stays although the etag makes the write conditional: whether Cloud
   Run enforces ``Service.etag`` on UpdateService is unverified (the field is
   documented as "may be used to detect modification conflict"), and the
   check also catches a change the guard's ``expected`` state predates. If
   the etag is not checked, a deploy that lands between that re-read and the
   write shows in the operation's result (more than one generation on, or
   another latest revision): :class:`SupersededError`, saying the traffic
   written may have replaced that deploy's (its template is never touched).
3. *A stale answer is read, not trusted*: ABORTED or FAILED_PRECONDITION on
   the request (the etag no longer matches; which one Cloud Run sends is
   unverified, so both count) means the service moved: re-read it. If the
   re-read shows exactly the guard's own write (its traffic spec and
   annotations, ``generation`` one past the one it wrote from, template and
   ``latest_created_revision`` unchanged), the write landed and only its
   answer was lost (the client's retry of a write that landed carries the old
   etag): verify it as usual. Otherwise raise :class:`SupersededError` with
   the service's true state. A write that gets no answer at all (UNAVAILABLE
   up to the retry bound, INTERNAL) is read back the same way: the guard's
   own change is verified, an untouched service means it failed, anything
   else is superseded.
4. *A change is done only when a re-read shows it*: wait for the operation,
   then re-read until ``traffic_statuses`` serves the new split. An operation
   that fails (Cloud Run accepts a split naming a revision deleted meanwhile,
   then fails with "does not exist or is deleted") is an :class:`ActionError`
   saying what the spec now holds and what is served; a write whose operation
   or re-read could not be read at all is an :class:`UnverifiedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from deploy_guard.errors import (
    ActionError,
    ApiError,
    ConfigError,
    GuardError,
    NotFoundError,
    SupersededError,
    UnverifiedError,
)
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.run_reads import (
    RunReads,
    service_of,
    short_name,
    to_revision_state,
    to_service_state,
    to_targets,
)
from deploy_guard.gcp.traffic import (
    Allocation,
    RevisionState,
    ServiceState,
    describe,
    same_spec,
    served_split,
    shows,
    spec_text,
    superseded_reason,
)
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.gcp.cloudrun")

#: The only fields a guard write sends: the rest of the service is never touched.
WRITE_MASK = ("traffic", "annotations")


class TrafficRouter(Protocol):
    """What the gate needs from Cloud Run (the emulator or the real one)."""

    async def get_service(self, service: str) -> ServiceState: ...

    async def wait_ready(self, service: str, revision: str, bound: float) -> RevisionState: ...

    async def wait_settled(self, service: str, bound: float) -> ServiceState: ...

    async def set_traffic(
        self,
        expected: ServiceState,
        spec: Sequence[Allocation],
        *,
        why: str,
        annotations: Mapping[str, str] | None = None,
    ) -> ServiceState: ...


class CloudRun(RunReads):
    """:class:`TrafficRouter` over the official clients (see the module docstring)."""

    # -- writes --------------------------------------------------------------
    async def set_traffic(
        self,
        expected: ServiceState,
        spec: Sequence[Allocation],
        *,
        why: str,
        annotations: Mapping[str, str] | None = None,
    ) -> ServiceState:
        """Write ``spec`` as the service's traffic if nobody changed it; verify by re-read.

        ``annotations`` ride in the same write (what the guard records about it),
        so they are there exactly when the traffic change is.

        Returns the verified state, which is the new ``expected`` for the next
        write. Raises :class:`SupersededError` when the service moved since
        ``expected`` (nothing written), or when someone else changed it between
        this write and its verification (the write is done; the state is not
        the guard's); :class:`ActionError` when the write or its verification
        failed; :class:`UnverifiedError` when it was sent but could not be read
        back.
        """
        raw = await self._get_service_raw(expected.name)
        now = to_service_state(raw)
        reason = superseded_reason(expected, now)
        if reason is not None:
            log.warning("traffic_write_refused", service=now.short, reason=reason, why=why)
            raise SupersededError(
                f"{reason}; deploy-guard did not change {now.short}'s traffic. "
                f"It serves {describe(served_split(now))}; check it by hand."
            )
        log.info("traffic_write_requested", service=now.short, why=why, traffic=spec_text(spec))
        what = f"updating traffic of {now.short} ({why})"
        written = await self._write(raw, now, what=what, spec=spec, annotations=annotations or {})
        _landed_alone(now, written, spec, what=what)
        return await self._verify_written(expected.name, spec, written, what=what)

    async def set_annotations(
        self, expected: ServiceState, values: Mapping[str, str]
    ) -> ServiceState:
        """Record several annotations in one write (same refuse-if-changed rule)."""
        raw = await self._get_service_raw(expected.name)
        now = to_service_state(raw)
        reason = superseded_reason(expected, now)
        if reason is not None:
            raise SupersededError(f"{reason}; did not annotate {now.short}")
        what = f"annotating {now.short}"
        written = await self._write(raw, now, what=what, spec=None, annotations=values)
        try:
            return await self.get_service(expected.name)
        except GuardError as exc:  # the write is done: say so, not only why the read failed
            log.warning("annotation_write_unverified", service=now.short, error=str(exc))
            raise UnverifiedError(
                f"{what}: Cloud Run applied the change (its operation finished), but it was "
                f"not read back: reading the service failed ({exc}). Check its annotations: "
                f"`gcloud run services describe {now.short} "
                "--format 'value(metadata.annotations)'`",
                last_state=written,
            ) from exc

    async def _write(
        self,
        raw: Any,
        now: ServiceState,
        *,
        what: str,
        spec: Sequence[Allocation] | None,
        annotations: Mapping[str, str],
    ) -> ServiceState:
        """Send the guard's change (rule 1), handle a stale answer (rule 3) and a
        failed operation; the service as the write left it."""
        from google.cloud import run_v2

        request: Any = run_v2.Service(name=raw.name, etag=raw.etag)
        request.annotations = {**dict(raw.annotations), **annotations}
        paths = ["annotations"]
        if spec is not None:
            request.traffic = to_targets(spec)
            paths.insert(0, "traffic")
        try:
            return await self._update(request, what=what, paths=paths)
        except SupersededError as exc:  # the request itself was refused as stale
            landed = await self._own_write_landed(raw, now, spec, annotations, what=what, exc=exc)
            if landed is not None:
                return landed
            raise
        except ApiError as exc:
            if type(exc) is not ApiError:
                raise  # NOT_FOUND, PERMISSION_DENIED: refused, nothing was written
            # No answer (UNAVAILABLE or DEADLINE_EXCEEDED up to the retry bound, an
            # INTERNAL error): the change may have landed all the same. Read it back
            # before calling it failed: a rollback that is in place is not "do it by hand".
            landed = await self._own_write_landed(
                raw, now, spec, annotations, what=what, exc=exc, answered=False
            )
            if landed is not None:
                return landed
            raise

    async def _own_write_landed(
        self,
        raw: Any,
        now: ServiceState,
        spec: Sequence[Allocation] | None,
        annotations: Mapping[str, str],
        *,
        what: str,
        exc: GuardError,
        answered: bool = True,
    ) -> ServiceState | None:
        """After a stale answer (or none): the re-read state if it is the guard's own write.

        A lost answer makes the client retry a write that already landed; the
        retry carries the etag read before it and is refused. Raises
        :class:`SupersededError` with the true state when someone else moved
        the service, :class:`UnverifiedError` when the re-read fails.

        ``answered=False``: the write got no answer at all (``exc`` says why).
        The service untouched (its etag as read, or its generation, traffic and
        annotations) means the change did not land: None, and the caller
        reports the write as failed.
        """
        from google.cloud import run_v2

        try:
            raw_after = await self._get_service_raw(now.name)
        except GuardError as read_exc:
            said = (
                f"Cloud Run answered that {now.short} changed ({exc})"
                if answered
                else f"Cloud Run gave no answer ({exc})"
            )
            raise UnverifiedError(
                f"{what}: {said}, and reading {now.short} back failed ({read_exc}): "
                "deploy-guard's change may or may not have landed. "
                f"Last state read: it served {describe(served_split(now))}; check it with "
                f"`gcloud run services describe {now.short}`",
                last_state=now,
            ) from read_exc
        after = to_service_state(raw_after)
        own = (
            after.generation == now.generation + 1
            and after.latest_created_revision == now.latest_created_revision
            and (spec is None or same_spec(after.traffic, spec))
            and all(after.annotations.get(k) == v for k, v in annotations.items())
            and run_v2.RevisionTemplate.pb(raw_after.template)
            == run_v2.RevisionTemplate.pb(raw.template)
        )
        if own:
            log.info("traffic_write_landed_before_its_retry", service=now.short, what=what)
            return after
        untouched = raw_after.etag == raw.etag or (  # an etag may also move with the status
            after.generation == now.generation
            and superseded_reason(now, after) is None
            and after.annotations == now.annotations
        )
        if not answered and untouched:
            return None  # the change did not land
        moved = superseded_reason(now, after) or "the service changed while deploy-guard wrote"
        log.warning("traffic_write_stale", service=now.short, reason=moved, what=what)
        said = "refused deploy-guard's change as stale" if answered else "gave no answer to"
        raise SupersededError(
            f"{moved}: Cloud Run {said} deploy-guard's change ({exc}) and "
            f"deploy-guard will not write again. {after.short} serves "
            f"{describe(served_split(after))} "
            f"(spec: {spec_text(after.traffic)}); check it by hand."
        ) from exc

    async def _update(self, service: Any, *, what: str, paths: Sequence[str]) -> ServiceState:
        """UpdateService with ``update_mask`` ``paths`` and wait for its operation.

        Only the request itself can be refused as stale (ABORTED or
        FAILED_PRECONDITION: :class:`SupersededError`). An operation that fails
        afterwards is an :class:`ActionError` saying what the service now holds
        and serves; one that could not be followed to its end is an
        :class:`UnverifiedError`.
        """
        request = {"service": service, "update_mask": {"paths": list(paths)}}

        def write(retry: Any) -> Any:
            return self.clients.services().update_service(request=request, retry=retry)

        op: Any = await self._run(write, method="UpdateService", what=what, writing=True)

        def wait() -> Any:
            return op.result(timeout=self.verify_timeout, polling=self._polling())

        try:
            result = await asyncio.to_thread(wait)
        except Exception as exc:
            from deploy_guard.log import redact_text

            detail = redact_text(str(exc)).rstrip(".")
            short = short_name(service.name)
            last = getattr(op, "operation", None)
            if last is None or not last.done or not last.HasField("error"):
                # a timeout or an API error while polling: the write is out of sight
                raise UnverifiedError(
                    f"{what}: sent, but its operation could not be followed to its end "
                    f"({detail}); check {short} with `gcloud run services describe {short}`"
                ) from exc
            raise await self._failed(service.name, what, detail) from exc
        return to_service_state(result)

    async def _failed(self, name: str, what: str, detail: str) -> ActionError:
        """The error for an accepted write whose operation failed: what it left behind."""
        try:
            state = await self.get_service(name)
        except GuardError as exc:
            return UnverifiedError(
                f"{what}: Cloud Run accepted the change, then its operation failed ({detail}); "
                f"reading the service back failed too ({exc})"
            )
        return ActionError(
            f"{what}: Cloud Run accepted the change, then its operation failed: {detail}. "
            f"{state.short}'s spec now holds {spec_text(state.traffic)}; it still serves "
            f"{describe(served_split(state))}"
        )

    def _polling(self) -> Any:
        from google.api_core import retry as gretry
        from google.api_core.future import polling

        return gretry.Retry(
            predicate=gretry.if_exception_type(polling._OperationNotComplete),
            initial=self.poll_initial,
            maximum=self.poll_max,
            multiplier=2.0,
            timeout=self.verify_timeout,
        )

    async def _verify_written(
        self, service: str, spec: Sequence[Allocation], written: ServiceState, *, what: str
    ) -> ServiceState:
        """:meth:`verify`; a re-read that fails makes the write "sent, not verified"."""
        try:
            return await self.verify(service, spec, written=written)
        except ActionError:
            raise
        except GuardError as exc:
            log.warning("traffic_write_unverified", service=written.short, error=str(exc))
            raise UnverifiedError(
                f"{what}: Cloud Run applied the change ({spec_text(spec)}; the operation "
                f"reported {written.short} serving {describe(served_split(written))}), but "
                f"reading the service back failed ({exc}). Check what it serves: "
                f"`gcloud run services describe {written.short} --format 'value(status.traffic)'`",
                last_state=written,
            ) from exc

    async def verify(
        self, service: str, spec: Sequence[Allocation], *, written: ServiceState | None = None
    ) -> ServiceState:
        """Re-read until the service serves ``spec`` (bounded): the proof a change is done.

        ``written`` is the service as the guard's own write left it: a re-read
        that shows a later change (a deploy landing right after the write) is
        not adopted as the guard's state; :class:`SupersededError` says so.
        """
        deadline = time.monotonic() + self.verify_timeout
        delay = self.poll_initial
        while True:
            state = await self.get_service(service)
            stale = written is not None and state.generation < written.generation
            moved = None if written is None or stale else superseded_reason(written, state)
            if moved is not None:
                log.warning("traffic_write_overtaken", service=state.short, reason=moved)
                raise SupersededError(
                    f"{moved} right after deploy-guard's own traffic change "
                    f"({spec_text(spec)}); it serves {describe(served_split(state))} now and "
                    "deploy-guard will not write again; check it by hand."
                )
            if not stale and shows(state, spec):
                return state
            # A failed reconcile (failed_reconcile) and any terminal failure: waiting
            # changes nothing.
            if not stale and state.terminal_message and not state.reconciling:
                raise ActionError(
                    f"Cloud Run did not apply the traffic change to {state.short}: "
                    f"{state.terminal_message}. Its spec holds {spec_text(state.traffic)}; it "
                    f"serves {describe(served_split(state))}"
                )
            if time.monotonic() >= deadline:
                raise ActionError(
                    f"{state.short} still serves {describe(served_split(state))} "
                    f"{self.verify_timeout:.0f} s after the change to {spec_text(spec)}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.poll_max)


def _landed_alone(
    now: ServiceState, written: ServiceState, spec: Sequence[Allocation], *, what: str
) -> None:
    """Raise :class:`SupersededError` if another change landed around the guard's write.

    With the etag enforced this cannot happen before the write (it would have
    been refused); without it (unverified on Cloud Run) a deploy between the
    guard's last read and its write is only visible here: the operation's
    service is more than one generation on, or has another latest revision.
    The template was not touched (``update_mask``), but the traffic the guard
    wrote may have replaced that deploy's: say so, exit 4.
    """
    if written.generation <= now.generation + 1 and (
        written.latest_created_revision == now.latest_created_revision
    ):
        return
    moved = superseded_reason(now, written) or "the service changed around the write"
    log.warning("traffic_write_not_alone", service=now.short, reason=moved, what=what)
    raise SupersededError(
        f"{moved}, around deploy-guard's own traffic change ({spec_text(spec)}), and Cloud "
        f"Run did not refuse that change as stale: it may have replaced the other change's "
        f"traffic (never its template). {written.short} serves "
        f"{describe(served_split(written))} (spec: {spec_text(written.traffic)}); "
        "deploy-guard will not write again; check it by hand."
    )


def service_missing(
    service: str, project: str, region: str, *, named_by_revision: bool = True
) -> NotFoundError:
    """The error for a service that does not exist, in the words every command uses.

    ``named_by_revision``: the command may take the service from a revision's name
    (``check``, ``rollout``); ``watch`` and ``status`` name it with ``--service`` only.
    """
    also = " (or the revision's name)" if named_by_revision else ""
    return NotFoundError(
        f"service {service} does not exist in project {project} region {region}; "
        f"check --service{also}, --project and --region"
    )


@contextlib.asynccontextmanager
async def open_service(
    project: str, region: str, service: str, clients: Clients | None = None
) -> AsyncIterator[tuple[CloudRun, ServiceState]]:
    """A :class:`CloudRun` and ``service`` as read now, for one command.

    ``clients`` are built from the environment (and closed afterwards) unless
    given; a service that does not exist is :func:`service_missing`.
    """
    own = clients is None
    clients = Clients.from_env() if clients is None else clients
    try:
        router = CloudRun(clients, project, region)
        try:
            state = await router.get_service(service)
        except NotFoundError:
            raise service_missing(service, project, region) from None
        yield router, state
    finally:
        if own:
            clients.close()


def need_service(service: str | None, revision: str) -> str:
    """The service to use: given, or derived from the revision's name."""
    if service:
        return service
    derived = service_of(revision)
    if derived is None:
        raise ConfigError(
            f"cannot tell the service from revision name {revision!r}: it is not in Cloud "
            "Run's SERVICE-00002-abc form (a named revision, as --revision-suffix makes, "
            "could belong to any service its name starts with); pass --service"
        )
    return derived


__all__ = [
    "WRITE_MASK",
    "CloudRun",
    "TrafficRouter",
    "need_service",
    "open_service",
    "service_missing",
    "service_of",
    "to_revision_state",
    "to_service_state",
]
