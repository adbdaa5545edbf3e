"""Cloud Run Admin API v1 (Knative resources) over HTTP/JSON, on the v2 state.

What ``gcloud run`` calls (read from gcloud's ``serverless_operations.py``,
``global_methods.py`` and ``op_pollers.py``), all served here:

- ``apis/serving.knative.dev/v1/namespaces/P/services[/S]``: list, get, create
  (POST), replace (PUT), delete; ``.../revisions[/R]``: list (with
  ``labelSelector``: gcloud finds a deploy's revision by its nonce label),
  get, delete; ``.../routes[/S]`` and ``.../configurations[/S]``: list, get.
- ``v1/projects/P/locations/L/services``: the list ``gcloud run services list``
  reads (``L`` is ``-`` for every region).
- ``v1/projects/P/locations/R/operations/ID[:wait]``: a write's answer carries
  the annotation ``run.googleapis.com/operation-id`` and gcloud waits on that
  operation, then reads the Service in its ``response`` (as v1 JSON: gcloud
  parses it as a v1 Service).
- ``v1/projects/P`` (Cloud Resource Manager): ``gcloud run services replace``
  reads the project's number to compare it with the YAML's namespace. The
  emulator's project has a made-up number (:func:`project_number`), accepted as
  a namespace like the project id.
- ``...services/S:testIamPermissions``, ``:getIamPolicy``, ``:setIamPolicy``:
  gcloud asks before it offers ``--allow-unauthenticated``. No permission is
  granted (the emulator has no identities, and its URLs need no token), and a
  policy set is only stored and read back.

Every write becomes the v2 request and runs down the v2 path of
:class:`~deploy_guard.emulator.run_admin.RunAdmin` (the same validation,
operation and reconciliation), so a v1 write and a v2 write cannot disagree.
Its audit entry is the v1 one Cloud Run writes for ``gcloud run`` (one per
call, :mod:`.v1_audit`), and the v2 path writes none for it. A replace sends
the template only when it changed (see :mod:`.knative_in`);
``metadata.resourceVersion`` is the etag the v2 path checks, so a write based
on a stale read is refused with 409 ABORTED.

The regional host gcloud derives (``REGION-127.0.0.1``) names the region: a
request for another region than the emulator's is NOT_FOUND, like one for
another project.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import duration_pb2

from deploy_guard.emulator.audit import caller_of
from deploy_guard.emulator.names import project_number, short_name
from deploy_guard.emulator.paging import page
from deploy_guard.emulator.rest import knative_in, knative_out
from deploy_guard.emulator.rest.errors import invalid, json_response
from deploy_guard.emulator.rest.http import HttpContext, read_json
from deploy_guard.emulator.rest.selector import parse_selector
from deploy_guard.emulator.rest.v1_audit import V1Call, audited, stale_response
from deploy_guard.emulator.run_admin import RunAdmin
from deploy_guard.errors import EmulatorError

V1 = f"/apis/{knative_out.API_VERSION}/namespaces/{{ns}}"
ONE = "/v1/projects/{project}/locations/{location}"
#: How long one ``operations/ID:wait`` may block (gcloud asks for 30 s).
MAX_WAIT_S = 60.0
#: The ``@type`` of a finished operation's ``response``: a v1 Service, as gcloud parses it.
_V1_SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v1.Service"


def _page_args(request: web.Request) -> tuple[int, str]:
    limit = request.query.get("limit") or request.query.get("pageSize") or "0"
    if not limit.isdigit():
        raise invalid(f"limit {limit!r} is not a non-negative integer")
    token = request.query.get("continue") or request.query.get("pageToken") or ""
    return int(limit), token


class RunV1:
    """The v1 routes, over one :class:`RunAdmin` (``front_host``: the front's own host)."""

    def __init__(self, admin: RunAdmin, front_host: str) -> None:
        self.admin = admin
        self.location = admin.location
        self.front_host = front_host
        self._policies: dict[str, dict[str, Any]] = {}

    # -- names and checks ------------------------------------------------------------------

    def _regional(self, request: web.Request) -> None:
        """Refuse a namespaced call made for another region than the emulator's."""
        host = request.url.host or ""
        suffix = f"-{self.front_host}"
        region = host[: -len(suffix)] if host.endswith(suffix) else ""
        if region and region != self.location.region:
            raise EmulatorError(
                "NOT_FOUND",
                f"location {region!r} not found: this emulator serves region "
                f"{self.location.region!r} (start it with --region {region}, or pass "
                f"--region {self.location.region})",
            )

    def _namespace(self, request: web.Request) -> str:
        self._regional(request)
        namespace = request.match_info["ns"]
        if namespace not in (self.location.project, project_number(self.location.project)):
            raise EmulatorError(
                "NOT_FOUND",
                f"Namespace {namespace!r} not found: this emulator serves project "
                f"{self.location.project!r} (start it with --project {namespace})",
            )
        return namespace

    def _one_platform(self, request: web.Request, *, any_region: bool = False) -> None:
        project, location = request.match_info["project"], request.match_info["location"]
        if project != self.location.project:
            raise EmulatorError(
                "NOT_FOUND",
                f"project {project!r} not found: this emulator serves project "
                f"{self.location.project!r}",
            )
        if location != self.location.region and not (any_region and location == "-"):
            raise EmulatorError(
                "NOT_FOUND",
                f"location {location!r} not found: this emulator serves region "
                f"{self.location.region!r}",
            )

    def _service_v1(
        self, svc: run_v2.Service, op: operations_pb2.Operation | None = None
    ) -> dict[str, Any]:
        """v1 JSON of ``svc``; a write's answer names its operation, which gcloud waits on.

        A read leaves the operation-id annotation out: the service's last write may
        have been a v2 one (a rollback by the guard) whose operation this front
        never saw, and an old id would send a caller to wait on the wrong write.
        """
        return knative_out.service(svc, self.location, short_name(op.name) if op else "")

    async def _get(self, service_id: str) -> run_v2.Service:
        name = self.location.service_name(service_id)
        return await self.admin.get_service(run_v2.GetServiceRequest(name=name), HttpContext())

    def _services(self) -> list[run_v2.Service]:
        return [run_v2.Service(e.resource) for e in self.admin.services.values()]

    def _find_revision(self, revision_id: str) -> tuple[str, run_v2.Revision]:
        for service_id, entry in self.admin.services.items():
            rev = entry.revisions.get(revision_id)
            if rev is not None:
                return service_id, run_v2.Revision(rev.resource)
        raise EmulatorError(
            "NOT_FOUND",
            f"Resource 'namespaces/{self.location.project}/revisions/{revision_id}' was not found",
        )

    @staticmethod
    def _selected(request: web.Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        matches = parse_selector(request.query.get("labelSelector", ""))
        return [i for i in items if matches(i["metadata"].get("labels", {}))]

    def _listing(
        self, request: web.Request, kind: str, items: list[dict[str, Any]]
    ) -> web.Response:
        limit, token = _page_args(request)
        chunk, next_token = page(self._selected(request, items), limit, token)
        return json_response(knative_out.listing(kind, chunk, next_token))

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        value = request.query.get("dryRun", "")
        if value not in ("", "all"):
            raise invalid(f"dryRun {value!r} is not supported: use dryRun=all")
        return value == "all"

    def _call(
        self,
        request: web.Request,
        method: str,
        resource_id: str,
        body: Any = None,
        *,
        service: str = "",
    ) -> V1Call:
        """The audit record of one v1 write (the caller from its headers)."""
        return V1Call(
            method=method,
            resource_id=resource_id,
            service=service or resource_id,
            request=body if isinstance(body, dict) else None,
            caller=caller_of(HttpContext(request), self.location.project),
            dry_run=self._dry_run(request),
        )

    def _from_operation(self, op: operations_pb2.Operation) -> dict[str, Any]:
        svc = run_v2.Service.deserialize(op.response.value)
        return knative_out.service(svc, self.location, short_name(op.name))

    # -- services --------------------------------------------------------------------------

    async def list_services(self, request: web.Request) -> web.Response:
        self._namespace(request)
        return self._listing(request, "Service", [self._service_v1(s) for s in self._services()])

    async def list_all_regions(self, request: web.Request) -> web.Response:
        """``GET v1/projects/P/locations/-/services``: ``gcloud run services list``."""
        self._one_platform(request, any_region=True)
        return self._listing(request, "Service", [self._service_v1(s) for s in self._services()])

    async def get_service(self, request: web.Request) -> web.Response:
        self._namespace(request)
        return json_response(self._service_v1(await self._get(request.match_info["name"])))

    async def create_service(self, request: web.Request) -> web.Response:
        self._namespace(request)
        body = await read_json(request)
        name = _body_name(body)
        if not name:  # nothing to file an entry under: refused as the parser words it
            knative_in.parse_service(body, self.location, project_number(self.location.project))
        call = self._call(request, "CreateService", name, body)
        with audited(self.admin.logs, self.location, call):
            write = knative_in.parse_service(
                body, self.location, project_number(self.location.project)
            )
            full_name = self.location.service_name(write.name)
            spec = knative_in.service_spec(write, full_name, None)
            op = await self.admin.create_service(
                run_v2.CreateServiceRequest(
                    parent=self.location.parent,
                    service=spec,
                    service_id=write.name,
                    validate_only=call.dry_run,
                ),
                HttpContext(request),
            )
            if call.dry_run:
                return json_response(self._from_operation(op))
            answer = self._service_v1(await self._get(write.name), op)
            call.response = stale_response(answer, None)
        return json_response(answer)

    async def replace_service(self, request: web.Request) -> web.Response:
        self._namespace(request)
        service_id = request.match_info["name"]
        body = await read_json(request)
        call = self._call(request, "ReplaceService", service_id, body)
        with audited(self.admin.logs, self.location, call):
            write = knative_in.parse_service(
                body, self.location, project_number(self.location.project)
            )
            if write.name != service_id:
                raise invalid(
                    f"metadata.name {write.name!r} does not match the service named in the "
                    f"request ({service_id!r})"
                )
            current = await self._get(service_id)  # NOT_FOUND before anything else
            spec = knative_in.service_spec(write, current.name, current)
            paths = ["labels", "annotations", "traffic"]
            if run_v2.RevisionTemplate.pb(spec.template) != run_v2.RevisionTemplate.pb(
                current.template
            ):
                paths.append("template")
            op = await self.admin.update_service(
                run_v2.UpdateServiceRequest(
                    service=spec, update_mask={"paths": paths}, validate_only=call.dry_run
                ),
                HttpContext(request),
            )
            if call.dry_run:
                return json_response(self._from_operation(op))
            answer = self._service_v1(await self._get(service_id), op)
            call.response = stale_response(answer, self._service_v1(current))
        return json_response(answer)

    async def delete_service(self, request: web.Request) -> web.Response:
        self._namespace(request)
        service_id = request.match_info["name"]
        with audited(
            self.admin.logs, self.location, self._call(request, "DeleteService", service_id)
        ):
            await self.admin.delete_service(
                run_v2.DeleteServiceRequest(name=self.location.service_name(service_id)),
                HttpContext(request),
            )
        self._policies.pop(service_id, None)
        return json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Success",
                "details": {"name": service_id, "kind": "services"},
            }
        )

    # -- revisions, configurations, routes -------------------------------------------------

    def _revisions(self) -> list[dict[str, Any]]:
        out = []
        for svc in self._services():
            serving = knative_out.serving_revisions(svc)
            entry = self.admin.services[short_name(svc.name)]
            for rev in entry.revisions.values():
                out.append(
                    (
                        rev.resource.create_time,
                        knative_out.revision(run_v2.Revision(rev.resource), self.location, serving),
                    )
                )
        out.sort(key=lambda pair: pair[0], reverse=True)  # newest first, as v2 lists them
        return [item for _, item in out]

    async def list_revisions(self, request: web.Request) -> web.Response:
        self._namespace(request)
        return self._listing(request, "Revision", self._revisions())

    async def get_revision(self, request: web.Request) -> web.Response:
        self._namespace(request)
        service_id, rev = self._find_revision(request.match_info["name"])
        serving = knative_out.serving_revisions(await self._get(service_id))
        return json_response(knative_out.revision(rev, self.location, serving))

    async def delete_revision(self, request: web.Request) -> web.Response:
        self._namespace(request)
        service_id, rev = self._find_revision(request.match_info["name"])
        call = self._call(request, "DeleteRevision", short_name(rev.name), service=service_id)
        with audited(self.admin.logs, self.location, call):
            await self.admin.delete_revision(
                run_v2.DeleteRevisionRequest(name=rev.name), HttpContext(request)
            )
        return json_response(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Success",
                "details": {"name": short_name(rev.name), "kind": "revisions"},
            }
        )

    async def list_configurations(self, request: web.Request) -> web.Response:
        self._namespace(request)
        items = [knative_out.configuration(s, self.location) for s in self._services()]
        return self._listing(request, "Configuration", items)

    async def get_configuration(self, request: web.Request) -> web.Response:
        self._namespace(request)
        svc = await self._get(request.match_info["name"])
        return json_response(knative_out.configuration(svc, self.location))

    async def list_routes(self, request: web.Request) -> web.Response:
        self._namespace(request)
        return self._listing(
            request, "Route", [knative_out.route(s, self.location) for s in self._services()]
        )

    async def get_route(self, request: web.Request) -> web.Response:
        self._namespace(request)
        svc = await self._get(request.match_info["name"])
        return json_response(knative_out.route(svc, self.location))

    # -- operations ------------------------------------------------------------------------

    def _operation_v1(self, op: operations_pb2.Operation) -> dict[str, Any]:
        out: dict[str, Any] = {"name": op.name, "done": op.done}
        if op.HasField("error"):
            out["error"] = {"code": op.error.code, "message": op.error.message}
        elif op.done and op.HasField("response"):
            out["response"] = {"@type": _V1_SERVICE_TYPE, **self._from_operation(op)}
        return out

    async def operation(self, request: web.Request) -> web.Response:
        """``GET operations/ID`` and ``POST operations/ID:wait`` (``{"timeout": "30s"}``)."""
        self._one_platform(request)
        op_id, _, verb = request.match_info["target"].partition(":")
        name = f"{self.location.parent}/operations/{op_id}"
        store = self.admin.operations
        if not verb and request.method == "GET":
            return json_response(self._operation_v1(store.get(name)))
        if verb != "wait" or request.method != "POST":
            raise EmulatorError("NOT_FOUND", f"no method {request.method} operations/{op_id}")
        timeout = _duration_s((await read_json(request)).get("timeout"), MAX_WAIT_S)
        waited = await store.wait_operation(
            operations_pb2.WaitOperationRequest(
                name=name, timeout=duration_pb2.Duration(seconds=int(timeout))
            ),
            HttpContext(),
        )
        return json_response(self._operation_v1(waited))

    # -- Cloud Resource Manager ------------------------------------------------------------

    async def project(self, request: web.Request) -> web.Response:
        """``GET v1/projects/P``: the emulator's one project, with its stand-in number."""
        project = request.match_info["project"]
        if project not in (self.location.project, project_number(self.location.project)):
            raise EmulatorError(
                "PERMISSION_DENIED",
                f"Permission denied on resource project {project} (this emulator serves "
                f"project {self.location.project!r})",
            )
        return json_response(
            {
                "projectId": self.location.project,
                "projectNumber": project_number(self.location.project),
                "name": self.location.project,
                "lifecycleState": "ACTIVE",
            }
        )

    # -- IAM -------------------------------------------------------------------------------

    async def service_method(self, request: web.Request) -> web.Response:
        """``services/S:testIamPermissions``, ``:getIamPolicy``, ``:setIamPolicy``."""
        self._one_platform(request)
        service_id, _, verb = request.match_info["target"].partition(":")
        if verb == "testIamPermissions" and request.method == "POST":
            # gcloud asks before it creates a service, so the service need not exist yet.
            await read_json(request)
            return json_response({})  # no identities here: no permission is granted
        await self._get(service_id)  # NOT_FOUND for a service that does not exist
        if verb == "getIamPolicy" and request.method in ("GET", "POST"):
            return json_response(self._policies.get(service_id, {"etag": "ACAB"}))
        if verb == "setIamPolicy" and request.method == "POST":
            body = await read_json(request)
            policy = dict(body.get("policy") or {})
            policy["etag"] = f"BwY{len(self._policies) + 1:05d}="
            self._policies[service_id] = policy
            return json_response(policy)
        raise EmulatorError(
            "UNIMPLEMENTED", f"{request.method} services/{service_id}:{verb} is not emulated"
        )

    # -- routes ----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{V1}/services", self.list_services),
            web.post(f"{V1}/services", self.create_service),
            web.get(f"{V1}/services/{{name}}", self.get_service),
            web.put(f"{V1}/services/{{name}}", self.replace_service),
            web.delete(f"{V1}/services/{{name}}", self.delete_service),
            web.get(f"{V1}/revisions", self.list_revisions),
            web.get(f"{V1}/revisions/{{name}}", self.get_revision),
            web.delete(f"{V1}/revisions/{{name}}", self.delete_revision),
            web.get(f"{V1}/configurations", self.list_configurations),
            web.get(f"{V1}/configurations/{{name}}", self.get_configuration),
            web.get(f"{V1}/routes", self.list_routes),
            web.get(f"{V1}/routes/{{name}}", self.get_route),
            web.get("/v1/projects/{project}", self.project),
            web.get(f"{ONE}/services", self.list_all_regions),
            web.route("*", f"{ONE}/services/{{target}}", self.service_method),
            web.route("*", f"{ONE}/operations/{{target}}", self.operation),
        ]


def _body_name(body: Any) -> str:
    """``metadata.name`` of a v1 body, if it has a usable one ("" otherwise)."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _duration_s(value: Any, cap: float) -> float:
    """``"30s"`` -> 30.0, at most ``cap`` (``cap`` when not given)."""
    if value is None:
        return cap
    text = str(value)
    try:
        seconds = float(text.removesuffix("s"))
    except ValueError as exc:
        raise invalid(f'timeout {text!r} is not a duration such as "30s"') from exc
    if seconds < 0:
        raise invalid(f"timeout {text!r} must not be negative")
    return min(seconds, cap)
