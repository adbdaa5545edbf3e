"""The HTTP/JSON front with a plain HTTP client: Cloud Run Admin v1 over the v2 state,
Google's error bodies, and the REST list methods of Logging and Monitoring.

No gcloud needed: these pin down what gcloud relies on (test_gcloud_e2e.py runs
gcloud itself). One emulator for the module (see conftest.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import monitoring_v3
from google.protobuf import json_format

from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from waiting import wait_until

APP = Path(__file__).resolve().parents[1] / "apps" / "revision_app.py"
V1 = "/apis/serving.knative.dev/v1/namespaces/local-project"


@pytest.fixture
def front(emulator: EmulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{emulator.rest_address}", timeout=30) as client:
        yield client


def v1_service(name: str, **env: str) -> dict[str, Any]:
    container = {
        "image": "local/revision-app",
        "command": [sys.executable, str(APP)],
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "local-project"},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def error(response: httpx.Response) -> tuple[int, str, str]:
    """(HTTP status, the body's status, its message), checking the body's shape."""
    body = response.json()["error"]
    assert set(body) == {"code", "message", "status"}, body
    assert body["code"] == response.status_code
    return response.status_code, body["status"], body["message"]


def test_a_v2_service_reads_as_knative_v1_with_its_revision_route_and_configuration(
    deploy: Callable[..., Any], front: httpx.Client
) -> None:
    svc = deploy("alpha", env={"GREETING": "hi"})
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    got = front.get(f"{V1}/services/alpha").json()
    assert (got["apiVersion"], got["kind"]) == ("serving.knative.dev/v1", "Service")
    meta = got["metadata"]
    assert meta["name"] == "alpha"
    assert meta["namespace"] == "local-project"
    assert meta["generation"] == svc.generation
    assert meta["uid"] == svc.uid
    assert meta["resourceVersion"] == svc.etag.strip('"')
    assert meta["labels"]["cloud.googleapis.com/location"] == "us-central1"
    assert meta["creationTimestamp"].endswith("Z")
    assert "run.googleapis.com/operation-id" not in meta.get("annotations", {})  # reads: none
    container = got["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [sys.executable, str(APP)]
    assert container["env"] == [{"name": "GREETING", "value": "hi"}]
    assert got["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    status = got["status"]
    assert status["observedGeneration"] == svc.generation
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Ready", "True"),
        ("ConfigurationsReady", "True"),
        ("RoutesReady", "True"),
    ]
    assert status["latestReadyRevisionName"] == status["latestCreatedRevisionName"] == rev
    assert status["traffic"] == [{"latestRevision": True, "percent": 100, "revisionName": rev}]
    assert status["url"] == status["address"]["url"] == svc.uri

    revision = front.get(f"{V1}/revisions/{rev}").json()
    assert revision["kind"] == "Revision"
    labels = revision["metadata"]["labels"]
    assert labels["serving.knative.dev/service"] == "alpha"
    assert labels["serving.knative.dev/configuration"] == "alpha"
    assert revision["metadata"]["ownerReferences"][0]["kind"] == "Configuration"
    conditions = {c["type"]: c["status"] for c in revision["status"]["conditions"]}
    assert conditions == {
        "Ready": "True",
        "ContainerHealthy": "True",
        "ResourcesAvailable": "True",
        "Active": "True",
    }
    selected = front.get(
        f"{V1}/revisions", params={"labelSelector": "serving.knative.dev/service = alpha"}
    ).json()
    assert [r["metadata"]["name"] for r in selected["items"]] == [rev]
    route = front.get(f"{V1}/routes/alpha").json()
    assert route["status"]["traffic"] == status["traffic"]
    assert route["status"]["conditions"][0]["type"] == "Ready"
    config = front.get(f"{V1}/configurations/alpha").json()
    assert config["status"]["latestReadyRevisionName"] == rev
    assert config["spec"]["template"] == got["spec"]["template"]
    every_region = front.get("/v1/projects/local-project/locations/-/services").json()
    assert "alpha" in [s["metadata"]["name"] for s in every_region["items"]]
    # gcloud run services replace compares a YAML's namespace with the project's number
    number = front.get("/v1/projects/local-project").json()["projectNumber"]
    by_number = front.get(f"/apis/serving.knative.dev/v1/namespaces/{number}/services/alpha")
    assert by_number.json()["metadata"]["uid"] == svc.uid


def test_a_v1_create_is_not_ready_at_once_and_its_operation_says_when_it_is(
    front: httpx.Client, gcp_clients: Clients, emulator: EmulatorThread
) -> None:
    created = front.post(f"{V1}/services", json=v1_service("beta"))
    assert created.status_code == 200, created.text
    svc = created.json()
    ready = svc["status"]["conditions"][0]
    assert (ready["type"], ready["status"]) == ("Ready", "Unknown")
    assert svc["status"].get("observedGeneration", 0) < svc["metadata"]["generation"] == 1
    op_id = svc["metadata"]["annotations"]["run.googleapis.com/operation-id"]

    waited = front.post(
        f"/v1/projects/local-project/locations/us-central1/operations/{op_id}:wait",
        json={"timeout": "30s"},
    ).json()
    assert waited["done"] is True
    done = waited["response"]
    assert done["@type"] == "type.googleapis.com/google.cloud.run.v1.Service"
    assert done["status"]["conditions"][0]["status"] == "True"
    assert done["status"]["observedGeneration"] == 1
    rev = done["status"]["latestReadyRevisionName"]
    assert httpx.get(done["status"]["url"], timeout=10).json()["revision"] == rev
    # the same state over v2
    v2 = gcp_clients.services().get_service(name=f"{emulator.parent}/services/beta")
    assert v2.latest_ready_revision.endswith(f"/revisions/{rev}")
    assert v2.generation == 1


@pytest.mark.fault(
    "traffic",
    "gcloud's read-modify-write (v1 replaceService) races another writer: its "
    "metadata.resourceVersion is stale",
    "409 ABORTED, nothing changes; a replace that sends the template back unchanged makes "
    "no revision",
)
def test_replace_keeps_the_template_and_refuses_a_stale_resource_version(
    deploy: Callable[..., Any], front: httpx.Client
) -> None:
    deploy("gamma")
    read = front.get(f"{V1}/services/gamma").json()
    rev = read["status"]["latestReadyRevisionName"]
    changed = {
        **read,
        "spec": {
            **read["spec"],
            "traffic": [
                {"revisionName": rev, "percent": 100},
                {"revisionName": rev, "tag": "blue"},
            ],
        },
    }
    answer = front.put(f"{V1}/services/gamma", json=changed)
    assert answer.status_code == 200, answer.text
    after = answer.json()
    assert after["metadata"]["generation"] == read["metadata"]["generation"] + 1
    assert after["status"]["latestCreatedRevisionName"] == rev  # no new revision
    assert {t.get("tag") for t in after["status"]["traffic"]} == {None, "blue"}

    stale = front.put(f"{V1}/services/gamma", json=read)  # the old resourceVersion
    code, status, message = error(stale)
    assert (code, status) == (409, "ABORTED")
    assert "re-read" in message
    now = front.get(f"{V1}/services/gamma").json()
    assert now["metadata"]["generation"] == after["metadata"]["generation"]
    assert now["spec"]["traffic"] == after["spec"]["traffic"]


@pytest.mark.fault(
    "emulator",
    "a v1 replace keeps spec.template.metadata.name (gcloud --tag / --revision-suffix) "
    "but changes the template",
    "409 ALREADY_EXISTS \"Revision named '...' with different configuration already "
    'exists.", as public v1 reports show; nothing changes',
)
def test_a_named_revision_with_another_template_is_refused(front: httpx.Client) -> None:
    body = v1_service("delta")
    body["spec"]["template"]["metadata"] = {"name": "delta-first"}
    created = front.post(f"{V1}/services", json=body).json()
    op_id = created["metadata"]["annotations"]["run.googleapis.com/operation-id"]
    front.post(f"/v1/projects/local-project/locations/us-central1/operations/{op_id}:wait")
    read = front.get(f"{V1}/services/delta").json()
    assert read["status"]["latestReadyRevisionName"] == "delta-first"
    container = read["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "CHANGED", "value": "1"}]
    code, status, message = error(front.put(f"{V1}/services/delta", json=read))
    assert (code, status) == (409, "ALREADY_EXISTS")
    assert message == "Revision named 'delta-first' with different configuration already exists."
    assert front.get(f"{V1}/services/delta").json()["metadata"]["generation"] == 1


def test_refusals_are_googles_json_errors_with_their_http_codes(
    front: httpx.Client, emulator: EmulatorThread
) -> None:
    assert error(front.get(f"{V1}/services/nope"))[:2] == (404, "NOT_FOUND")
    other = front.get("/apis/serving.knative.dev/v1/namespaces/other/services/x")
    assert "start it with --project other" in error(other)[2]
    bad_name = front.post(f"{V1}/services", json=v1_service("Bad_Name"))
    assert error(bad_name)[:2] == (400, "INVALID_ARGUMENT")
    no_command = v1_service("epsilon")
    del no_command["spec"]["template"]["spec"]["containers"][0]["command"]
    code, status, message = error(front.post(f"{V1}/services", json=no_command))
    assert (code, status) == (400, "INVALID_ARGUMENT")
    assert "command is empty" in message
    garbled = front.post(f"{V1}/services", content=b"{not json")
    assert error(garbled)[:2] == (400, "INVALID_ARGUMENT")
    assert error(front.get("/v1/nothing/here"))[:2] == (404, "NOT_FOUND")
    assert error(front.post("/v2/entries:list", json={"nope": 1}))[:2] == (400, "INVALID_ARGUMENT")
    # as gcloud's proxy: the absolute URL's host names the region
    port = emulator.rest_address.rsplit(":", 1)[1]
    with httpx.Client(proxy=f"http://{emulator.rest_address}", timeout=30) as proxied:
        here = proxied.get(f"http://us-central1-127.0.0.1:{port}{V1}/services")
        assert here.status_code == 200
        elsewhere = proxied.get(f"http://europe-west1-127.0.0.1:{port}{V1}/services")
        code, status, message = error(elsewhere)
        assert (code, status) == (404, "NOT_FOUND")
        assert "this emulator serves region 'us-central1'" in message
        # gcloud pointed at an https:// endpoint would tunnel (CONNECT): refused
        with pytest.raises(httpx.ProxyError, match="501"):
            proxied.get("https://run.googleapis.com/v1/x")


def test_logs_and_metrics_read_over_rest_as_over_grpc(
    deploy: Callable[..., Any], front: httpx.Client, gcp_clients: Clients, emulator: EmulatorThread
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    svc = deploy("zeta")
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    for path in ("/", "/", "/status?code=503"):
        httpx.get(svc.uri + path, timeout=10)
    query = (
        f'timestamp>="{since.isoformat()}" AND resource.labels.revision_name="{rev}" '
        'AND log_id("run.googleapis.com/requests")'
    )
    body = {
        "resourceNames": ["projects/local-project"],
        "filter": query,
        "orderBy": "timestamp desc",
        "pageSize": 2,
    }
    first = wait_until(
        lambda: (
            (page := front.post("/v2/entries:list", json=body).json()).get("nextPageToken") and page
        )
    )
    rest = front.post("/v2/entries:list", json={**body, "pageToken": first["nextPageToken"]})
    entries = first["entries"] + rest.json()["entries"]
    assert sorted(e["httpRequest"]["status"] for e in entries) == [200, 200, 503]
    assert [e["severity"] for e in entries if e["httpRequest"]["status"] == 503] == ["ERROR"]
    grpc_entries = gcp_clients.logging().list_log_entries(
        request={
            "resource_names": ["projects/local-project"],
            "filter": query,
            "order_by": "timestamp desc",
        }
    )
    assert [e["insertId"] for e in entries] == [e.insert_id for e in grpc_entries]

    now = datetime.now(UTC) + timedelta(seconds=1)
    metric = (
        'metric.type = "run.googleapis.com/request_count" AND '
        f'resource.labels.revision_name = "{rev}"'
    )
    params = [
        ("filter", metric),
        ("interval.startTime", (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")),
        ("interval.endTime", now.isoformat().replace("+00:00", "Z")),
        ("aggregation.alignmentPeriod", "600s"),
        ("aggregation.perSeriesAligner", "ALIGN_DELTA"),
        ("aggregation.crossSeriesReducer", "REDUCE_SUM"),
        ("aggregation.groupByFields", "metric.labels.response_code_class"),
        ("alt", "json"),
    ]
    answer = front.get("/v3/projects/local-project/timeSeries", params=params).json()
    by_class = {
        s["metric"]["labels"]["response_code_class"]: sum(
            int(p["value"]["int64Value"]) for p in s["points"]
        )
        for s in answer["timeSeries"]
    }
    assert by_class == {"2xx": 2, "5xx": 1}
    request = monitoring_v3.ListTimeSeriesRequest(
        name="projects/local-project",
        filter=metric,
        interval={"start_time": now - timedelta(minutes=5), "end_time": now},
        aggregation={
            "alignment_period": {"seconds": 600},
            "per_series_aligner": "ALIGN_DELTA",
            "cross_series_reducer": "REDUCE_SUM",
            "group_by_fields": ["metric.labels.response_code_class"],
        },
    )
    over_grpc = gcp_clients.metrics().list_time_series(request=request)
    assert answer["timeSeries"] == [
        json_format.MessageToDict(monitoring_v3.TimeSeries.pb(s)) for s in over_grpc
    ]
    unknown = front.get("/v3/projects/local-project/timeSeries", params={"nope": "1"})
    assert error(unknown)[:2] == (400, "INVALID_ARGUMENT")
