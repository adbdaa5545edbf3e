"""Admin Activity audit entries, shaped as Cloud Run writes them for its Admin API's writes.

Why the emulator writes them: ``deploy-guard check --from-audit-event`` starts
from Cloud Run's audit log (an Eventarc trigger on every deploy, wherever it came
from), so a test must be able to go deploy -> audit entry -> guard with the
entries the emulator wrote, and those must look like Cloud Run's: the guard
reads the real ones. Every service create, update, replace and delete (and
revision delete) the emulator serves writes one here, into its log store, so
``ListLogEntries`` (and ``gcloud logging read``) list them.

The shape, from a real ``google.cloud.run.v1.Services.ReplaceService`` entry (one
success and one failure published in nakamasato/cloud-run-slack-bot,
``docs/auditing.md``) and Google's CloudEvents test data
(googleapis/google-cloudevents, ``testdata/google/events/cloud/audit/v1``):

- ``logName`` ``projects/P/logs/cloudaudit.googleapis.com%2Factivity``; severity
  NOTICE, ERROR for a refused call (then ``protoPayload.status`` holds the
  ``google.rpc.Status``; a successful call has no ``status`` at all);
- ``resource`` ``cloud_run_revision`` with labels ``project_id``, ``location``,
  ``service_name``, and ``revision_name`` and ``configuration_name`` empty (not
  ``cloud_run_service``: that is not what Cloud Run files them under);
- ``protoPayload``: ``@type`` ``type.googleapis.com/google.cloud.audit.AuditLog``,
  ``serviceName`` ``run.googleapis.com``, ``methodName``, ``resourceName``,
  ``authenticationInfo.principalEmail`` (the caller), ``authorizationInfo``
  (``run.services.update`` ... granted, ``ADMIN_WRITE``), ``requestMetadata``
  (``callerIp``, ``callerSuppliedUserAgent``, ``requestAttributes.time``),
  ``resourceLocation.currentLocations``, ``request`` (with its ``@type``) and
  ``response`` (the service as written, annotations included).

v1 and v2 differ in the names: v1 (what ``gcloud run deploy`` calls) is
``google.cloud.run.v1.Services.ReplaceService`` / ``CreateService`` with
``resourceName`` ``namespaces/P/services/S`` and a Knative-shaped request and
response (confirmed by the real entry above); v2 (client libraries, Terraform)
is ``google.cloud.run.v2.Services.UpdateService`` / ``CreateService`` with
``resourceName`` ``projects/P/locations/R/services/S`` (v2 names appear in
third-party code only: unconfirmed). v2 writes are long-running operations,
which Cloud Run's audit documentation says "usually generate two audit log
entries: one when the operation starts and another when it ends": the emulator
writes both, tied by ``operation`` (``id``, ``producer``, ``first`` / ``last``;
that field's use by Cloud Run is unconfirmed), and one entry with both flags
when the operation is done at once (a traffic-only change, a delete).

A call is recorded once, in the terms of the API it came in by: a ``gcloud run``
write reaches the v1 REST front, which runs it down the v2 code path, and its
entry is the v1 one the front writes (:class:`Caller` ``api``), never a v2 one.

Who called: a request's gRPC metadata ``x-deploy-guard-principal`` (or, for the
v1 REST front, its HTTP header of that name) plays the caller, so a test can be
a person (``alice@example.com``) or the guard; without it the caller is
:func:`default_principal`, ``deployer@PROJECT.iam.gserviceaccount.com``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deploy_guard.emulator.contracts import LogSink
from deploy_guard.emulator.log_entries import Entry, log_name, rfc3339
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.emulator.audit")

AUDIT_LOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
#: The metadata key (gRPC) or header (REST) that names the caller.
PRINCIPAL_HEADER = "x-deploy-guard-principal"
#: Methods that change a service without deleting it: they may create a revision.
SERVICE_WRITES = ("CreateService", "ReplaceService", "UpdateService")
#: The permission each method is authorised by (``authorizationInfo.permission``).
_PERMISSIONS = {
    "CreateService": "run.services.create",
    "ReplaceService": "run.services.update",
    "UpdateService": "run.services.update",
    "DeleteService": "run.services.delete",
    "DeleteRevision": "run.revisions.delete",
}


def default_principal(project: str) -> str:
    """The caller of a request that names none: a deployer's service account."""
    return f"deployer@{project}.iam.gserviceaccount.com"


@dataclass(frozen=True)
class Caller:
    """Who made an Admin API call, as the audit entry's ``authenticationInfo`` and
    ``requestMetadata`` tell it."""

    principal: str
    user_agent: str = ""
    ip: str = ""
    #: The Admin API version the call came in by when a front translated it (``v1``:
    #: the REST front ``gcloud run`` calls); "" for a call served as it came. The
    #: entries another version's code path would write for a translated call are
    #: not written (see :func:`record_admin_activity`).
    api: str = ""


def caller_from(
    metadata: Iterable[tuple[str, Any]] | None, project: str, *, peer: str = "", api: str = ""
) -> Caller:
    """The caller of a request with these metadata pairs (gRPC) or headers (REST)."""
    found = {str(k).lower(): v for k, v in (metadata or ())}

    def text(key: str) -> str:
        value = found.get(key, "")
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    principal = text(PRINCIPAL_HEADER).strip() or default_principal(project)
    return Caller(principal, user_agent=text("user-agent"), ip=_ip_of(peer), api=api)


def caller_of(ctx: Any, project: str) -> Caller:
    """The caller of a gRPC request (``ctx`` a servicer context; None: the default one).

    A context with an ``audit_api`` attribute (the v1 REST front's) names the API
    version its calls came in by.
    """
    api = str(getattr(ctx, "audit_api", ""))
    if ctx is None:
        return caller_from(None, project)
    try:
        metadata = ctx.invocation_metadata()
        return caller_from(metadata, project, peer=str(ctx.peer() or ""), api=api)
    except Exception:  # a context without metadata (a direct call in a test)
        return caller_from(None, project, api=api)


def _ip_of(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` / ``ipv6:[::1]:5555`` -> the address alone."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return ""


@dataclass(frozen=True)
class Activity:
    """One Admin API call as its audit entry records it (plain JSON-ready data)."""

    project: str
    location: str
    service: str
    method_name: str  # google.cloud.run.v2.Services.UpdateService
    resource_name: str  # projects/P/locations/R/services/S or namespaces/P/services/S
    request: dict[str, Any]  # camelCase, with its "@type"
    response: dict[str, Any] | None = None  # camelCase, with its "@type"
    #: (gRPC code, message) of a refused or failed call; None: it succeeded.
    status: tuple[int, str] | None = None
    caller: Caller | None = None
    #: ``{"id": ..., "producer": "run.googleapis.com", "first": true, "last": true}``
    operation: dict[str, Any] | None = None


def activity_entry(activity: Activity, when: datetime) -> Entry:
    """The ``LogEntry`` dict (camelCase, as the Logging API and ``gcloud`` print it)."""
    a = activity
    caller = a.caller or Caller(default_principal(a.project))
    verb = a.method_name.rsplit(".", 1)[-1]
    payload: Entry = {
        "@type": AUDIT_LOG_TYPE,
        "serviceName": "run.googleapis.com",
        "methodName": a.method_name,
        "resourceName": a.resource_name,
        "authenticationInfo": {"principalEmail": caller.principal},
        "authorizationInfo": [
            {
                "resource": a.resource_name,
                "permission": _PERMISSIONS.get(verb, "run.services.update"),
                "granted": True,
                "permissionType": "ADMIN_WRITE",
                "resourceAttributes": {},
            }
        ],
        "requestMetadata": {
            "callerIp": caller.ip or "127.0.0.1",
            "callerSuppliedUserAgent": caller.user_agent,
            "requestAttributes": {"time": rfc3339(when), "auth": {}},
            "destinationAttributes": {},
        },
        "resourceLocation": {"currentLocations": [a.location]},
        "request": _plain(a.request),
    }
    if a.response is not None:
        payload["response"] = _plain(a.response)
    if a.status is not None and a.status[0] != 0:
        payload["status"] = {"code": a.status[0], "message": a.status[1]}
    entry: Entry = {
        "logName": log_name(a.project, "cloudaudit.googleapis.com/activity"),
        "resource": {
            "type": "cloud_run_revision",
            "labels": {
                "project_id": a.project,
                "location": a.location,
                "service_name": a.service,
                "revision_name": "",
                "configuration_name": "",
            },
        },
        "timestamp": rfc3339(when),
        "severity": "ERROR" if "status" in payload else "NOTICE",
        "protoPayload": payload,
    }
    if a.operation:
        entry["operation"] = dict(a.operation)
    return entry


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """JSON-only values (a datetime or bytes from a caller becomes a string)."""
    plain: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return plain


def record_admin_activity(
    logs: LogSink,
    *,
    project: str,
    location: str,
    service: str,
    method_name: str,
    resource_name: str,
    request: dict[str, Any],
    when: datetime,
    response: dict[str, Any] | None = None,
    status: tuple[int, str] | None = None,
    caller: Caller | None = None,
    operation: dict[str, Any] | None = None,
) -> None:
    """Write the audit entry of one Admin API call into ``logs`` (the emulator's store).

    For any front of the emulator: the gRPC v2 servicer calls it for each write,
    and a v1 REST front (``gcloud run``) calls it with v1 names
    (``google.cloud.run.v1.Services.ReplaceService``, ``namespaces/P/services/S``,
    Knative-shaped ``request`` and ``response``). An audit sink that fails is
    logged, never raised: it must not fail the write it records.

    One call, one API's entries: a call whose ``caller`` came in by another API
    version than ``method_name`` names is not recorded here. A ``gcloud run
    deploy`` goes down the v2 code path, but Cloud Run records it as the v1 call
    it was (``google.cloud.run.v1.Services.ReplaceService``), and only so: the
    v1 front writes that entry, and the v2 path's entries for it are dropped.
    """
    if caller is not None and caller.api and api_version(method_name) not in ("", caller.api):
        return
    activity = Activity(
        project=project,
        location=location,
        service=service,
        method_name=method_name,
        resource_name=resource_name,
        request=request,
        response=response,
        status=status,
        caller=caller,
        operation=operation,
    )
    try:
        logs.audit(activity=activity, when=when)
    except Exception:
        log.exception("emulator_audit_failed", service=service, method=method_name)


def api_version(method_name: str) -> str:
    """``google.cloud.run.v1.Services.ReplaceService`` -> ``v1`` ("" for another form)."""
    parts = method_name.split(".")
    return parts[3] if len(parts) > 4 and parts[:3] == ["google", "cloud", "run"] else ""


__all__ = [
    "AUDIT_LOG_TYPE",
    "PRINCIPAL_HEADER",
    "SERVICE_WRITES",
    "Activity",
    "Caller",
    "activity_entry",
    "api_version",
    "caller_from",
    "caller_of",
    "default_principal",
    "record_admin_activity",
]
