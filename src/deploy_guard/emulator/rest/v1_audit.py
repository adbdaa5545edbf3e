"""The Admin Activity entries of the v1 front's writes, as Cloud Run records ``gcloud run``'s.

Why here and not in the v2 path the front runs: Cloud Run records a v1 call as
the v1 call it was. A ``gcloud run deploy`` leaves one entry,
``google.cloud.run.v1.Services.ReplaceService`` (``CreateService`` for a new
service) with ``resourceName`` ``namespaces/P/services/S``, never a v2
``UpdateService``; the guard's ``check --from-audit-event`` reads both forms, and
a test of it against the emulator must meet the form a person's deploy really
leaves. The v2 path's own entries for the same call are dropped
(:func:`deploy_guard.emulator.audit.record_admin_activity`, by the caller's API).

The shape, from a real ReplaceService entry (nakamasato/cloud-run-slack-bot,
``docs/auditing.md``; see docs/audit-checks.md):

- ``request``: ``@type`` ``type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest``,
  ``name`` ``projects/P/locations/R/services/S`` (not the ``namespaces/`` form
  the URL has), ``region`` and ``service``, the Knative body the caller sent;
- ``response``: ``@type`` ``type.googleapis.com/google.cloud.run.v1.Service``, the
  service as the call answered it. v1 answers before Cloud Run acts, so its
  ``metadata`` is the write's (``generation`` one up) while its ``status`` is
  still the previous generation's (``observedGeneration`` one behind, the old
  ``latestCreatedRevisionName``): :func:`stale_response`;
- one entry per call, without ``operation`` (a v1 write is not a long-running
  operation to its caller); a refused call has ``status`` and no ``response``.

Not confirmed (no real entry seen): CreateService's request (``parent``
``projects/P/locations/R`` by analogy with ReplaceService's ``name``) and
response (a new service's answer has no status yet), and the deletes'
(``DeleteService``; ``Revisions.DeleteRevision`` with ``resourceName``
``namespaces/P/revisions/R``; their response is the ``Status`` the call answered).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deploy_guard.emulator import state as st
from deploy_guard.emulator.audit import Caller, record_admin_activity
from deploy_guard.emulator.contracts import LogSink
from deploy_guard.emulator.names import Location
from deploy_guard.emulator.rpc import status_code
from deploy_guard.errors import EmulatorError

_TYPES = "type.googleapis.com/google.cloud.run.v1."
#: v1 method -> (the API's service, the collection its resource name is in).
_METHODS = {
    "CreateService": ("Services", "services"),
    "ReplaceService": ("Services", "services"),
    "DeleteService": ("Services", "services"),
    "DeleteRevision": ("Revisions", "revisions"),
}


def method_name(method: str) -> str:
    """``ReplaceService`` -> ``google.cloud.run.v1.Services.ReplaceService``."""
    return f"google.cloud.run.v1.{_METHODS[method][0]}.{method}"


def resource_name(where: Location, method: str, resource_id: str) -> str:
    """``namespaces/P/services/S`` (``namespaces/P/revisions/R`` for DeleteRevision)."""
    return f"namespaces/{where.project}/{_METHODS[method][1]}/{resource_id}"


def request_body(
    where: Location, method: str, resource_id: str, service: dict[str, Any] | None
) -> dict[str, Any]:
    """The entry's ``request``: the v1 request message, ``service`` the body as sent."""
    body: dict[str, Any] = {"@type": f"{_TYPES}{method}Request"}
    if method == "CreateService":
        body["parent"] = where.parent
    else:
        body["name"] = f"{where.parent}/{_METHODS[method][1]}/{resource_id}"
    body["region"] = where.region
    if service is not None:
        body["service"] = service
    return body


def stale_response(after: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """A v1 write's answer as the entry records it: ``after``'s metadata and spec (the
    write), ``before``'s status (the generation Cloud Run had acted on; none for a
    service the call created)."""
    out = copy.deepcopy(after)
    out.pop("status", None)
    out["status"] = copy.deepcopy(before.get("status", {})) if before is not None else {}
    return {"@type": f"{_TYPES}Service", **out}


@dataclass
class V1Call:
    """One v1 write, filled in while the front serves it; recorded when it ends."""

    method: str  # CreateService, ReplaceService, DeleteService, DeleteRevision
    resource_id: str  # the service's id (the revision's, for DeleteRevision)
    service: str  # the service the entry is filed under
    request: dict[str, Any] | None  # the Knative body sent (None: a delete)
    caller: Caller
    when: datetime = field(default_factory=st.now)
    #: The answer to record (set by the handler once the write is done); None: none.
    response: dict[str, Any] | None = None
    #: Set for a ``dryRun=all`` call, which changes nothing and leaves no entry.
    dry_run: bool = False


def record(logs: LogSink, where: Location, call: V1Call, status: tuple[int, str] | None) -> None:
    """Write ``call``'s entry (``status``: the refusal, None for a success)."""
    record_admin_activity(
        logs,
        project=where.project,
        location=where.region,
        service=call.service,
        method_name=method_name(call.method),
        resource_name=resource_name(where, call.method, call.resource_id),
        request=request_body(where, call.method, call.resource_id, call.request),
        when=call.when,
        response=call.response if status is None else None,
        status=status,
        caller=call.caller,
    )


@contextlib.contextmanager
def audited(logs: LogSink, where: Location, call: V1Call) -> Iterator[V1Call]:
    """Record ``call`` when the block ends: its answer, or the refusal it raised."""
    try:
        yield call
    except EmulatorError as exc:
        if not call.dry_run:
            record(logs, where, call, (status_code(exc.status).value[0], exc.message))
        raise
    if not call.dry_run:
        record(logs, where, call, None)


__all__ = [
    "V1Call",
    "audited",
    "method_name",
    "record",
    "request_body",
    "resource_name",
    "stale_response",
]
