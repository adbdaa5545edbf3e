"""The composition: the async Emulator on a test's own loop, and EmulatorThread.call."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from google.cloud import run_v2
from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport

from deploy_guard.emulator.server import Emulator, EmulatorThread
from deploy_guard.errors import ConfigError
from deploy_guard.gcp.clients import Clients


async def test_async_emulator_serves_the_async_client_on_the_same_loop(
    revision_app: Path,
) -> None:
    async with Emulator(project="p", region="europe-west1", startup_timeout=10) as emu:
        channel = grpc.aio.insecure_channel(emu.address)
        client = run_v2.ServicesAsyncClient(transport=ServicesGrpcAsyncIOTransport(channel=channel))
        try:
            container = run_v2.Container(command=[sys.executable, str(revision_app)])
            op = await client.create_service(
                parent="projects/p/locations/europe-west1",
                service=run_v2.Service(template=run_v2.RevisionTemplate(containers=[container])),
                service_id="chat",
            )
            svc = await op.result(timeout=30)
            async with httpx.AsyncClient() as http:
                answer = (await http.get(svc.uri)).json()
            assert answer["revision"] == svc.latest_ready_revision.rsplit("/", 1)[-1]
            assert len(emu.pids()) == 1
        finally:
            await channel.close()
    assert emu.pids() == []


def test_call_runs_on_the_emulator_loop(emulator: EmulatorThread) -> None:
    async def open_url(emu: Emulator) -> str:
        return await emu.router.open_endpoint("svc:extra")

    url = emulator.call(open_url)
    assert url.startswith("http://127.0.0.1:")
    assert emulator.router.endpoint_url("svc:extra") == url


def test_only_loopback_addresses_are_allowed() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        Emulator(host="0.0.0.0")


def test_thread_stop_is_idempotent_and_context_managed() -> None:
    with EmulatorThread() as emu:
        address = emu.address
        assert address.startswith("127.0.0.1:")
    emu.stop()  # a second stop does nothing
    host, port = address.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)


@pytest.mark.parametrize(
    "method",
    [
        "/google.cloud.run.v2.Services/GetService",
        "/google.cloud.run.v2.Revisions/ListRevisions",
        "/google.longrunning.Operations/GetOperation",
        "/google.logging.v2.LoggingServiceV2/ListLogEntries",
        "/google.logging.v2.LoggingServiceV2/WriteLogEntries",
        "/google.monitoring.v3.MetricService/ListTimeSeries",
    ],
)
def test_a_corrupt_request_is_invalid_argument_on_every_api(
    emulator: EmulatorThread, method: str
) -> None:
    channel = grpc.insecure_channel(emulator.address)
    try:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(method)(b"\xff\xff\xff", timeout=5)  # not a protobuf message
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed request" in str(info.value.details())
        # ... and the emulator still serves.
        ok = channel.unary_unary(
            "/google.cloud.run.v2.Services/ListServices",
            request_serializer=run_v2.ListServicesRequest.serialize,
            response_deserializer=run_v2.ListServicesResponse.deserialize,
        )
        assert (
            list(ok(run_v2.ListServicesRequest(parent=emulator.parent), timeout=5).services) == []
        )
    finally:
        channel.close()


def test_a_corrupt_tail_request_is_invalid_argument_too(
    emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    # TailLogEntries streams, and its requests are parsed apart from the unary methods'
    channel = grpc.insecure_channel(emulator.address)
    try:
        tail = channel.stream_stream("/google.logging.v2.LoggingServiceV2/TailLogEntries")
        with pytest.raises(grpc.RpcError) as info:
            list(tail(iter([b"\xff\xff\xff"]), timeout=5))  # not a protobuf message
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed request" in str(info.value.details())
    finally:
        channel.close()
    request = {"resource_names": ["projects/local-project"], "filter": "severity>=ERROR"}
    assert list(gcp_clients.logging().list_log_entries(request=request)) == []  # still serving


def test_a_fault_for_a_method_it_does_not_serve_is_refused(emulator: EmulatorThread) -> None:
    with pytest.raises(ConfigError, match="matches no RPC"):
        emulator.faults.fail("ListLogEntrie", grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(ConfigError, match="matches no RPC"):
        emulator.faults.delay("/google.cloud.run.v2.Services/Nope", 1.0)
    emulator.faults.fail("LoggingServiceV2/ListLogEntries", grpc.StatusCode.UNAVAILABLE, times=1)


def test_messages_over_grpcs_4_mb_default_pass_both_ways(
    emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    from google.cloud.logging_v2.types import LogEntry

    big = [
        LogEntry(
            log_name=f"projects/{emulator.project}/logs/big",
            resource={"type": "global"},
            text_payload="x" * 6000,
        )
        for _ in range(1000)
    ]
    logging = gcp_clients.logging()
    logging.write_log_entries(entries=big)  # ~6 MB in one request
    pager = logging.list_log_entries(
        request={"resource_names": [f"projects/{emulator.project}"], "page_size": 1000}
    )
    assert len(next(iter(pager.pages)).entries) == 1000  # ~6 MB in one response


@pytest.mark.parametrize("form", ["{}", " {} ", "http://{}", "http://{}/", "dns:///{}"])
def test_the_client_factory_finds_it_from_the_environment(
    emulator: EmulatorThread, form: str
) -> None:
    clients = Clients.from_env({"DEPLOY_GUARD_EMULATOR_HOST": form.format(emulator.address)})
    try:
        assert clients.host == emulator.address
        assert list(clients.services().list_services(parent=emulator.parent)) == []
    finally:
        clients.close()
    assert Clients.from_env({}).host is None  # no variable: Google Cloud with ADC
