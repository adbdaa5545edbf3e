"""The emulator's write path: validate a write, apply it, reconcile, finish its operation.

Writes follow Cloud Run: Create/Update/Delete return a long-running operation.
A template change creates a revision (``SERVICE-0000N-xyz``, N the write's
generation: :func:`server_revision_id`) whose process is started in the
background; the operation is done when it listens (the service then serves the
new traffic split) or when it failed (the operation carries the error,
``traffic_statuses`` keep the last serving state and ``terminal_condition``
says why). A traffic-only change creates no revision
and is applied before the call returns.

Every write is validated completely (:meth:`Reconciler._plan`, and
:func:`merge` for an ``update_mask``) before anything changes, so a refused
request leaves the state exactly as it was. Two writes may reconcile at once
and finish in any order; the service's conditions report the newest outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2

from deploy_guard.emulator import state as st
from deploy_guard.emulator import traffic
from deploy_guard.emulator.names import (
    check_request_timeout,
    check_revision_id,
    new_revision_id,
    short_name,
)
from deploy_guard.emulator.processes import StartFailure
from deploy_guard.emulator.run_revisions import RevisionRuntime, State, log
from deploy_guard.errors import EmulatorError

#: Service fields a caller may write; everything else is output-only.
WRITABLE = (
    "description",
    "labels",
    "annotations",
    "client",
    "client_version",
    "ingress",
    "launch_stage",
    "binary_authorization",
    "template",
    "traffic",
    "scaling",
    "invoker_iam_disabled",
    "default_uri_disabled",
    "custom_audiences",
)


def copy_writable(src: run_v2.Service, dst: run_v2.Service) -> None:
    for name in WRITABLE:
        setattr(dst, name, getattr(src, name))


def merge(src: run_v2.Service, dst: run_v2.Service, paths: list[str]) -> None:
    """Write ``src`` into ``dst``: the fields ``paths`` name, or every writable one.

    ``paths`` is the request's ``update_mask`` (``traffic``, ``template``,
    ``template.containers``, ``labels``...), with FieldMask semantics: a named
    message or list is replaced, not merged. A path that is not a writable
    field of Service is INVALID_ARGUMENT, and nothing changes.
    """
    if not paths:
        copy_writable(src, dst)
        return
    mask = field_mask_pb2.FieldMask(paths=paths)
    for path in paths:
        top = path.split(".", 1)[0]
        if top not in WRITABLE or not field_mask_pb2.FieldMask(paths=[path]).IsValidForDescriptor(
            run_v2.Service.pb().DESCRIPTOR
        ):
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"update_mask path {path!r} is not a writable field of Service; "
                f"use one of {', '.join(WRITABLE)} (or a sub-field), or no mask to "
                "replace every writable field",
            )
    mask.MergeMessage(
        run_v2.Service.pb(src),
        run_v2.Service.pb(dst),
        replace_message_field=True,
        replace_repeated_field=True,
    )


#: Set by Cloud Run itself; a template may not set them.
_RESERVED_ENV = ("PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION")


def check_container(container: run_v2.Container) -> None:
    """Refuse what no process could be started with, naming the field."""
    where = "template.containers[0]"
    reserved = [e.name for e in container.env if e.name in _RESERVED_ENV]
    if reserved:
        raise EmulatorError(
            "INVALID_ARGUMENT",
            f"{where}.env: the following reserved env names were provided: "
            f"{', '.join(reserved)}. These values are automatically set by the system.",
        )
    for i, env in enumerate(container.env):
        if not env.name or "=" in env.name or "\0" in env.name or "\0" in env.value:
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"{where}.env[{i}]: name {env.name!r} is invalid: it must be non-empty "
                "without '=' and neither name nor value may contain a NUL character",
            )
    for field in ("command", "args"):
        for i, word in enumerate(getattr(container, field)):
            if "\0" in word:
                raise EmulatorError(
                    "INVALID_ARGUMENT", f"{where}.{field}[{i}] contains a NUL character"
                )


@dataclass(frozen=True)
class Failure:
    """A reconciliation that failed for another reason than a revision not starting."""

    message: str
    status: str  # the operation's gRPC status name
    reason: Any  # run_v2.Condition.CommonReason


def server_revision_id(entry: st.ServiceEntry, generation: int) -> str:
    """The name Cloud Run gives a revision the write does not name: ``SERVICE-0000N-xyz``.

    N is the service's generation at the write that creates the revision (the
    number gcloud also uses when it names a revision itself: the generation it
    read, plus one), so numbers never repeat within a service: every write has
    a generation of its own, and a traffic-only write uses one up (the next
    deploy's number skips it, as on Cloud Run). A name that exists or existed
    (the three letters collide, or a caller chose it) gets other letters.
    """
    taken = set(entry.revisions) | entry.deleted_revisions
    while (revision_id := new_revision_id(entry.service_id, generation)) in taken:
        pass
    return revision_id


class Reconciler(RevisionRuntime):
    """Writes to services and their reconciliation (the servicer is ``RunAdmin``)."""

    # -- writes and reconciliation ---------------------------------------------------------

    def _plan(
        self,
        entry: st.ServiceEntry,
        template: run_v2.RevisionTemplate,
        targets: Any,
        *,
        creating: bool,
    ) -> str | None:
        """Validate a write; return the id of the revision it will create, if any."""
        old = entry.resource.template
        changed = creating or run_v2.RevisionTemplate.pb(old) != run_v2.RevisionTemplate.pb(
            template
        )
        revision_id: str | None = None
        if changed:
            if not template.containers:
                raise EmulatorError(
                    "INVALID_ARGUMENT", "template.containers: at least one container is required"
                )
            check_request_timeout(template)
            probe = template.containers[0].startup_probe
            if min(probe.initial_delay_seconds, probe.period_seconds, probe.failure_threshold) < 0:
                raise EmulatorError(
                    "INVALID_ARGUMENT",
                    "template.containers[0].startup_probe: initial_delay_seconds, "
                    "period_seconds and failure_threshold must not be negative",
                )
            check_container(template.containers[0])
            if not template.containers[0].command:
                raise EmulatorError(
                    "INVALID_ARGUMENT",
                    "template.containers[0].command is empty: the emulator runs "
                    "command + args as a local process (the image is not pulled)",
                )
            if template.revision:
                check_revision_id(entry.service_id, template.revision)
                if template.revision in entry.revisions:
                    raise EmulatorError(
                        "ALREADY_EXISTS",
                        f"Revision named '{template.revision}' with different configuration "
                        "already exists.",
                    )
                revision_id = template.revision
            else:
                revision_id = server_revision_id(entry, entry.resource.generation + 1)
        known = set(entry.revisions) | ({revision_id} if revision_id else set())
        # A revision deleted since the caller read the service passes here and fails
        # inside the operation, as on Cloud Run (see _broken_target).
        known |= entry.deleted_revisions
        traffic.validate(targets, known, service_id=entry.service_id)
        return revision_id

    async def _write(
        self, entry: st.ServiceEntry, revision_id: str | None
    ) -> operations_pb2.Operation:
        svc = entry.resource
        svc.generation += 1
        svc.etag = st.new_etag()
        rev: st.RevisionEntry | None = None
        if revision_id is not None:
            if not svc.template.revision:  # named by the write's own generation, now known
                revision_id = server_revision_id(entry, svc.generation)
            rev = st.RevisionEntry(st.revision_from_template(svc, svc.template, revision_id))
            entry.revisions[revision_id] = rev
            svc.latest_created_revision = rev.resource.name
        generation = svc.generation
        entry.pending.add(generation)
        svc.reconciling = True
        svc.terminal_condition = st.condition(
            "Ready", State.CONDITION_RECONCILING, "Deploying revision." if rev else ""
        )
        svc.conditions = [
            st.condition("RoutesReady", State.CONDITION_RECONCILING),
            st.condition(
                "ConfigurationsReady",
                State.CONDITION_RECONCILING if rev else State.CONDITION_SUCCEEDED,
            ),
        ]
        op = self.operations.start(run_v2.Service(svc))
        if rev is None:
            # A traffic-only change starts nothing: apply it before the call returns.
            await self._reconcile(entry, generation, None, op.name)
            return self.operations.get(op.name)
        task = asyncio.get_running_loop().create_task(
            self._reconcile(entry, generation, rev, op.name)
        )
        entry.tasks.add(task)
        task.add_done_callback(entry.tasks.discard)
        return op

    async def _reconcile(
        self,
        entry: st.ServiceEntry,
        generation: int,
        rev: st.RevisionEntry | None,
        op_name: str,
    ) -> None:
        failure: StartFailure | Failure | None = None
        try:
            if rev is not None:
                failure = await self._start(entry, rev)
                if failure is None and self.route_delay_s > 0:
                    await asyncio.sleep(self.route_delay_s)  # Ready, not yet routed
            async with entry.lock:
                if entry.deleted:
                    self.operations.finish(
                        op_name, error=EmulatorError("ABORTED", "the service was deleted")
                    )
                    return
                entry.pending.discard(generation)
                if failure is None:
                    failure = self._broken_target(entry, generation)
                self._finish(entry, generation, rev, failure, op_name)
                if failure is None:
                    await self._apply_traffic(entry)
                    self.operations.finish(op_name, response=run_v2.Service(entry.resource))
        except asyncio.CancelledError:
            if rev is not None and rev.process is not None:
                await rev.process.stop()
            with contextlib.suppress(EmulatorError):
                if not self.operations.get(op_name).done:
                    self.operations.finish(
                        op_name,
                        error=EmulatorError(
                            "ABORTED", "cancelled: the service was deleted or the emulator stopped"
                        ),
                    )
            raise
        except Exception as exc:  # never lose the operation: report what went wrong
            log.exception("emulator_reconcile_failed", service=entry.service_id)
            entry.pending.discard(generation)
            entry.resource.reconciling = bool(entry.pending)
            self.operations.finish(op_name, error=EmulatorError("INTERNAL", str(exc)))

    @staticmethod
    def _broken_target(entry: st.ServiceEntry, generation: int) -> Failure | None:
        """A traffic target naming a revision deleted after the write was accepted.

        Cloud Run accepts such a write and fails its operation with code 13
        "Revision '...' does not exist or is deleted"; the spec keeps the broken
        split while ``traffic_statuses`` keep serving the old one.
        """
        if generation != entry.resource.generation:
            return None  # a newer write decides what the spec is
        for target in entry.resource.traffic:
            if not traffic.is_latest(target) and target.revision not in entry.revisions:
                return Failure(
                    f"Revision '{target.revision}' does not exist or is deleted.",
                    status="INTERNAL",
                    reason=run_v2.Condition.CommonReason.INTERNAL,
                )
        return None

    def _finish(
        self,
        entry: st.ServiceEntry,
        generation: int,
        rev: st.RevisionEntry | None,
        failure: StartFailure | Failure | None,
        op_name: str,
    ) -> None:
        """Record the outcome on the service resource (and fail the operation).

        A failure leaves ``observed_generation``, ``latest_ready_revision`` and
        ``traffic_statuses`` at the last serving state, as Cloud Run does
        ("If reconciliation failed, ... will have the state of the last serving
        revision"): only ``terminal_condition`` says what happened.
        """
        svc = entry.resource
        if failure is None:
            svc.observed_generation = max(svc.observed_generation, generation)
        svc.reconciling = bool(entry.pending)
        if failure is None and rev is not None and self._newer(entry, rev):
            svc.latest_ready_revision = rev.resource.name
        status = failure.status if isinstance(failure, Failure) else "FAILED_PRECONDITION"
        reason = (
            failure.reason
            if isinstance(failure, Failure)
            else run_v2.Condition.CommonReason.REVISION_FAILED
        )
        if generation < entry.outcome_generation:
            # A newer write already reported its outcome: this one is history.
            if failure is not None:
                self.operations.finish(op_name, error=EmulatorError(status, failure.message))
            return
        entry.outcome_generation = generation
        if failure is None:
            if generation == svc.generation or not entry.pending:
                svc.terminal_condition = st.condition("Ready", State.CONDITION_SUCCEEDED)
                svc.conditions = [
                    st.condition("RoutesReady", State.CONDITION_SUCCEEDED),
                    st.condition("ConfigurationsReady", State.CONDITION_SUCCEEDED),
                ]
            return
        served = bool(svc.traffic_statuses)
        routing = isinstance(failure, Failure)  # the traffic failed, not a revision
        svc.terminal_condition = st.condition(
            "Ready", State.CONDITION_FAILED, failure.message, reason=reason
        )
        svc.conditions = [
            st.condition(
                "RoutesReady",
                State.CONDITION_FAILED if routing or not served else State.CONDITION_SUCCEEDED,
                failure.message if routing or not served else "",
                **({"reason": reason} if routing else {}),
            ),
            st.condition(
                "ConfigurationsReady",
                State.CONDITION_SUCCEEDED if routing else State.CONDITION_FAILED,
                "" if routing else failure.message,
                **({} if routing else {"reason": reason}),
            ),
        ]
        self.operations.finish(op_name, error=EmulatorError(status, failure.message))

    @staticmethod
    def _newer(entry: st.ServiceEntry, rev: st.RevisionEntry) -> bool:
        """Is ``rev`` created after the current latest ready revision?

        Two deploys can start at once and finish in any order; LATEST must
        end on the newest one that became ready.
        """
        order = list(entry.revisions)
        current = short_name(entry.resource.latest_ready_revision)
        if current not in entry.revisions or rev.short not in entry.revisions:
            return True
        return order.index(rev.short) > order.index(current)


__all__ = ["WRITABLE", "Failure", "Reconciler", "check_container", "copy_writable", "merge"]
