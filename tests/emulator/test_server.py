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
