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
        ("UpdateService=delay:3s@2", FaultSpec("UpdateService", delay_s=3.0, nth=2)),
        ("ListTimeSeries=delay:500msx2", FaultSpec("ListTimeSeries", delay_s=0.5, times=2)),
        ("GetService=UNAVAILABLE@3", FaultSpec("GetService", grpc.StatusCode.UNAVAILABLE, nth=3)),
        (
            "UpdateService=lost@1",
            FaultSpec("UpdateService", grpc.StatusCode.UNAVAILABLE, nth=1, lost=True),
        ),
        (
            "UpdateService=lost:deadline_exceededx2",
            FaultSpec("UpdateService", grpc.StatusCode.DEADLINE_EXCEEDED, times=2, lost=True),
        ),
    ],
)
def test_parse_spec(spec: str, expected: FaultSpec) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "ListLogEntries",
        "=UNAVAILABLE",
        "X=NOPE",
        "X=OK",
        "X=UNAVAILABLEx0",
        "X=delay:soon",
        "X=UNAVAILABLE@0",
        "X=lost:NOPE",
        "X=UNAVAILABLE:2s",
        "X=delay:2s@",
    ],
)
def test_bad_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(spec)


def test_durations() -> None:
    assert parse_duration("2s") == 2.0
    assert parse_duration("1.5") == 1.5
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1m") == 60.0


@pytest.mark.fault("emulator", "a fault on only the N-th call", "calls before and after pass")
async def test_only_the_nth_call_fails_or_waits(served: Any) -> None:
    injector, clients = served
    injector.apply("ListLogEntries=UNAVAILABLE@3")
    for _ in range(2):
        assert await asyncio.to_thread(list_once, clients, retry=None) == []
    with pytest.raises(gexc.ServiceUnavailable):
        await asyncio.to_thread(list_once, clients, retry=None)
    assert await asyncio.to_thread(list_once, clients, retry=None) == []
    # a delay on the next call only: that call is late, the one after it is not
    injector.delay("ListLogEntries", 2.0, nth=1)
    with pytest.raises(gexc.DeadlineExceeded):
        await asyncio.to_thread(list_once, clients, retry=None, timeout=0.2)
    assert await asyncio.to_thread(list_once, clients, retry=None, timeout=5) == []
    assert injector.count(LIST) == 6


@pytest.mark.fault("emulator", "a write applied, its answer lost", "client errs; the write stands")
async def test_a_lost_answer_applies_the_call_and_the_retry_repeats_it(served: Any) -> None:
    injector, clients = served
    injector.apply("WriteLogEntries=lost@1")

    def write(text: str, retry: Any = None) -> None:
        clients.logging().write_log_entries(
            request={
                "log_name": "projects/proj/logs/x",
                "entries": [{"text_payload": text, "resource": {"type": "global"}}],
            },
            retry=retry,
        )

    def texts() -> list[str]:
        return [e.text_payload for e in list_once(clients, retry=None)]

    with pytest.raises(gexc.ServiceUnavailable, match="was applied"):
        await asyncio.to_thread(write, "first")
    assert await asyncio.to_thread(texts) == ["first"]  # applied, though the client was told not
    injector.lose("WriteLogEntries", nth=1)
    from deploy_guard.gcp.errors import transient_retry

    await asyncio.to_thread(write, "again", transient_retry(deadline=10))  # the retry succeeds
    assert await asyncio.to_thread(texts) == ["first", "again", "again"]  # ... twice
    assert injector.count(WRITE) == 3


def test_times_and_nth_are_exclusive_and_checked() -> None:
    injector = FaultInjector()
    with pytest.raises(ConfigError, match="not both"):
        injector.fail("X", grpc.StatusCode.UNAVAILABLE, times=2, nth=2)
    with pytest.raises(ConfigError, match="at least 1"):
        injector.delay("X", 1.0, nth=0)
