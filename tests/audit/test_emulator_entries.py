"""The emulator's Admin Activity entries have the shape of Cloud Run's real ones.

The yardstick is :func:`audit.samples.v1_replace`, built on a real ReplaceService entry's
structure: every key it has at the top, in ``protoPayload``, ``authorizationInfo``,
``requestMetadata`` and ``resource``, the emulator's entries have too, with values of the
same JSON types, read back through ``ListLogEntries`` as ``gcloud logging read`` would.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.api_core import exceptions

from audit.samples import v1_replace
from audit.site import HUMAN, Site
from deploy_guard.emulator.audit import (
    PRINCIPAL_HEADER,
    caller_from,
    default_principal,
    record_admin_activity,
)
from deploy_guard.gcp import audit


def shape(value: Any) -> Any:
    """The JSON type of a value, and for a mapping its keys' (the values left out)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


def same_shape(real: dict[str, Any], ours: dict[str, Any], where: str = "") -> list[str]:
    """Every key of ``real`` missing from ``ours`` or of another JSON type, with its path."""
    problems = []
    for key, value in real.items():
        path = f"{where}.{key}".lstrip(".")
        if key not in ours:
            problems.append(f"{path}: missing")
        elif isinstance(value, dict) and isinstance(ours[key], dict):
            problems += same_shape(value, ours[key], path)
        elif _kind(value) != _kind(ours[key]):
            problems.append(f"{path}: {_kind(ours[key])}, not {_kind(value)}")
    return problems


def _kind(value: Any) -> str:
    """A JSON type: numbers are one (a Struct holds 22 as 22.0, and prints it as 22)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


REAL = v1_replace()
#: What is the call's own, not the shape's: the request and the response differ by API.
BODIES = ("request", "response")


@pytest.mark.fault(
    "emulator",
    "Cloud Run writes an Admin Activity audit entry for every service write",
    "the emulator writes one per create, update and delete, shaped as Cloud Run's, listable",
)
def test_a_deploy_leaves_entries_shaped_as_cloud_runs(site: Site) -> None:
    site.deploy("shape")
    revision = site.deploy("shape")
    first, last = site.entries("shape")[-2:]
    for entry in (first, last):
        real = {k: v for k, v in REAL.items() if k != "protoPayload"}
        payload = {k: v for k, v in REAL["protoPayload"].items() if k not in BODIES}
        assert same_shape(real, entry) == []
        assert same_shape(payload, entry["protoPayload"]) == []
        assert shape(entry["protoPayload"]["authorizationInfo"][0]) == shape(
            REAL["protoPayload"]["authorizationInfo"][0]
        )
        assert entry["resource"] == {
            "type": "cloud_run_revision",
            "labels": {**REAL["resource"]["labels"], "project_id": "local-project",
                       "location": "us-central1", "service_name": "shape"},
        }  # fmt: skip
        payload = entry["protoPayload"]
        assert payload["@type"] == "type.googleapis.com/google.cloud.audit.AuditLog"
        assert payload["methodName"] == "google.cloud.run.v2.Services.UpdateService"
        assert payload["resourceName"] == f"{site.emulator.parent}/services/shape"
        assert payload["authenticationInfo"] == {"principalEmail": HUMAN}
        assert payload["authorizationInfo"][0]["permission"] == "run.services.update"
        assert payload["request"]["@type"].endswith("google.cloud.run.v2.UpdateServiceRequest")
        assert payload["response"]["@type"].endswith("google.cloud.run.v2.Service")
        assert entry["severity"] == "NOTICE"
        assert "status" not in payload  # a successful call has none
    # a long-running write: one entry when it starts, one when it ends, one operation
    assert first["operation"]["id"] == last["operation"]["id"]
    assert (first["operation"].get("first"), last["operation"].get("last")) == (True, True)
    assert not first["operation"].get("last")
    assert not last["operation"].get("first")
    started, ended = first["protoPayload"]["response"], last["protoPayload"]["response"]
    assert started["reconciling"] is True  # the service as written
    assert ended["latestReadyRevision"].endswith(f"/{revision}")  # the service as it ended
    assert ended["observedGeneration"] == ended["generation"]
    assert first["protoPayload"]["request"]["service"]["template"]["containers"]


def test_the_caller_is_the_metadata_or_the_default_deployer(site: Site) -> None:
    from google.cloud import run_v2

    revision = site.deploy("callers", by="bob@example.com")
    entries = site.entries("callers")
    assert {e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in entries} == {
        "bob@example.com"
    }
    svc = site.clients.services().get_service(name=site.name("callers"))
    assert svc.creator == svc.last_modifier == "bob@example.com"
    svc = site.clients.services().get_service(name=site.name("callers"))
    svc.labels = {"team": "search"}
    site.clients.services().update_service(
        request=run_v2.UpdateServiceRequest(service=svc, update_mask={"paths": ["labels"]})
    ).result(timeout=30)  # no metadata: the emulator's default caller
    *_, entry = site.entries("callers")
    assert entry["protoPayload"]["authenticationInfo"]["principalEmail"] == default_principal(
        "local-project"
    )
    assert revision.startswith("callers-")
    assert caller_from([(PRINCIPAL_HEADER, b"ci@x.iam.gserviceaccount.com")], "p").principal == (
        "ci@x.iam.gserviceaccount.com"
    )


@pytest.mark.fault(
    "emulator",
    "Cloud Run refuses a write (it already exists, a conflict): the audit entry says so",
    "an ERROR entry with protoPayload.status and no response; the guard skips it as failed",
)
def test_a_refused_write_leaves_an_error_entry_the_guard_skips(site: Site) -> None:
    from google.cloud import run_v2

    site.deploy("refused")
    with pytest.raises(exceptions.AlreadyExists):
        site.clients.services().create_service(
            parent=site.emulator.parent,
            service=run_v2.Service(),
            service_id="refused",
            metadata=[(PRINCIPAL_HEADER, HUMAN)],
        )
    *_, entry = site.entries("refused")
    payload = entry["protoPayload"]
    assert payload["methodName"] == "google.cloud.run.v2.Services.CreateService"
    assert payload["status"]["code"] == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "already exists" in payload["status"]["message"]
    assert "response" not in payload
    assert entry["severity"] == "ERROR"
    (write,) = audit.audit_writes(json.dumps(entry))
    assert "the call failed (status 6)" in audit.decide(write).reason


def test_a_delete_leaves_one_entry_and_the_guard_skips_it(site: Site) -> None:
    site.deploy("doomed")
    site.clients.services().delete_service(
        name=site.name("doomed"), metadata=[(PRINCIPAL_HEADER, HUMAN)]
    ).result(timeout=30)
    *_, entry = site.entries("doomed")
    assert entry["protoPayload"]["methodName"] == "google.cloud.run.v2.Services.DeleteService"
    assert (entry["operation"]["first"], entry["operation"]["last"]) == (True, True)
    (write,) = audit.audit_writes(json.dumps(entry))
    assert "a delete" in audit.decide(write).reason


def test_entries_are_found_by_the_filters_a_team_would_write(site: Site) -> None:
    site.deploy("filtered", by="carol@example.com")
    logging = site.clients.logging()
    wanted = (
        'logName="projects/local-project/logs/cloudaudit.googleapis.com%2Factivity" '
        'AND protoPayload.serviceName="run.googleapis.com" '
        'AND protoPayload.methodName="google.cloud.run.v2.Services.CreateService" '
        'AND protoPayload.authenticationInfo.principalEmail="carol@example.com"'
    )
    found = list(
        logging.list_log_entries(
            request={"resource_names": ["projects/local-project"], "filter": wanted}
        )
    )
    assert len(found) == 2  # the operation's start and end
    assert {e.resource.labels["service_name"] for e in found} == {"filtered"}


def test_record_admin_activity_writes_v1_entries_for_a_rest_front(site: Site) -> None:
    """What a v1 (gcloud run) front calls: Knative shapes, namespaces/P/services/S."""
    entry_v1 = v1_replace()
    payload = entry_v1["protoPayload"]
    record_admin_activity(
        site.emulator.logs,
        project="local-project",
        location="us-central1",
        service="knative",
        method_name="google.cloud.run.v1.Services.ReplaceService",
        resource_name="namespaces/local-project/services/knative",
        request=payload["request"],
        response=payload["response"],
        caller=caller_from([(PRINCIPAL_HEADER, HUMAN), ("user-agent", "gcloud/540")], "x"),
        when=datetime.now(UTC),
    )
    (entry,) = site.entries("knative")
    assert entry["protoPayload"]["resourceName"] == "namespaces/local-project/services/knative"
    assert entry["protoPayload"]["requestMetadata"]["callerSuppliedUserAgent"] == "gcloud/540"
    assert "operation" not in entry  # v1 calls are not long-running operations
    assert same_shape(REAL["protoPayload"], entry["protoPayload"]) == []
    (write,) = audit.audit_writes(json.dumps(entry))
    assert (write.service, write.verb, write.principal) == (
        "knative",
        "Services.ReplaceService",
        HUMAN,
    )
