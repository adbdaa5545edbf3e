"""Fault injection and call counters: a real grpc.aio server, the official client's errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud.logging_v2.types import TailLogEntriesRequest
from structlog.testing import capture_logs

from deploy_guard.emulator import logging_api
from deploy_guard.emulator.faults import FaultInjector, FaultSpec, parse_duration, parse_spec
from deploy_guard.emulator.logstore import LogStore
from deploy_guard.errors import ConfigError
from deploy_guard.gcp.clients import Clients

LIST = "/google.logging.v2.LoggingServiceV2/ListLogEntries"
WRITE = "/google.logging.v2.LoggingServiceV2/WriteLogEntries"
REQUEST = {"resource_names": ["projects/proj"], "filter": 'timestamp>="2026-01-01T00:00:00Z"'}


@pytest.fixture
async def served() -> AsyncIterator[tuple[FaultInjector, Clients]]:
    injector = FaultInjector()
    server = grpc.aio.server(interceptors=[injector])
    server.add_generic_rpc_handlers((logging_api.handlers(LogStore()),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clients = Clients(host=f"127.0.0.1:{port}")
    try:
        yield injector, clients
    finally:
        clients.close()
        await server.stop(None)


def list_once(clients: Clients, **kwargs: Any) -> list[Any]:
    return list(clients.logging().list_log_entries(request=REQUEST, **kwargs))


async def test_fails_twice_then_succeeds_without_retries(served: Any) -> None:
    injector, clients = served
    injector.fail("ListLogEntries", grpc.StatusCode.UNAVAILABLE, times=2)

    with capture_logs() as events:
        for _ in range(2):
            with pytest.raises(gexc.ServiceUnavailable, match="fault injected"):
                await asyncio.to_thread(list_once, clients, retry=None)
        assert await asyncio.to_thread(list_once, clients, retry=None) == []
    assert injector.counts() == {LIST: 3}
    injected = [e for e in events if e["event"] == "emulator_fault_injected"]
    assert [(e["method"], e["code"]) for e in injected] == [(LIST, "UNAVAILABLE")] * 2


async def test_default_retries_ride_through_transient_faults(served: Any) -> None:
    injector, clients = served
    injector.fail(LIST, grpc.StatusCode.UNAVAILABLE, times=2)
    assert await asyncio.to_thread(list_once, clients) == []
    assert injector.count("ListLogEntries") == 3


async def test_always_failing_method_and_clear(served: Any) -> None:
    injector, clients = served
    injector.apply("LoggingServiceV2/ListLogEntries=RESOURCE_EXHAUSTED")
    for _ in range(3):
        with pytest.raises(gexc.ResourceExhausted):
            await asyncio.to_thread(list_once, clients, retry=None)
    injector.clear()
    assert await asyncio.to_thread(list_once, clients, retry=None) == []
    assert injector.count(LIST) == 4
    injector.reset_counts()
    assert injector.counts() == {}


async def test_other_methods_are_untouched(served: Any) -> None:
    injector, clients = served
    injector.fail("WriteLogEntries", grpc.StatusCode.PERMISSION_DENIED)
    assert await asyncio.to_thread(list_once, clients, retry=None) == []
    with pytest.raises(gexc.PermissionDenied):
        await asyncio.to_thread(
            clients.logging().write_log_entries,
            request={"log_name": "projects/proj/logs/x", "entries": [{"text_payload": "a"}]},
            retry=None,
        )
    assert injector.counts() == {LIST: 1, WRITE: 1}


async def test_delay_makes_a_short_deadline_expire(served: Any) -> None:
    injector, clients = served
    injector.apply("ListLogEntries=delay:2s")
    with pytest.raises(gexc.DeadlineExceeded):
        await asyncio.to_thread(list_once, clients, retry=None, timeout=0.2)
    injector.clear()
    assert await asyncio.to_thread(list_once, clients, retry=None, timeout=5) == []


async def test_streaming_methods_fail_too(served: Any) -> None:
    injector, clients = served
    injector.fail("TailLogEntries", grpc.StatusCode.UNAVAILABLE, times=1)

    def tail() -> None:
        request = TailLogEntriesRequest(resource_names=["projects/proj"])
        for _ in clients.logging().tail_log_entries(iter([request]), retry=None, timeout=5):
            pass

    with pytest.raises(gexc.ServiceUnavailable):
        await asyncio.to_thread(tail)
    assert injector.count("TailLogEntries") == 1


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "ListLogEntries=UNAVAILABLEx2",
            FaultSpec("ListLogEntries", grpc.StatusCode.UNAVAILABLE, 2),
        ),
        ("UpdateService=aborted", FaultSpec("UpdateService", grpc.StatusCode.ABORTED)),
        (
            "GetService=DEADLINE_EXCEEDEDx1",
            FaultSpec("GetService", grpc.StatusCode.DEADLINE_EXCEEDED, 1),
        ),
        ("ListTimeSeries=delay:500ms", FaultSpec("ListTimeSeries", delay_s=0.5)),
        (" /a.B/C = delay:2s ", FaultSpec("/a.B/C", delay_s=2.0)),
    ],
)
def test_parse_spec(spec: str, expected: FaultSpec) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", ["ListLogEntries", "=UNAVAILABLE", "X=NOPE", "X=OK", "X=UNAVAILABLEx0", "X=delay:soon"]
)
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec)


def test_durations() -> None:
    assert parse_duration("2s") == 2.0
    assert parse_duration("1.5") == 1.5
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1m") == 60.0
