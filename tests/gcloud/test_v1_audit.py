"""``gcloud run``'s writes in the emulator's audit log as Cloud Run records them: v1 entries.

A ``gcloud run deploy`` reaches the v1 REST front, which runs it down the v2 code
path; its Admin Activity entry must still be the v1 one Cloud Run writes
(``google.cloud.run.v1.Services.ReplaceService``, ``namespaces/P/services/S``, a
response one generation behind), and only that one, because that is what an
Eventarc trigger hands ``check --from-audit-event`` after a deploy by hand. The
first test goes the whole way with the real gcloud; the others pin the entry's
shape with a plain HTTP client (the caller header, refusals, dry runs), no gcloud
needed. One emulator for the module (see conftest.py); each test has its services.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.emulator.audit import PRINCIPAL_HEADER, default_principal
from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.clients import Clients
from gcloud_runner import Gcloud
from waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = "examples/chat_agent/app.py"  # relative: the emulator runs revisions from the root
POLICY = ROOT / "tests" / "gate" / "policies" / "chat-fast.yaml"  # services: chat*
V1_REPLACE = "google.cloud.run.v1.Services.ReplaceService"
V1_CREATE = "google.cloud.run.v1.Services.CreateService"
HUMAN = "alice@example.com"
OWN = "deploy-guard's own write (traffic and annotations only)"


def audit_read(gcloud: Gcloud, service: str) -> list[dict[str, Any]]:
    """The service's audit entries, newest first, as ``gcloud logging read`` prints them."""
    flt = f'logName:"cloudaudit.googleapis.com" AND resource.labels.service_name="{service}"'
    entries: list[dict[str, Any]] = gcloud.json("logging", "read", flt)
    return entries


def audit_entries(clients: Clients, project: str, service: str) -> list[dict[str, Any]]:
    """The same through the Logging client (no gcloud), oldest first."""
    from google.cloud.audit import audit_log_pb2  # noqa: F401  (AuditLog in protoPayload)
    from google.cloud.logging_v2.types import LogEntry
    from google.protobuf import json_format

    found = clients.logging().list_log_entries(
        request={
            "resource_names": [f"projects/{project}"],
            "filter": 'logName:"cloudaudit.googleapis.com" '
            f'AND resource.labels.service_name="{service}"',
            "order_by": "timestamp asc",
            "page_size": 1000,
        }
    )
    return [json_format.MessageToDict(LogEntry.pb(e)) for e in found]


def methods(entries: list[dict[str, Any]]) -> list[str]:
    return [e["protoPayload"]["methodName"] for e in entries]


def check(
    emulator: EmulatorThread, event: Any, tmp_path: Path, name: str
) -> tuple[int, dict[str, Any], str]:
    """``deploy-guard check --from-audit-event FILE`` on ``event``: (exit, report, output)."""
    source, report = tmp_path / f"{name}.json", tmp_path / f"{name}-report.json"
    source.write_text(json.dumps(event))
    env = {
        "DEPLOY_GUARD_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "CLOUDSDK_RUN_REGION": emulator.region,
    }
    args = ["check", "--from-audit-event", str(source), "--policy", str(POLICY)]
    args += ["--report", str(report), "--log-interval", "0.5s"]
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, doc, result.output


def split(svc: dict[str, Any]) -> dict[str, int]:
    return {t["revisionName"]: t["percent"] for t in svc["status"]["traffic"] if t.get("percent")}


@pytest.mark.fault(
    "traffic",
    "a person runs gcloud run deploy of a bad revision that takes traffic; Cloud Run records "
    "a v1 ReplaceService",
    "the check started from that v1 entry rolls it back (exit 1); its own rollback's entry "
    "and a later update-traffic by hand are skipped (exit 0)",
)
def test_a_gcloud_deploy_leaves_a_v1_entry_the_guard_checks_and_rolls_back(
    gcloud: Gcloud, emulator: EmulatorThread, gcp_clients: Clients, tmp_path: Path
) -> None:
    service = "chat-by-hand"
    describe = ("run", "services", "describe", service)
    deploy = ("run", "deploy", service, "--command", sys.executable, "--args", APP)
    first = gcloud.json(*deploy, "--image", "local/chat-agent:1")
    base = first["status"]["latestReadyRevisionName"]
    svc = gcloud.json(
        *deploy, "--image", "local/chat-agent:2", "--update-env-vars", "CHAT_FAIL_1011_AFTER=1"
    )
    bad = svc["status"]["latestReadyRevisionName"]
    assert split(svc) == {bad: 100}

    written = audit_read(gcloud, service)
    assert methods(written) == [V1_REPLACE, V1_CREATE]  # one entry per call, none of v2's
    entry = written[0]
    payload = entry["protoPayload"]
    assert payload["resourceName"] == f"namespaces/{emulator.project}/services/{service}"
    assert payload["authenticationInfo"]["principalEmail"] == default_principal(emulator.project)
    assert "gcloud" in payload["requestMetadata"]["callerSuppliedUserAgent"]
    request = payload["request"]
    assert request["@type"] == "type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest"
    assert request["name"] == f"{emulator.parent}/services/{service}"
    assert request["region"] == emulator.region
    response = payload["response"]
    assert response["@type"] == "type.googleapis.com/google.cloud.run.v1.Service"
    assert response["metadata"]["generation"] == 2
    assert response["status"]["observedGeneration"] == 1  # v1 answers before Cloud Run acts
    assert response["status"]["latestCreatedRevisionName"] == base
    assert "operation" not in entry
    assert entry["resource"]["type"] == "cloud_run_revision"

    code, report, output = check(emulator, written, tmp_path, "deploy")  # the list gcloud read
    assert code == ExitCode.FAIL, output
    assert (report["revision"], report["action"]) == (bad, "rolled_back")
    assert report["audit_event"]["method"] == V1_REPLACE
    assert split(gcloud.json(*describe)) == {base: 100}

    seen = {e["insertId"] for e in written}
    later = audit_entries(gcp_clients, emulator.project, service)  # the client reads them too
    own = [e for e in later if e["insertId"] not in seen]
    assert own
    assert all(m.startswith("google.cloud.run.v2.") for m in methods(own))
    code, report, output = check(emulator, own, tmp_path, "own")
    assert code == ExitCode.PASS, output
    assert OWN in report["audit_event"]["reason"]

    gcloud("run", "services", "update-traffic", service, "--set-tags", f"stable={base}")
    moved = audit_entries(gcp_clients, emulator.project, service)[-1]
    assert moved["protoPayload"]["methodName"] == V1_REPLACE
    code, report, output = check(emulator, moved, tmp_path, "traffic")
    assert code == ExitCode.PASS, output
    assert "created no new revision" in report["audit_event"]["reason"]


# --- the entry's shape, with a plain HTTP client ---------------------------------------

V1 = "/apis/serving.knative.dev/v1/namespaces/local-project"


@pytest.fixture
def front(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{emulator.rest_address}", timeout=30) as client:
        yield client


def v1_service(name: str, **env: str) -> dict[str, Any]:
    container = {
        "image": "local/revision-app",
        "command": [sys.executable, str(ROOT / "tests" / "apps" / "revision_app.py")],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "local-project"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def ready(svc: dict[str, Any]) -> dict[str, Any] | None:
    """``svc`` once its generation is observed and Ready (what gcloud waits for), else None."""
    status = svc.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    fresh = status.get("observedGeneration") == svc["metadata"]["generation"]
    return svc if fresh and conditions.get("Ready") == "True" else None


def test_the_caller_header_names_the_principal_and_refusals_and_dry_runs_are_v1_too(
    front: httpx.Client, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    as_alice = {PRINCIPAL_HEADER: HUMAN}
    created = front.post(f"{V1}/services", json=v1_service("shape"), headers=as_alice)
    assert created.status_code == 200, created.text
    body = wait_until(lambda: ready(front.get(f"{V1}/services/shape").json()), what="Ready")
    stale = json.loads(json.dumps(body))
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": "2"}]
    dry = front.put(f"{V1}/services/shape", params={"dryRun": "all"}, json=body)
    assert dry.status_code == 200, dry.text
    assert front.put(f"{V1}/services/shape", json=body).status_code == 200
    # a write based on the first read: its resourceVersion is stale now
    stale["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "V", "value": "3"}]
    refused = front.put(f"{V1}/services/shape", json=stale, headers=as_alice)
    assert refused.status_code == 409, refused.text

    entries = audit_entries(gcp_clients, emulator.project, "shape")
    assert methods(entries) == [V1_CREATE, V1_REPLACE, V1_REPLACE]  # the dry run left none
    create, replace, failed = (e["protoPayload"] for e in entries)
    principals = [p["authenticationInfo"]["principalEmail"] for p in (create, replace, failed)]
    assert principals == [HUMAN, default_principal(emulator.project), HUMAN]
    assert create["request"]["@type"].endswith("google.cloud.run.v1.CreateServiceRequest")
    assert create["request"]["service"]["metadata"]["name"] == "shape"  # the body as sent
    assert create["response"]["metadata"]["generation"] == 1
    assert "observedGeneration" not in create["response"]["status"]  # not acted on yet
    assert replace["response"]["metadata"]["generation"] == 2
    assert replace["response"]["status"]["observedGeneration"] == 1
    assert failed["status"]["code"] == 10  # ABORTED
    assert "response" not in failed
    assert entries[2]["severity"] == "ERROR"

    gone = front.delete(f"{V1}/services/shape", headers=as_alice)
    assert gone.status_code == 200, gone.text
    last = audit_entries(gcp_clients, emulator.project, "shape")[-1]["protoPayload"]
    assert last["methodName"] == "google.cloud.run.v1.Services.DeleteService"
    assert last["resourceName"] == "namespaces/local-project/services/shape"
    assert last["authenticationInfo"]["principalEmail"] == HUMAN
