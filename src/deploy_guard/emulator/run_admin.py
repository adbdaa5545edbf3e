"""Cloud Run Admin API v2 (``google.cloud.run.v2.Services`` and ``.Revisions``).

Writes follow Cloud Run: Create/Update/Delete return a long-running operation.
A template change creates a revision (``SERVICE-0000N-xyz``) whose process is
started in the background; the operation is done when it listens (the service
then serves the new traffic split) or when it failed (the operation carries
the error, ``traffic_statuses`` keep the last serving state and
``terminal_condition`` says why). A traffic-only change creates no revision
and is applied before the call returns.

Every request is validated completely before anything changes, so a refused
request leaves the state exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import field_mask_pb2, json_format

from deploy_guard.emulator import state as st
from deploy_guard.emulator import traffic
from deploy_guard.emulator.contracts import Backend, LogSink, RevisionRef, Route, RouterApi
from deploy_guard.emulator.names import (
    Location,
    check_request_timeout,
    check_revision_id,
    check_service_id,
    new_revision_id,
    request_timeout_s,
    short_name,
)
from deploy_guard.emulator.operations import OperationStore
from deploy_guard.emulator.paging import page
from deploy_guard.emulator.processes import RevisionProcess, StartFailure
from deploy_guard.emulator.rpc import ServiceHandler, generic_handler
from deploy_guard.errors import EmulatorError
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.emulator.run_admin")
State = run_v2.Condition.State
#: grpc.aio.ServicerContext (grpc ships no type stubs).
Ctx: TypeAlias = Any

#: Service fields a caller may write; everything else is output-only.
_WRITABLE = (
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


def _copy_writable(src: run_v2.Service, dst: run_v2.Service) -> None:
    for name in _WRITABLE:
        setattr(dst, name, getattr(src, name))


def _merge(src: run_v2.Service, dst: run_v2.Service, paths: list[str]) -> None:
    """Write ``src`` into ``dst``: the fields ``paths`` name, or every writable one.

    ``paths`` is the request's ``update_mask`` (``traffic``, ``template``,
    ``template.containers``, ``labels``...), with FieldMask semantics: a named
    message or list is replaced, not merged. A path that is not a writable
    field of Service is INVALID_ARGUMENT, and nothing changes.
    """
    if not paths:
        _copy_writable(src, dst)
        return
    mask = field_mask_pb2.FieldMask(paths=paths)
    for path in paths:
        top = path.split(".", 1)[0]
        if top not in _WRITABLE or not field_mask_pb2.FieldMask(paths=[path]).IsValidForDescriptor(
            run_v2.Service.pb().DESCRIPTOR
        ):
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"update_mask path {path!r} is not a writable field of Service; "
                f"use one of {', '.join(_WRITABLE)} (or a sub-field), or no mask to "
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


def _check_container(container: run_v2.Container) -> None:
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
class _Failure:
    """A reconciliation that failed for another reason than a revision not starting."""

    message: str
    status: str  # the operation's gRPC status name
    reason: Any  # run_v2.Condition.CommonReason


def _svc_key(service_id: str) -> str:
    return f"svc:{service_id}"


def _tag_key(service_id: str, tag: str) -> str:
    return f"tag:{service_id}:{tag}"


class RunAdmin:
    """The services and revisions of one project and region, and their processes."""

    def __init__(
        self,
        location: Location,
        router: RouterApi,
        logs: LogSink,
        operations: OperationStore,
        *,
        startup_timeout_s: float = 30.0,
        workdir: str | None = None,
        route_delay_s: float = 0.0,
    ) -> None:
        self.location = location
        self.router = router
        self.logs = logs
        self.operations = operations
        self.startup_timeout_s = startup_timeout_s
        #: Seconds between a new revision becoming Ready and the service routing to it
        #: (the service stays ``reconciling`` with its old ``traffic_statuses`` meanwhile).
        self.route_delay_s = route_delay_s
        self.workdir = workdir
        #: Refuse an UpdateService whose ``service.etag`` is stale (AIP-154). Whether
        #: Cloud Run itself does is unverified: tests turn it off to show the guard
        #: is safe either way.
        self.enforce_etag = True
        self.services: dict[str, st.ServiceEntry] = {}

    # -- lookups ---------------------------------------------------------------------------

    def _service(self, name: str) -> st.ServiceEntry:
        service_id = self.location.parse_service(name)
        entry = self.services.get(service_id)
        if entry is None:
            raise EmulatorError("NOT_FOUND", f"Resource '{name}' was not found")
        return entry

    def _revision(self, name: str) -> tuple[st.ServiceEntry, st.RevisionEntry]:
        service_id, revision_id = self.location.parse_revision(name)
        entry = self.services.get(service_id)
        rev = entry.revisions.get(revision_id) if entry else None
        if entry is None or rev is None:
            raise EmulatorError("NOT_FOUND", f"Resource '{name}' was not found")
        return entry, rev

    def pids(self) -> list[int]:
        """Process ids of every revision process still running (for tests and tools)."""
        return [
            rev.process.pid
            for entry in self.services.values()
            for rev in entry.revisions.values()
            if rev.process is not None and rev.process.running and rev.process.pid
        ]

    # -- Services --------------------------------------------------------------------------

    async def create_service(
        self, request: run_v2.CreateServiceRequest, _ctx: Ctx
    ) -> operations_pb2.Operation:
        self.location.check_parent(request.parent)
        if not request.service_id:
            raise EmulatorError("INVALID_ARGUMENT", "service_id is required")
        check_service_id(request.service_id)
        name = self.location.service_name(request.service_id)
        if request.service.name and request.service.name != name:
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"service.name {request.service.name!r} must be empty or {name!r}",
            )
        if request.service_id in self.services:
            raise EmulatorError("ALREADY_EXISTS", f"Resource '{name}' already exists.")
        return await self._create(name, request.service, request.validate_only, "CreateService")

    async def _create(
        self, name: str, spec: run_v2.Service, validate_only: bool, method: str
    ) -> operations_pb2.Operation:
        resource = run_v2.Service(name=name)
        _copy_writable(spec, resource)
        entry = st.ServiceEntry(resource=resource)
        plan = self._plan(entry, resource.template, resource.traffic, creating=True)
        if validate_only:
            return self.operations.done_now(resource)
        resource.uid = st.new_uid()
        resource.create_time = resource.update_time = st.now()
        resource.creator = resource.last_modifier = st.LOCAL_USER
        self.services[entry.service_id] = entry
        url = await self.router.open_endpoint(_svc_key(entry.service_id))
        resource.uri = url
        resource.urls = [url]
        self._audit(entry, method, spec)
        return await self._write(entry, plan)

    async def get_service(self, request: run_v2.GetServiceRequest, _ctx: Ctx) -> run_v2.Service:
        return run_v2.Service(self._service(request.name).resource)

    async def list_services(
        self, request: run_v2.ListServicesRequest, _ctx: Ctx
    ) -> run_v2.ListServicesResponse:
        self.location.check_parent(request.parent)
        entries = [e.resource for e in self.services.values()]
        chunk, token = page(entries, request.page_size, request.page_token)
        return run_v2.ListServicesResponse(
            services=[run_v2.Service(s) for s in chunk], next_page_token=token
        )

    async def update_service(
        self, request: run_v2.UpdateServiceRequest, _ctx: Ctx
    ) -> operations_pb2.Operation:
        spec = request.service
        service_id = self.location.parse_service(spec.name)
        entry = self.services.get(service_id)
        if entry is None:
            if request.allow_missing:
                return await self._create(spec.name, spec, request.validate_only, "UpdateService")
            raise EmulatorError("NOT_FOUND", f"Resource '{spec.name}' was not found")
        if self.enforce_etag and spec.etag and spec.etag != entry.resource.etag:
            # AIP-154: a write based on a stale read is refused, and nothing changes.
            raise EmulatorError(
                "ABORTED",
                f"etag {spec.etag} does not match the service's current etag "
                f"{entry.resource.etag} (it changed since it was read); re-read and retry",
            )
        merged = run_v2.Service(entry.resource)
        paths = list(request.update_mask.paths)
        _merge(spec, merged, paths)
        self._check_named_revision(entry, merged, paths)
        plan = self._plan(entry, merged.template, merged.traffic, creating=False)
        if request.validate_only:
            return self.operations.done_now(merged)
        _copy_writable(merged, entry.resource)
        entry.resource.last_modifier = st.LOCAL_USER
        entry.resource.update_time = st.now()
        self._audit(entry, "UpdateService", spec)
        return await self._write(entry, plan)

    @staticmethod
    def _check_named_revision(
        entry: st.ServiceEntry, merged: run_v2.Service, paths: list[str]
    ) -> None:
        """Refuse a write that re-sends a template naming an existing revision.

        Real Cloud Run answers 409 to a read-modify-write of a service deployed
        with ``--revision-suffix`` (``template.revision`` set) as soon as the
        write changes anything, inside the template or not: the template it
        re-sends would need a revision that already exists. A write that does
        not send the template (an ``update_mask`` without ``template``) is fine.
        """
        name = merged.template.revision
        sends_template = not paths or any(p.split(".", 1)[0] == "template" for p in paths)
        if not name or not sends_template or name not in entry.revisions:
            return
        wanted, current = run_v2.Service(), run_v2.Service()
        _copy_writable(merged, wanted)
        _copy_writable(entry.resource, current)
        changed = run_v2.Service.pb(wanted) != run_v2.Service.pb(current)
        if changed:
            raise EmulatorError(
                "ALREADY_EXISTS",
                f"Revision named '{name}' with different configuration already exists.",
            )

    async def delete_service(
        self, request: run_v2.DeleteServiceRequest, _ctx: Ctx
    ) -> operations_pb2.Operation:
        entry = self._service(request.name)
        if request.etag and request.etag != entry.resource.etag:
            raise EmulatorError("ABORTED", f"etag {request.etag} does not match; re-read")
        if request.validate_only:
            return self.operations.done_now(run_v2.Service(entry.resource))
        del self.services[entry.service_id]
        entry.deleted = True
        for task in entry.tasks:
            task.cancel()
        # Let them stop the processes they were starting before the rest is torn down.
        await asyncio.gather(*entry.tasks, return_exceptions=True)
        async with entry.lock:
            await self._close_endpoints(entry, keep_tags=set())
            await self.router.close_endpoint(_svc_key(entry.service_id))
            await self._stop_processes(entry.revisions.values())
        entry.resource.delete_time = st.now()
        self._audit(entry, "DeleteService", run_v2.Service(name=request.name))
        log.info("emulator_service_deleted", service=entry.service_id)
        return self.operations.done_now(run_v2.Service(entry.resource))

    # -- Revisions -------------------------------------------------------------------------

    async def get_revision(self, request: run_v2.GetRevisionRequest, _ctx: Ctx) -> run_v2.Revision:
        return run_v2.Revision(self._revision(request.name)[1].resource)

    async def list_revisions(
        self, request: run_v2.ListRevisionsRequest, _ctx: Ctx
    ) -> run_v2.ListRevisionsResponse:
        if request.parent.endswith("/services/-"):
            self.location.check_parent(request.parent.removesuffix("/services/-"))
            entries = list(self.services.values())
        else:
            entries = [self._service(request.parent)]
        revisions = [r.resource for e in entries for r in e.revisions.values()]
        revisions.sort(key=lambda r: r.create_time, reverse=True)  # newest first
        chunk, token = page(revisions, request.page_size, request.page_token)
        return run_v2.ListRevisionsResponse(
            revisions=[run_v2.Revision(r) for r in chunk], next_page_token=token
        )

    async def delete_revision(
        self, request: run_v2.DeleteRevisionRequest, _ctx: Ctx
    ) -> operations_pb2.Operation:
        entry, rev = self._revision(request.name)
        if request.etag and request.etag != rev.resource.etag:
            raise EmulatorError("ABORTED", f"etag {request.etag} does not match; re-read")
        if rev.resource.reconciling:
            raise EmulatorError(
                "FAILED_PRECONDITION",
                f"Revision '{rev.short}' is still being deployed; wait for its operation",
            )
        if rev.short in self._referenced(entry):
            raise EmulatorError(
                "FAILED_PRECONDITION",
                f"Revision '{rev.short}' is receiving traffic or is referenced by a tag; "
                "move its traffic and tags to another revision before deleting it",
            )
        if request.validate_only:
            return self.operations.done_now(run_v2.Revision(rev.resource))
        del entry.revisions[rev.short]
        entry.deleted_revisions.add(rev.short)
        if rev.process is not None:
            await rev.process.stop()
        rev.resource.delete_time = st.now()
        self._audit(entry, "DeleteRevision", run_v2.Revision(name=request.name), revisions=True)
        return self.operations.done_now(run_v2.Revision(rev.resource))

    def _referenced(self, entry: st.ServiceEntry) -> set[str]:
        """Revisions that the spec or the served split names (LATEST resolved)."""
        latest = short_name(entry.resource.latest_ready_revision)
        names: set[str] = set()
        for spec in entry.resource.traffic:
            names.add(latest if traffic.is_latest(spec) else spec.revision)
        for served in entry.resource.traffic_statuses:
            names.add(latest if traffic.is_latest(served) else served.revision)
        if not entry.resource.traffic:
            names.add(latest)
        return names - {""}

    # -- writes and reconciliation -----------------------------------------------------------

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
            _check_container(template.containers[0])
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
                revision_id = new_revision_id(entry.service_id, entry.next_revision_number)
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
            rev = st.RevisionEntry(st.revision_from_template(svc, svc.template, revision_id))
            entry.revisions[revision_id] = rev
            entry.next_revision_number += 1
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
        failure: StartFailure | _Failure | None = None
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
    def _broken_target(entry: st.ServiceEntry, generation: int) -> _Failure | None:
        """A traffic target naming a revision deleted after the write was accepted.

        Cloud Run accepts such a write and fails its operation with code 13
        "Revision '...' does not exist or is deleted"; the spec keeps the broken
        split while ``traffic_statuses`` keep serving the old one.
        """
        if generation != entry.resource.generation:
            return None  # a newer write decides what the spec is
        for target in entry.resource.traffic:
            if not traffic.is_latest(target) and target.revision not in entry.revisions:
                return _Failure(
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
        failure: StartFailure | _Failure | None,
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
        status = failure.status if isinstance(failure, _Failure) else "FAILED_PRECONDITION"
        reason = (
            failure.reason
            if isinstance(failure, _Failure)
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
        routing = isinstance(failure, _Failure)  # the traffic failed, not a revision
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

    async def _start(self, entry: st.ServiceEntry, rev: st.RevisionEntry) -> StartFailure | None:
        """Run the revision's container command and wait until it listens."""
        resource = rev.resource
        container = resource.containers[0]
        ref = self._ref(entry, rev.short)
        env: Mapping[str, str] = {e.name: e.value for e in container.env if e.name}
        rev.process = RevisionProcess(
            ref,
            [*container.command, *container.args],
            env,
            self.logs,
            cwd=container.working_dir or self.workdir,
        )
        failure = await rev.process.start(self._startup_timeout(resource))
        resource.reconciling = False
        resource.update_time = st.now()
        if failure is None:
            rev.ready = True
            resource.conditions = [
                st.condition("Ready", State.CONDITION_SUCCEEDED),
                st.condition("ContainerHealthy", State.CONDITION_SUCCEEDED),
                st.condition("ResourcesAvailable", State.CONDITION_SUCCEEDED),
            ]
            log.info("emulator_revision_ready", revision=rev.short, port=rev.process.port)
            watcher = asyncio.get_running_loop().create_task(self._watch(entry, rev))
            entry.tasks.add(watcher)
            watcher.add_done_callback(entry.tasks.discard)
            return None
        reasons: dict[str, Any] = {
            "revision_reason": run_v2.Condition.RevisionReason.HEALTH_CHECK_CONTAINER_ERROR
        }
        if failure.reason == "HealthCheckFailed":
            reasons = {"reason": run_v2.Condition.CommonReason.PROGRESS_DEADLINE_EXCEEDED}
        resource.conditions = [
            st.condition("Ready", State.CONDITION_FAILED, failure.message, **reasons),
            st.condition("ContainerHealthy", State.CONDITION_FAILED, failure.message, **reasons),
            st.condition("ResourcesAvailable", State.CONDITION_SUCCEEDED),
        ]
        log.warning("emulator_revision_failed", revision=rev.short, reason=failure.reason)
        return failure

    async def _watch(self, entry: st.ServiceEntry, rev: st.RevisionEntry) -> None:
        """Notice a Ready revision's process dying, as Cloud Run's front end would.

        The process is not restarted (Cloud Run would start a new instance).
        The revision keeps its Ready condition, as on Cloud Run, but its share
        of traffic is answered 503 (logged and counted against it) and a
        ``Container called exit(N).`` entry goes to its system log.
        """
        assert rev.process is not None
        code = await rev.process.died()
        if code is None or entry.deleted:
            return
        message = (
            f"Container called exit({code})."
            if code >= 0
            else f"Container terminated on signal {-code}."
        )
        self.logs.system(rev.process.ref, "WARNING", message, st.now())
        log.warning("emulator_revision_process_died", revision=rev.short, status=code)
        async with entry.lock:
            if not entry.deleted:
                self._set_routes(entry, entry.resource.traffic_statuses)

    def _startup_timeout(self, revision: run_v2.Revision) -> float:
        """How long the revision gets to listen on $PORT.

        Its first container's ``startup_probe`` decides, as on Cloud Run
        (``initial_delay_seconds + failure_threshold * period_seconds``, with
        Cloud Run's defaults 3 and 10 s); else the emulator's
        ``--startup-timeout``. Only "the port accepts a connection" is checked,
        whatever the probe's kind. The revision's ``timeout`` is its *request*
        timeout and plays no part here, as on Cloud Run.
        """
        container = revision.containers[0]
        if "startup_probe" in container:
            probe = container.startup_probe
            return float(
                probe.initial_delay_seconds
                + (probe.failure_threshold or 3) * (probe.period_seconds or 10)
            )
        return self.startup_timeout_s

    def _ref(self, entry: st.ServiceEntry, revision: str) -> RevisionRef:
        return RevisionRef(
            project=self.location.project,
            location=self.location.region,
            service=entry.service_id,
            revision=revision,
            configuration=entry.service_id,
        )

    def _route(self, entry: st.ServiceEntry, revision: str, percent: int) -> Route:
        """``percent`` of an endpoint's traffic to ``revision`` (503s if it is not serving)."""
        rev = entry.revisions.get(revision)
        ref = self._ref(entry, revision) if rev is not None else None
        if rev is None or not rev.ready or rev.process is None or not rev.process.running:
            return Route(None, percent, ref)
        backend = Backend(
            rev.process.ref, rev.process.host, rev.process.port, request_timeout_s(rev.resource)
        )
        return Route(backend, percent, ref)

    def _set_routes(self, entry: st.ServiceEntry, served: Any) -> dict[str, str]:
        """Point the service URL and each tag URL at what ``served`` says; tag -> revision."""
        latest = short_name(entry.resource.latest_ready_revision)
        split = traffic.serving_split(served, latest)
        self.router.set_routes(
            _svc_key(entry.service_id),
            [self._route(entry, r, pct) for r, pct in split.items()],
        )
        tags = traffic.tag_targets(served, latest)
        for tag, revision in tags.items():
            self.router.set_routes(
                _tag_key(entry.service_id, tag), [self._route(entry, revision, 100)]
            )
        return tags

    async def _apply_traffic(self, entry: st.ServiceEntry) -> None:
        """Serve the current spec: routes, tag endpoints, ``traffic_statuses``."""
        svc = entry.resource
        served = traffic.statuses(svc.traffic)
        tags = self._set_routes(entry, served)
        urls: dict[str, str] = {}
        for tag in tags:
            urls[tag] = await self.router.open_endpoint(_tag_key(entry.service_id, tag))
        await self._close_endpoints(entry, keep_tags=set(tags))
        entry.open_tags = set(tags)
        for status in served:
            if status.tag:
                status.uri = urls[status.tag]
        svc.traffic_statuses = served

    async def _close_endpoints(self, entry: st.ServiceEntry, keep_tags: set[str]) -> None:
        for tag in entry.open_tags - keep_tags:
            await self.router.close_endpoint(_tag_key(entry.service_id, tag))

    async def _stop_processes(self, revisions: Any) -> None:
        await asyncio.gather(
            *(r.process.stop() for r in revisions if r.process is not None),
            return_exceptions=True,
        )

    async def close(self) -> None:
        """Stop every revision process and pending reconciliation (emulator shutdown)."""
        entries = list(self.services.values())
        for entry in entries:
            for task in entry.tasks:
                task.cancel()
        for entry in entries:
            await asyncio.gather(*entry.tasks, return_exceptions=True)
            await self._stop_processes(entry.revisions.values())

    def _audit(
        self, entry: st.ServiceEntry, method: str, request: Any, *, revisions: bool = False
    ) -> None:
        api = "Revisions" if revisions else "Services"
        try:
            self.logs.audit(
                project=self.location.project,
                location=self.location.region,
                service=entry.service_id,
                method_name=f"google.cloud.run.v2.{api}.{method}",
                resource_name=request.name or entry.resource.name,
                request=json_format.MessageToDict(type(request).pb(request)),
                when=st.now(),
            )
        except Exception:  # an audit sink bug must not fail the write
            log.exception("emulator_audit_failed", service=entry.service_id)

    # -- gRPC ----------------------------------------------------------------------------------

    def handlers(self) -> list[ServiceHandler]:
        """``google.cloud.run.v2.Services`` and ``.Revisions`` as generic handlers."""
        op = operations_pb2.Operation
        r = run_v2
        return [
            generic_handler(
                "google.cloud.run.v2.Services",
                [
                    ("CreateService", self.create_service, r.CreateServiceRequest, op),
                    ("GetService", self.get_service, r.GetServiceRequest, r.Service),
                    (
                        "ListServices",
                        self.list_services,
                        r.ListServicesRequest,
                        r.ListServicesResponse,
                    ),
                    ("UpdateService", self.update_service, r.UpdateServiceRequest, op),
                    ("DeleteService", self.delete_service, r.DeleteServiceRequest, op),
                ],
            ),
            generic_handler(
                "google.cloud.run.v2.Revisions",
                [
                    ("GetRevision", self.get_revision, r.GetRevisionRequest, r.Revision),
                    (
                        "ListRevisions",
                        self.list_revisions,
                        r.ListRevisionsRequest,
                        r.ListRevisionsResponse,
                    ),
                    ("DeleteRevision", self.delete_revision, r.DeleteRevisionRequest, op),
                ],
            ),
        ]
