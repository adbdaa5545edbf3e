"""Cloud Run Admin API v2 (``google.cloud.run.v2.Services`` and ``.Revisions``).

Writes return a long-running operation, as on Cloud Run; the write path
(validation, reconciliation, operations) is
:mod:`deploy_guard.emulator.run_reconcile`; the revisions' processes and
routes are :mod:`deploy_guard.emulator.run_revisions`. This module is the
gRPC servicer on top of them: the RPCs, lookups, deletes and audit entries.

Every request is validated completely before anything changes, so a refused
request leaves the state exactly as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterator
from typing import Any, TypeAlias

from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import json_format

from deploy_guard.emulator import state as st
from deploy_guard.emulator import traffic
from deploy_guard.emulator.audit import Caller, caller_of, record_admin_activity
from deploy_guard.emulator.names import check_service_id, short_name
from deploy_guard.emulator.paging import page
from deploy_guard.emulator.rpc import ServiceHandler, generic_handler, status_code
from deploy_guard.emulator.run_reconcile import Reconciler, copy_writable, merge
from deploy_guard.emulator.run_revisions import log, svc_key
from deploy_guard.errors import EmulatorError

#: grpc.aio.ServicerContext (grpc ships no type stubs).
Ctx: TypeAlias = Any


class RunAdmin(Reconciler):
    """The services and revisions of one project and region, and their processes."""

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

    # -- Services --------------------------------------------------------------------------

    async def create_service(
        self, request: run_v2.CreateServiceRequest, ctx: Ctx
    ) -> operations_pb2.Operation:
        self.location.check_parent(request.parent)
        if not request.service_id:
            raise EmulatorError("INVALID_ARGUMENT", "service_id is required")
        check_service_id(request.service_id)
        caller = caller_of(ctx, self.location.project)
        with self._refusal_audited("CreateService", request, request.service_id, caller):
            name = self.location.service_name(request.service_id)
            if request.service.name and request.service.name != name:
                raise EmulatorError(
                    "INVALID_ARGUMENT",
                    f"service.name {request.service.name!r} must be empty or {name!r}",
                )
            if request.service_id in self.services:
                raise EmulatorError("ALREADY_EXISTS", f"Resource '{name}' already exists.")
            return await self._create(name, request, caller, "CreateService")

    async def _create(
        self, name: str, request: Any, caller: Caller, method: str
    ) -> operations_pb2.Operation:
        """Create the service ``request.service`` describes (CreateService, or an
        UpdateService with ``allow_missing``)."""
        spec: run_v2.Service = request.service
        when = st.now()
        resource = run_v2.Service(name=name)
        copy_writable(spec, resource)
        entry = st.ServiceEntry(resource=resource)
        plan = self._plan(entry, resource.template, resource.traffic, creating=True)
        if request.validate_only:
            return self.operations.done_now(resource)
        resource.uid = st.new_uid()
        resource.create_time = resource.update_time = st.now()
        resource.creator = resource.last_modifier = caller.principal
        self.services[entry.service_id] = entry
        url = await self.router.open_endpoint(svc_key(entry.service_id))
        resource.uri = url
        resource.urls = [url]
        op = await self._write(entry, plan)
        self._audit(entry.service_id, method, request, caller, when, op=op)
        return op

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
        self, request: run_v2.UpdateServiceRequest, ctx: Ctx
    ) -> operations_pb2.Operation:
        spec = request.service
        service_id = self.location.parse_service(spec.name)
        caller = caller_of(ctx, self.location.project)
        with self._refusal_audited("UpdateService", request, service_id, caller):
            return await self._update(service_id, request, caller)

    async def _update(
        self, service_id: str, request: run_v2.UpdateServiceRequest, caller: Caller
    ) -> operations_pb2.Operation:
        spec = request.service
        when = st.now()
        entry = self.services.get(service_id)
        if entry is None:
            if request.allow_missing:
                return await self._create(spec.name, request, caller, "UpdateService")
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
        merge(spec, merged, paths)
        self._check_named_revision(entry, merged, paths)
        plan = self._plan(entry, merged.template, merged.traffic, creating=False)
        if request.validate_only:
            return self.operations.done_now(merged)
        copy_writable(merged, entry.resource)
        entry.resource.last_modifier = caller.principal
        entry.resource.update_time = st.now()
        op = await self._write(entry, plan)
        self._audit(service_id, "UpdateService", request, caller, when, op=op)
        return op

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
        copy_writable(merged, wanted)
        copy_writable(entry.resource, current)
        changed = run_v2.Service.pb(wanted) != run_v2.Service.pb(current)
        if changed:
            raise EmulatorError(
                "ALREADY_EXISTS",
                f"Revision named '{name}' with different configuration already exists.",
            )

    async def delete_service(
        self, request: run_v2.DeleteServiceRequest, ctx: Ctx
    ) -> operations_pb2.Operation:
        caller = caller_of(ctx, self.location.project)
        service_id = self.location.parse_service(request.name)
        with self._refusal_audited("DeleteService", request, service_id, caller):
            return await self._delete(request, caller)

    async def _delete(
        self, request: run_v2.DeleteServiceRequest, caller: Caller
    ) -> operations_pb2.Operation:
        when = st.now()
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
            await self.router.close_endpoint(svc_key(entry.service_id))
            await self._stop_processes(entry.revisions.values())
        entry.resource.delete_time = st.now()
        log.info("emulator_service_deleted", service=entry.service_id)
        op = self.operations.done_now(run_v2.Service(entry.resource))
        self._audit(entry.service_id, "DeleteService", request, caller, when, op=op)
        return op

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
        self, request: run_v2.DeleteRevisionRequest, ctx: Ctx
    ) -> operations_pb2.Operation:
        when = st.now()
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
        op = self.operations.done_now(run_v2.Revision(rev.resource))
        caller = caller_of(ctx, self.location.project)
        self._audit(entry.service_id, "DeleteRevision", request, caller, when, op=op)
        return op

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

    # -- audit -----------------------------------------------------------------------------

    def _audit(
        self,
        service_id: str,
        method: str,
        request: Any,
        caller: Caller,
        when: Any,
        *,
        op: operations_pb2.Operation,
    ) -> None:
        """The call's Admin Activity entry; a long-running one gets a second at its end."""
        api = "Revisions" if method == "DeleteRevision" else "Services"
        record = functools.partial(
            record_admin_activity,
            self.logs,
            project=self.location.project,
            location=self.location.region,
            service=service_id,
            method_name=f"google.cloud.run.v2.{api}.{method}",
            resource_name=getattr(request, "name", "")
            or getattr(request.service, "name", "")
            or self.location.service_name(service_id),
            request=_as_json(request),
            caller=caller,
        )

        def outcome(done: operations_pb2.Operation) -> dict[str, Any]:
            if done.HasField("error"):
                return {"status": (done.error.code, done.error.message)}
            kind = run_v2.Revision if api == "Revisions" else run_v2.Service
            return {"response": _as_json(kind.deserialize(done.response.value))}

        operation = {"id": op.name, "producer": "run.googleapis.com", "first": True}
        if op.done:
            record(when=when, operation={**operation, "last": True}, **outcome(op))
            return
        record(
            when=when,
            operation=operation,
            response=_as_json(run_v2.Service.deserialize(op.metadata.value)),
        )
        self.operations.when_done(
            op.name,
            lambda done: record(
                when=st.now(),
                operation={**operation, "first": False, "last": True},
                **outcome(done),
            ),
        )

    @contextlib.contextmanager
    def _refusal_audited(
        self, method: str, request: Any, service_id: str, caller: Caller
    ) -> Iterator[None]:
        """A call refused with an error still leaves its entry, with the ``status``."""
        when = st.now()
        try:
            yield
        except EmulatorError as exc:
            if not getattr(request, "validate_only", False):
                record_admin_activity(
                    self.logs,
                    project=self.location.project,
                    location=self.location.region,
                    service=service_id,
                    method_name=f"google.cloud.run.v2.Services.{method}",
                    resource_name=self.location.service_name(service_id),
                    request=_as_json(request),
                    status=(status_code(exc.status).value[0], exc.message),
                    caller=caller,
                    when=when,
                )
            raise

    # -- gRPC ------------------------------------------------------------------------------

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


def _as_json(message: Any) -> dict[str, Any]:
    """A proto-plus message as its audit entry's JSON, ``@type`` first (camelCase)."""
    body = json_format.MessageToDict(type(message).pb(message))
    return {"@type": f"type.googleapis.com/{type(message).pb().DESCRIPTOR.full_name}", **body}


__all__ = ["Ctx", "RunAdmin"]
