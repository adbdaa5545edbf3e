"""The v2 resources the emulator holds, as Cloud Run Admin API v1 (Knative) JSON.

Pure functions, no I/O: ``run_v2.Service`` / ``run_v2.Revision`` in, the dicts
``gcloud run`` reads out (``apiVersion: serving.knative.dev/v1``,
``metadata``, ``spec``, ``status``). Service, Configuration and Route are three
views of one v2 Service, as on Cloud Run, where the Configuration and the Route
share the service's name.

Choices where v1 and v2 differ (the v1 field docs quoted are those of gcloud's
bundled ``run/v1`` API definition):

- ``status.observedGeneration``: v1 says it "is updated even if the controller
  failed to process the spec ... Clients polling for completed reconciliation
  should poll until observedGeneration = metadata.generation, and the Ready
  condition's status is True or False". v2 keeps ``observed_generation`` at the
  last serving state after a failure. So v1 shows ``generation`` once the
  service stops reconciling, whatever the outcome, and the v2 number while it
  reconciles: gcloud's poller then ends on a failure instead of waiting forever.
- ``status.traffic``: "These entries will always contain RevisionName
  references", so a LATEST target shows the latest ready revision's name (and
  ``latestRevision: true``); tag targets carry their ``url``.
- ``metadata.namespace`` is the project id (Cloud Run shows the project
  number; the emulator has none). ``resourceVersion`` is the v2 ``etag``
  without its quotes, so a v1 write based on a stale read is refused as a v2
  write with a stale etag is.
- Annotations and labels are the v2 resource's, verbatim, plus the output-only
  ones Cloud Run adds (``serving.knative.dev/creator``, ``lastModifier``,
  ``run.googleapis.com/operation-id``, ``cloud.googleapis.com/location``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from google.cloud import run_v2
from google.protobuf import json_format

from deploy_guard.emulator import traffic
from deploy_guard.emulator.names import Location, short_name

API_VERSION = "serving.knative.dev/v1"
#: Annotations and labels Cloud Run sets itself; a v1 write that sends them back is not
#: changing anything, so :mod:`.knative_in` drops them.
OPERATION_ID = "run.googleapis.com/operation-id"
CREATOR = "serving.knative.dev/creator"
LAST_MODIFIER = "serving.knative.dev/lastModifier"
LOCATION_LABEL = "cloud.googleapis.com/location"
SERVICE_LABEL = "serving.knative.dev/service"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
ROUTE_LABEL = "serving.knative.dev/route"
OUTPUT_ANNOTATIONS = frozenset(
    {
        OPERATION_ID,
        CREATOR,
        LAST_MODIFIER,
        "run.googleapis.com/ingress-status",
        "run.googleapis.com/urls",
    }
)
OUTPUT_LABELS = frozenset({LOCATION_LABEL})

_STATE = run_v2.Condition.State
_STATUS = {_STATE.CONDITION_SUCCEEDED: "True", _STATE.CONDITION_FAILED: "False"}
_SEVERITY = {
    run_v2.Condition.Severity.ERROR: "Error",
    run_v2.Condition.Severity.WARNING: "Warning",
    run_v2.Condition.Severity.INFO: "Info",
}


def rfc3339(when: datetime | None) -> str | None:
    """``2026-12-05T04:33:01.123456Z`` (None for a timestamp that was never set)."""
    if when is None:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _camel(enum_name: str) -> str:
    """``REVISION_FAILED`` -> ``RevisionFailed``: v1 reasons are CamelCase words."""
    return "".join(word.capitalize() for word in enum_name.split("_"))


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values, as proto3 JSON does (0 and False included)."""
    return {k: v for k, v in data.items() if v not in (None, "", 0, False, [], {})}


def condition(c: run_v2.Condition, type_: str | None = None) -> dict[str, Any]:
    """One v2 condition as a v1 one: ``status`` "True" / "False" / "Unknown"."""
    which = run_v2.Condition.pb(c).WhichOneof("reasons")
    reason = getattr(c, which) if which else None
    reason_name = getattr(reason, "name", "")
    return _compact(
        {
            "type": type_ or c.type_,
            "status": _STATUS.get(c.state, "Unknown"),
            "reason": _camel(reason_name) if reason and reason_name else None,
            "message": c.message,
            "severity": _SEVERITY.get(c.severity),
            "lastTransitionTime": rfc3339(c.last_transition_time),
        }
    )


def container(c: run_v2.Container) -> dict[str, Any]:
    """A v2 container in v1 JSON: the field names agree but for secret env values."""
    data: dict[str, Any] = json_format.MessageToDict(run_v2.Container.pb(c))
    for env in data.get("env", []):
        ref = env.pop("valueSource", {}).get("secretKeyRef")
        if ref is not None:
            env["valueFrom"] = {
                "secretKeyRef": _compact({"name": ref.get("secret"), "key": ref.get("version")})
            }
    return data


def template(t: run_v2.RevisionTemplate) -> dict[str, Any]:
    """``spec.template``: the revision name, labels, annotations and the RevisionSpec."""
    spec: dict[str, Any] = {"containers": [container(c) for c in t.containers]}
    if t.max_instance_request_concurrency:
        spec["containerConcurrency"] = t.max_instance_request_concurrency
    if "timeout" in t:
        spec["timeoutSeconds"] = int(t.timeout.total_seconds())
    if t.service_account:
        spec["serviceAccountName"] = t.service_account
    meta = _compact(
        {"name": t.revision, "labels": dict(t.labels), "annotations": dict(t.annotations)}
    )
    return {"metadata": meta, "spec": spec}


def traffic_spec(targets: Iterable[run_v2.TrafficTarget]) -> list[dict[str, Any]]:
    """``spec.traffic``; an empty v2 spec is what Cloud Run defaults it to: 100 % LATEST."""
    out = []
    for t in targets:
        latest = traffic.is_latest(t)
        out.append(
            _compact(
                {
                    "revisionName": None if latest else t.revision,
                    "latestRevision": latest,
                    "percent": t.percent,
                    "tag": t.tag,
                }
            )
        )
    return out or [{"latestRevision": True, "percent": 100}]


def traffic_status(svc: run_v2.Service) -> list[dict[str, Any]]:
    """``status.traffic``: what is served, LATEST resolved to a revision name, tag URLs."""
    latest_ready = short_name(svc.latest_ready_revision)
    out = []
    for s in svc.traffic_statuses:
        latest = traffic.is_latest(s)
        out.append(
            _compact(
                {
                    "revisionName": latest_ready if latest else s.revision,
                    "latestRevision": latest,
                    "percent": s.percent,
                    "tag": s.tag,
                    "url": s.uri,
                }
            )
        )
    return out


def observed_generation(svc: run_v2.Service) -> int:
    """v1's ``observedGeneration`` (see the module docstring for why it differs from v2's)."""
    return int(svc.observed_generation if svc.reconciling else svc.generation)


def _meta(
    kind_path: str, name: str, where: Location, resource: Any, **extra: Any
) -> dict[str, Any]:
    return _compact(
        {
            "name": name,
            "namespace": where.project,
            "selfLink": f"/apis/{API_VERSION}/namespaces/{where.project}/{kind_path}/{name}",
            "uid": resource.uid,
            "resourceVersion": resource.etag.strip('"'),
            "creationTimestamp": rfc3339(resource.create_time),
            "deletionTimestamp": rfc3339(resource.delete_time),
            **extra,
        }
    )


def service(svc: run_v2.Service, where: Location, operation_id: str = "") -> dict[str, Any]:
    """A v2 Service as ``gcloud run services describe --format json`` shows a v1 one."""
    service_id = short_name(svc.name)
    annotations = {
        **svc.annotations,
        CREATOR: svc.creator,
        LAST_MODIFIER: svc.last_modifier,
        OPERATION_ID: operation_id,
    }
    meta = _meta(
        "services",
        service_id,
        where,
        svc,
        generation=svc.generation,
        labels={**svc.labels, LOCATION_LABEL: where.region},
        annotations=_compact(annotations),
    )
    conditions = [condition(svc.terminal_condition)] if "terminal_condition" in svc else []
    # Cloud Run lists ConfigurationsReady before RoutesReady (the revision comes first).
    order = {"ConfigurationsReady": 0, "RoutesReady": 1}
    subconditions = sorted(svc.conditions, key=lambda c: order.get(c.type_, 2))
    conditions += [condition(c) for c in subconditions]
    status = _compact(
        {
            "observedGeneration": observed_generation(svc),
            "conditions": conditions,
            "latestCreatedRevisionName": short_name(svc.latest_created_revision),
            "latestReadyRevisionName": short_name(svc.latest_ready_revision),
            "traffic": traffic_status(svc),
            "url": svc.uri,
            "address": {"url": svc.uri} if svc.uri else None,
        }
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": meta,
        "spec": {"template": template(svc.template), "traffic": traffic_spec(svc.traffic)},
        "status": status,
    }


def serving_revisions(svc: run_v2.Service) -> set[str]:
    """Short names of the revisions the service's URL or a tag URL reaches now."""
    latest = short_name(svc.latest_ready_revision)
    split = traffic.serving_split(svc.traffic_statuses, latest)
    return set(split) | set(traffic.tag_targets(svc.traffic_statuses, latest).values())


def revision(rev: run_v2.Revision, where: Location, serving: set[str]) -> dict[str, Any]:
    """A v2 Revision as v1 shows it: owned by its service's Configuration, labelled so."""
    name = short_name(rev.name)
    service_id = short_name(rev.service)
    labels = {
        **rev.labels,
        SERVICE_LABEL: service_id,
        CONFIGURATION_LABEL: service_id,
        LOCATION_LABEL: where.region,
    }
    if name in serving:
        labels[ROUTE_LABEL] = service_id
    owner = {
        "apiVersion": API_VERSION,
        "kind": "Configuration",
        "name": service_id,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    meta = _meta(
        "revisions",
        name,
        where,
        rev,
        generation=rev.generation,
        labels=labels,
        annotations=_compact({**rev.annotations, CREATOR: rev.creator}),
        ownerReferences=[owner],
    )
    spec: dict[str, Any] = {"containers": [container(c) for c in rev.containers]}
    if rev.max_instance_request_concurrency:
        spec["containerConcurrency"] = rev.max_instance_request_concurrency
    if "timeout" in rev:
        spec["timeoutSeconds"] = int(rev.timeout.total_seconds())
    if rev.service_account:
        spec["serviceAccountName"] = rev.service_account
    active = {"type": "Active", "status": "True" if name in serving else "False"}
    active["severity"] = "Info"
    if name not in serving:
        active["reason"] = "Reserve"
    status = _compact(
        {
            "observedGeneration": rev.observed_generation,
            "conditions": [condition(c) for c in rev.conditions] + [active],
            "logUrl": rev.log_uri,
        }
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Revision",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def _child_meta(kind_path: str, svc: run_v2.Service, where: Location) -> dict[str, Any]:
    service_id = short_name(svc.name)
    owner = {"apiVersion": API_VERSION, "kind": "Service", "name": service_id, "uid": svc.uid}
    return _meta(
        kind_path,
        service_id,
        where,
        svc,
        generation=svc.generation,
        labels={SERVICE_LABEL: service_id, LOCATION_LABEL: where.region},
        ownerReferences=[{**owner, "controller": True, "blockOwnerDeletion": True}],
    )


def _named_condition(svc: run_v2.Service, type_: str) -> list[dict[str, Any]]:
    """The service's ``type_`` condition, as the child resource's own ``Ready``."""
    return [condition(c, "Ready") for c in svc.conditions if c.type_ == type_]


def configuration(svc: run_v2.Service, where: Location) -> dict[str, Any]:
    """The service's Configuration: its template and the revisions made from it."""
    status = _compact(
        {
            "observedGeneration": observed_generation(svc),
            "conditions": _named_condition(svc, "ConfigurationsReady"),
            "latestCreatedRevisionName": short_name(svc.latest_created_revision),
            "latestReadyRevisionName": short_name(svc.latest_ready_revision),
        }
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Configuration",
        "metadata": _child_meta("configurations", svc, where),
        "spec": {"template": template(svc.template)},
        "status": status,
    }


def route(svc: run_v2.Service, where: Location) -> dict[str, Any]:
    """The service's Route: its traffic spec and what is served, with the URLs."""
    status = _compact(
        {
            "observedGeneration": observed_generation(svc),
            "conditions": _named_condition(svc, "RoutesReady"),
            "traffic": traffic_status(svc),
            "url": svc.uri,
            "address": {"url": svc.uri} if svc.uri else None,
        }
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "Route",
        "metadata": _child_meta("routes", svc, where),
        "spec": {"traffic": traffic_spec(svc.traffic)},
        "status": status,
    }


def listing(kind: str, items: list[dict[str, Any]], next_token: str = "") -> dict[str, Any]:
    """A v1 list (``ServiceList``...): ``items`` and ``metadata.continue`` for the next page."""
    return {
        "apiVersion": API_VERSION,
        "kind": f"{kind}List",
        "metadata": {"continue": next_token} if next_token else {},
        "items": items,
    }
