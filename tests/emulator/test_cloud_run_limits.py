"""Limits real Cloud Run enforces, through the emulator's gRPC API and its router.

Tag and service name together are at most 46 characters (a tag URL is one DNS
label); the request timeout is positive, at most 3600 s, and cuts every
request at the revision's ``template.timeout``, WebSocket sessions included.
Each refusal leaves the service exactly as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from waiting import wait_until

TOO_LONG = "Combined traffic tag and service name cannot exceed 46 characters."
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST


def latest(percent: int, tag: str = "") -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=LATEST, percent=percent, tag=tag)


@pytest.mark.fault("emulator", "tag + service name of 47 characters", "INVALID_ARGUMENT, real text")
def test_a_tag_and_service_name_over_46_characters_are_refused_with_cloud_runs_words(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    services = gcp_clients.services()
    service_id = "s" * 40
    name = f"{emulator.parent}/services/{service_id}"
    spec = run_v2.Service(template=app_template(), traffic=[latest(100, tag="abcdefg")])  # 47
    with pytest.raises(gexc.InvalidArgument) as refused:
        services.create_service(parent=emulator.parent, service=spec, service_id=service_id)
    assert TOO_LONG in refused.value.message
    assert f"traffic tag 'abcdefg' and service name '{service_id}' together are too long" in (
        refused.value.message
    )
    with pytest.raises(gexc.NotFound):  # validated before anything was created
        services.get_service(name=name)

    spec.traffic = [latest(100, tag="abcdef")]  # exactly 46: fine
    svc = services.create_service(
        parent=emulator.parent, service=spec, service_id=service_id
    ).result(timeout=60, polling=fast_polling)
    assert [t.tag for t in svc.traffic_statuses] == ["abcdef"]

    svc.traffic = [latest(100, tag="abcdef"), latest(0, tag="dg-1234")]  # 47 on update
    with pytest.raises(gexc.InvalidArgument, match=TOO_LONG):
        services.update_service(service=svc)
    after = services.get_service(name=name)
    assert (after.generation, [t.tag for t in after.traffic]) == (svc.generation, ["abcdef"])


@pytest.mark.fault("emulator", "request timeout 0 s or over 3600 s", "INVALID_ARGUMENT, unchanged")
@pytest.mark.parametrize("seconds", [0, -5, 3601])
def test_a_request_timeout_outside_cloud_runs_range_is_refused(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, seconds: int
) -> None:
    services = gcp_clients.services()
    template = app_template()
    template.timeout = {"seconds": seconds}
    with pytest.raises(gexc.InvalidArgument, match="at most 3600 seconds"):
        services.create_service(
            parent=emulator.parent, service=run_v2.Service(template=template), service_id="t"
        )
    template.timeout = {"seconds": 3600}  # the maximum is allowed
    services.create_service(
        request={
            "parent": emulator.parent,
            "service": run_v2.Service(template=template),
            "service_id": "t",
            "validate_only": True,
        }
    )
    assert list(services.list_services(parent=emulator.parent)) == []


@pytest.mark.fault(
    "emulator", "WebSocket held past the revision's request timeout", "cut with 1006, logged 101"
)
def test_a_revision_with_a_short_timeout_cuts_sessions_and_requests_at_it(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    """Deployed with ``--timeout=1``: its sessions end after a second, whatever they do.

    The revision still starts with the emulator's startup timeout: ``template.timeout``
    is the request timeout only, as on Cloud Run.
    """
    since = datetime.now(UTC) - timedelta(seconds=1)
    template = app_template()
    template.timeout = {"seconds": 1}
    svc = (
        gcp_clients.services()
        .create_service(
            parent=emulator.parent, service=run_v2.Service(template=template), service_id="short"
        )
        .result(timeout=60, polling=fast_polling)
    )
    rev = gcp_clients.revisions().get_revision(name=svc.latest_ready_revision)
    assert rev.timeout.total_seconds() == 1
    with httpx.Client(timeout=10) as http:
        assert http.get(svc.uri + "/health").status_code == 200  # quick requests pass

    with connect(svc.uri.replace("http://", "ws://") + "/ws") as ws:
        assert "revision" in ws.recv()
        ws.send("echo")
        assert ws.recv() == "echo"
        with pytest.raises(ConnectionClosedError) as cut:
            ws.recv()  # nothing more comes: only the timeout ends the session
    assert cut.value.rcvd is None
    assert ws.close_code == 1006

    logging = gcp_clients.logging()
    query = (
        f'timestamp>="{since.isoformat()}" AND log_id("run.googleapis.com/requests") '
        'AND textPayload:"reached the maximum request timeout"'
    )

    def timed_out() -> list[Any]:
        return list(
            logging.list_log_entries(
                request={"resource_names": [f"projects/{emulator.project}"], "filter": query}
            )
        )

    (entry,) = wait_until(timed_out, what="the timed-out session's request log")
    assert entry.http_request.status == 101
    assert entry.severity == 500  # ERROR: cut by the front end, whatever the status said
