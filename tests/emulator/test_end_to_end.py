"""The whole emulator as the issue checks it: traffic through the router shows up in
Cloud Logging and Cloud Monitoring, read with the official clients only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.cloud import run_v2
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from waiting import wait_until


def test_router_traffic_becomes_request_logs_counts_and_p99(
    deploy: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    svc = deploy("chat")
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    with httpx.Client(timeout=10) as http:
        for _ in range(8):
            assert http.get(svc.uri + "/").status_code == 200
        for _ in range(2):
            assert http.get(svc.uri + "/status", params={"code": "503"}).status_code == 503
    ws_url = svc.uri.replace("http://", "ws://") + "/ws?close=1011&reason=boom"
    with connect(ws_url) as ws:
        ws.recv()
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1011

    # Cloud Logging: request logs (HTTP and the WebSocket's 101) and the revision's output.
    logging = gcp_clients.logging()
    on_rev = (
        f'timestamp>="{since.isoformat()}" AND resource.type="cloud_run_revision" '
        f'AND resource.labels.revision_name="{rev}"'
    )

    def entries(extra: str) -> list[Any]:
        return list(
            logging.list_log_entries(
                request={
                    "resource_names": [f"projects/{emulator.project}"],
                    "filter": f"{on_rev} AND {extra}",
                    "order_by": "timestamp desc",
                    "page_size": 1000,
                }
            )
        )

    requests = wait_until(
        lambda: len(found := entries('log_id("run.googleapis.com/requests")')) == 11 and found
    )
    statuses = sorted(e.http_request.status for e in requests)
    assert statuses == [101] + [200] * 8 + [503] * 2
    assert all(e.http_request.request_url.startswith(svc.uri) for e in requests)
    assert [e.severity for e in requests if e.http_request.status == 503] == [500, 500]  # ERROR
    # the app's JSON line before it closed with 1011: {"severity", "message"} only, so
    # its message is textPayload, as Cloud Logging's agent stores it
    failed = entries('severity>=ERROR AND textPayload:"orchestrator"')
    assert len(failed) == 1

    # Cloud Monitoring: request_count by class and p99 latency for the revision.
    metrics = gcp_clients.metrics()
    now = datetime.now(UTC)
    window = {"start_time": now - timedelta(minutes=5), "end_time": now + timedelta(seconds=1)}
    revision = f'resource.type = "cloud_run_revision" AND resource.labels.revision_name = "{rev}"'
    counts = list(
        metrics.list_time_series(
            request={
                "name": f"projects/{emulator.project}",
                "filter": f'metric.type = "run.googleapis.com/request_count" AND {revision}',
                "interval": window,
                "aggregation": {
                    "alignment_period": {"seconds": 600},
                    "per_series_aligner": "ALIGN_DELTA",
                    "cross_series_reducer": "REDUCE_SUM",
                    "group_by_fields": ["metric.labels.response_code_class"],
                },
            }
        )
    )
    by_class = {
        s.metric.labels["response_code_class"]: sum(p.value.int64_value for p in s.points)
        for s in counts
    }
    assert by_class == {"1xx": 1, "2xx": 8, "5xx": 2}
    p99 = list(
        metrics.list_time_series(
            request={
                "name": f"projects/{emulator.project}",
                "filter": f'metric.type = "run.googleapis.com/request_latencies" AND {revision}',
                "interval": window,
                "aggregation": {
                    "alignment_period": {"seconds": 600},
                    "per_series_aligner": "ALIGN_PERCENTILE_99",
                    "cross_series_reducer": "REDUCE_PERCENTILE_99",
                },
            }
        )
    )
    [series] = p99
    [point] = series.points
    # Of 11 requests the 99th percentile is the slowest: the WebSocket's whole life.
    slowest_ms = max(e.http_request.latency.ToTimedelta().total_seconds() for e in requests) * 1000
    assert point.value.double_value == pytest.approx(slowest_ms, rel=1e-3)


def test_a_revision_that_dies_after_ready_answers_503_and_says_so_in_its_logs(
    deploy: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    svc = deploy("chat")
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    assert httpx.get(svc.uri + "/exit", params={"code": "3"}, timeout=10).status_code == 200

    def status() -> int:
        return httpx.get(svc.uri, headers={"Connection": "close"}, timeout=10).status_code

    wait_until(lambda: status() == 503)
    wait_until(lambda: emulator.pids() == [])

    logging = gcp_clients.logging()
    project = [f"projects/{emulator.project}"]
    system = wait_until(
        lambda: list(
            logging.list_log_entries(
                resource_names=project,
                filter=f'log_id("run.googleapis.com/varlog/system") '
                f'AND resource.labels.revision_name="{rev}"',
            )
        )
    )
    assert system[0].text_payload == "Container called exit(3)."
    assert system[0].severity == 400  # WARNING, as Cloud Run logs it
    refused = list(
        logging.list_log_entries(
            resource_names=project,
            filter=f'log_id("run.googleapis.com/requests") AND httpRequest.status=503 '
            f'AND resource.labels.revision_name="{rev}"',
        )
    )
    assert refused, "the 503 was not logged against the dead revision"
    # As on Cloud Run, a crash does not change the revision's Ready condition.
    revision = gcp_clients.revisions().get_revision(name=svc.latest_ready_revision)
    ready = next(c for c in revision.conditions if c.type_ == "Ready")
    assert ready.state == run_v2.Condition.State.CONDITION_SUCCEEDED
