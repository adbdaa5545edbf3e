"""Audit entries as Cloud Run writes them, built by hand for the tests of ``tests/audit/``.

:func:`v1_replace` has the structure of a real ``google.cloud.run.v1.Services.ReplaceService``
entry published in nakamasato/cloud-run-slack-bot (``docs/auditing.md``): every key and
its nesting as there, the values our own (project, service, times, revisions). Its
response is the real one's kind: ``metadata.generation`` one past
``status.observedGeneration``, with the *old* ``latestCreatedRevisionName``, because
v1 answers before Cloud Run acts. :func:`v2_update` is the v2 shape the emulator writes.
"""

from __future__ import annotations

import copy
from typing import Any

PROJECT, REGION, SERVICE = "acme-prod", "europe-west1", "chat-agent"
HUMAN = "alice@example.com"
WHEN = "2026-11-02T09:15:04.355675Z"
ASKED = "2026-11-02T09:15:04.672717Z"


def _resource(service: str = SERVICE) -> dict[str, Any]:
    return {
        "type": "cloud_run_revision",
        "labels": {
            "configuration_name": "",
            "location": REGION,
            "project_id": PROJECT,
            "revision_name": "",
            "service_name": service,
        },
    }


def _knative_service(generation: int, annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "annotations": {
                "run.googleapis.com/client-name": "gcloud",
                "serving.knative.dev/creator": HUMAN,
                "serving.knative.dev/lastModifier": HUMAN,
                **annotations,
            },
            "creationTimestamp": "2026-10-01T08:00:00.000000Z",
            "generation": generation,
            "labels": {"cloud.googleapis.com/location": REGION},
            "name": SERVICE,
            "namespace": "123456789012",
            "resourceVersion": "AAYX0P+214o",
            "selfLink": f"/apis/serving.knative.dev/v1/namespaces/123456789012/services/{SERVICE}",
            "uid": "0d5b6b2e-6c1a-4f43-9b7e-1f0c2d3e4f50",
        },
        "spec": {
            "template": {
                "metadata": {"annotations": {"autoscaling.knative.dev/maxScale": "10"}},
                "spec": {
                    "containerConcurrency": 80,
                    "serviceAccountName": f"chat@{PROJECT}.iam.gserviceaccount.com",
                    "timeoutSeconds": 300,
                    "containers": [
                        {
                            "image": "europe-west1-docker.pkg.dev/acme-prod/app/chat:2",
                            "env": [{"name": "API_TOKEN", "value": "ya29.secret-in-plain-env"}],
                        }
                    ],
                },
            },
            "traffic": [{"latestRevision": True, "percent": 100}],
        },
    }


def v1_replace(
    *,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    named: str = "",
) -> dict[str, Any]:
    """A ``gcloud run deploy`` of a new image: ReplaceService, generation 7 -> 8."""
    service = _knative_service(7, annotations or {})
    if named:
        service["spec"]["template"]["metadata"]["name"] = named
    response = copy.deepcopy(service)
    response["metadata"]["generation"] = 8
    response["status"] = {
        "conditions": [{"lastTransitionTime": WHEN, "status": "True", "type": "Ready"}],
        "latestCreatedRevisionName": f"{SERVICE}-00007-abc",  # the old one: not yet acted on
        "latestReadyRevisionName": f"{SERVICE}-00007-abc",
        "observedGeneration": 7,
        "traffic": [
            {"latestRevision": True, "percent": 100, "revisionName": f"{SERVICE}-00007-abc"}
        ],
        "url": f"https://{SERVICE}-abcdefghij-ew.a.run.app",
    }
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": HUMAN},
        "authorizationInfo": [
            {
                "granted": True,
                "permission": "run.services.update",
                "permissionType": "ADMIN_WRITE",
                "resource": f"namespaces/{PROJECT}/services/{SERVICE}",
                "resourceAttributes": {},
            }
        ],
        "methodName": "google.cloud.run.v1.Services.ReplaceService",
        "request": {
            "@type": "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest",
            "name": f"projects/{PROJECT}/locations/{REGION}/services/{SERVICE}",
            "region": REGION,
            "service": service,
        },
        "requestMetadata": {
            "callerIp": "203.0.113.7",
            "callerSuppliedUserAgent": "google-cloud-sdk gcloud/540.0.0 command/gcloud.run.deploy",
            "destinationAttributes": {},
            "requestAttributes": {"auth": {}, "time": ASKED},
        },
        "resourceLocation": {"currentLocations": [REGION]},
        "resourceName": f"namespaces/{PROJECT}/services/{SERVICE}",
        "serviceName": "run.googleapis.com",
    }
    if status is None:
        payload["response"] = {
            "@type": "type.googleapis.com/google.cloud.run.v1.Service",
            **response,
        }
    else:
        payload["status"] = status
    return {
        "insertId": "qd23mgd4u3f",
        "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
        "protoPayload": payload,
        "receiveTimestamp": "2026-11-02T09:15:04.779921199Z",
        "resource": _resource(),
        "severity": "NOTICE" if status is None else "ERROR",
        "timestamp": WHEN,
    }


def v2_update(
    *,
    mask: str | None = None,
    annotations: dict[str, str] | None = None,
    principal: str = HUMAN,
    operation: dict[str, Any] | None = None,
    service: str = SERVICE,
) -> dict[str, Any]:
    """A v2 UpdateService (``update_mask`` as JSON writes a FieldMask: one string)."""
    name = f"projects/{PROJECT}/locations/{REGION}/services/{service}"
    request: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.run.v2.UpdateServiceRequest",
        "service": {"name": name, "annotations": annotations or {}},
    }
    if mask is not None:
        request["updateMask"] = mask
    else:
        request["service"]["template"] = {"containers": [{"image": "app:3"}]}
    entry: dict[str, Any] = {
        "insertId": "v2insert01",
        "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "run.googleapis.com",
            "methodName": "google.cloud.run.v2.Services.UpdateService",
            "resourceName": name,
            "authenticationInfo": {"principalEmail": principal},
            "requestMetadata": {"requestAttributes": {"time": ASKED}},
            "request": request,
        },
        "resource": _resource(service),
        "severity": "NOTICE",
        "timestamp": WHEN,
    }
    if operation is not None:
        entry["operation"] = operation
    return entry


def cloud_event(data: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvent (structured mode) Eventarc hands a workflow, around a LogEntry."""
    return {
        "data": data,
        "datacontenttype": "application/json; charset=utf-8",
        "id": "projects/acme-prod/logs/cloudaudit.googleapis.com%2Factivity-qd23mgd4u3f",
        "source": f"//cloudaudit.googleapis.com/projects/{PROJECT}/logs/activity",
        "specversion": "1.0",
        "type": "google.cloud.audit.log.v1.written",
        "time": WHEN,
        "subject": f"run.googleapis.com/projects/{PROJECT}/locations/{REGION}/services/{SERVICE}",
        "dataschema": "https://googleapis.github.io/google-cloudevents/jsonschema/google/events"
        "/cloud/audit/v1/LogEntryData.json",
        "methodname": data["protoPayload"]["methodName"],
        "servicename": "run.googleapis.com",
        "resourcename": data["protoPayload"]["resourceName"],
    }
