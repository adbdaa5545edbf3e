"""Cloud Logging's TailLogEntries in the emulator, through the official client.

Each tail is ``LoggingServiceV2Client.tail_log_entries`` from the guard's own
``Clients`` factory, run in a worker thread (the sync client blocks) with a
request generator that stays open until the test closes it: closing it is how a
client ends its session. ``retry=None`` everywhere: the client's default retry
(UNAVAILABLE, INTERNAL, DEADLINE_EXCEEDED, until the first response) calls again
with the same request iterator, which a held-open generator cannot serve twice
("generator already executing"). Tests that need a revision's traffic use the whole
emulator; the others serve :func:`logging_api.handlers` on their own server with
a :class:`TailHub` whose limits they lower.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud.logging_v2.types import TailLogEntriesRequest, TailLogEntriesResponse

from deploy_guard.emulator import logging_api
from deploy_guard.emulator.faults import FaultInjector, FaultSpec, parse_spec
from deploy_guard.emulator.logstore import LogStore
from deploy_guard.emulator.tail import TailHub
from deploy_guard.errors import ConfigError
from deploy_guard.gcp.clients import Clients
from waiting import eventually, wait_until

REASON = TailLogEntriesResponse.SuppressionInfo.Reason
LOG = "projects/proj/logs/app"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


class Tail:
    """One TailLogEntries call in a thread; ``close()`` ends its request iterator.

    ``pause_after``: stop reading after that many responses until ``resume()``
    (a slow reader: gRPC flow control then stops the server's writes).
    """

    def __init__(
        self,
        clients: Clients,
        filter_: str = "",
        *,
        window_s: float | None = 0.0,
        project: str = "proj",
        pause_after: int | None = None,
        extra: list[TailLogEntriesRequest] | None = None,
    ) -> None:
        self.request = TailLogEntriesRequest(resource_names=[f"projects/{project}"], filter=filter_)
        if window_s is not None:
            self.request.buffer_window = timedelta(seconds=window_s)
        self.extra = extra or []
        self.clients = clients
        self.responses: list[TailLogEntriesResponse] = []
        self.error: BaseException | None = None
        self.pause_after = pause_after
        self._closed = threading.Event()
        self._resume = threading.Event()
        self.done = threading.Event()
        self.stream: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[TailLogEntriesRequest]:
        yield self.request
        yield from self.extra
        self._closed.wait()

    def _run(self) -> None:
        try:
            self.stream = self.clients.logging().tail_log_entries(
                self._requests(), retry=None, timeout=60
            )
            for response in self.stream:
                self.responses.append(response)
                if self.pause_after is not None and len(self.responses) == self.pause_after:
                    self._resume.wait()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def texts(self) -> list[str]:
        return [e.text_payload for r in list(self.responses) for e in r.entries]

    def suppressed(self, reason: int) -> int:
        return sum(
            s.suppressed_count
            for r in list(self.responses)
            for s in r.suppression_info
            if s.reason == reason
        )

    def resume(self) -> None:
        self._resume.set()

    def close(self) -> None:
        """End the request iterator (the client half-closes) and wait for the stream's end."""
        self._closed.set()
        self._resume.set()
        assert self.done.wait(30), "the stream did not end after its requests did"

    def cancel(self) -> None:
        """Cancel the call (the client's wrapper exists once the first response came)."""
        wait_until(lambda: self.stream is not None, what="the first response")
        self.stream.cancel()
        self._closed.set()
        assert self.done.wait(30)


def entry(text: str, second: int = 0) -> dict[str, Any]:
    when = T0 + timedelta(seconds=second)
    return {"log_name": LOG, "text_payload": text, "timestamp": when}


async def write(clients: Clients, *entries: dict[str, Any]) -> None:
    """One WriteLogEntries call (one batch for the store, and for every session)."""
    await asyncio.to_thread(
        clients.logging().write_log_entries,
        request={"resource": {"type": "global"}, "entries": list(entries)},
    )


@pytest.fixture
async def hub_and_clients(serve_handlers: Any) -> tuple[TailHub, Clients]:
    store = LogStore()
    hub = TailHub(store, max_sessions=3, entries_per_minute=5)
    return hub, await serve_handlers(logging_api.handlers(store, hub))


async def opened(hub: TailHub, count: int, project: str = "proj") -> None:
    await eventually(lambda: hub.open_sessions(project) == count, what=f"{count} sessions open")


async def ended(tail: Tail) -> None:
    await asyncio.to_thread(tail.close)


async def test_written_entries_stream_in_timestamp_order_and_the_filter_applies(
    hub_and_clients: Any,
) -> None:
    hub, clients = hub_and_clients
    tail = Tail(clients, 'textPayload:"wanted"')
    await opened(hub, 1)
    # one batch, out of timestamp order, with entries the filter leaves out
    await write(clients, entry("wanted 3", 3), entry("noise", 2), entry("wanted 1", 1))
    await eventually(lambda: len(tail.texts()) == 2, what="the two matching entries")
    await ended(tail)
    assert tail.error is None
    assert tail.texts() == ["wanted 1", "wanted 3"]
    [response] = tail.responses
    assert [e.log_name for e in response.entries] == [LOG, LOG]
    assert not response.suppression_info


@pytest.mark.fault(
    "logs",
    "TailLogEntries: entries arrive late, out of timestamp order, within buffer_window",
    "the emulator holds them for the window and sends them in timestamp order",
)
async def test_the_buffer_window_holds_late_entries_and_sends_them_in_order(
    hub_and_clients: Any,
) -> None:
    hub, clients = hub_and_clients
    tail = Tail(clients, window_s=60)
    await opened(hub, 1)
    for text, second in (("c", 3), ("a", 1), ("b", 2)):  # three writes, three batches
        await write(clients, entry(text, second))
    await eventually(lambda: hub.held() == 3, what="three entries held for the window")
    assert tail.responses == []  # held, not sent: the window has not passed
    await ended(tail)  # a client that closes gets what was held, then the end
    assert tail.error is None
    assert tail.texts() == ["a", "b", "c"]
    assert hub.open_sessions() == 0


def test_a_revisions_requests_stream_through_the_router(
    emulator: Any, deploy: Any, gcp_clients: Clients
) -> None:
    svc = deploy("chat")
    tail = Tail(
        gcp_clients,
        'log_id("run.googleapis.com/requests") AND httpRequest.status>=500',
        window_s=None,  # Cloud Logging's default window (2 s)
        project=emulator.project,
    )
    wait_until(lambda: emulator.tails.open_sessions() == 1, what="the session open")
    with httpx.Client(timeout=10) as http:
        assert http.get(svc.uri + "/").status_code == 200
        assert http.get(svc.uri + "/status", params={"code": "503"}).status_code == 503
    wait_until(lambda: tail.responses, what="the 503's request log")
    tail.close()
    assert tail.error is None
    [e] = [e for r in tail.responses for e in r.entries]
    assert e.http_request.status == 503
    assert e.resource.labels["service_name"] == "chat"


@pytest.mark.fault(
    "logs",
    "TailLogEntries: an 11th live session in a project",
    "RESOURCE_EXHAUSTED; a closed session gives its slot back",
)
def test_ten_sessions_per_project_the_eleventh_is_resource_exhausted(
    emulator: Any, gcp_clients: Clients
) -> None:
    project = emulator.project
    tails = [Tail(gcp_clients, project=project) for _ in range(10)]
    wait_until(lambda: emulator.tails.open_sessions(project) == 10, what="ten sessions")
    eleventh = Tail(gcp_clients, project=project)
    assert eleventh.done.wait(30)
    assert isinstance(eleventh.error, gexc.ResourceExhausted), eleventh.error
    assert "10 live-tailing sessions" in str(eleventh.error)
    other = Tail(gcp_clients, project="other-project")  # the limit is per project
    wait_until(lambda: emulator.tails.open_sessions("other-project") == 1)
    tails[0].close()
    wait_until(lambda: emulator.tails.open_sessions(project) == 9, what="the slot back")
    again = Tail(gcp_clients, project=project)
    wait_until(lambda: emulator.tails.open_sessions(project) == 10, what="a new session")
    for tail in [*tails[1:], again, other]:
        tail.close()
        assert tail.error is None
    assert emulator.tails.open_sessions() == 0


async def test_a_cancelled_call_gives_its_slot_back(hub_and_clients: Any) -> None:
    hub, clients = hub_and_clients
    tail = Tail(clients)
    await opened(hub, 1)
    await write(clients, entry("first"))
    await asyncio.to_thread(tail.cancel)
    await opened(hub, 0)
    assert isinstance(tail.error, gexc.Cancelled), tail.error


async def test_a_deadline_that_passes_gives_its_slot_back(hub_and_clients: Any) -> None:
    hub, clients = hub_and_clients

    def tail() -> None:
        held_open = threading.Event()

        def requests() -> Iterator[TailLogEntriesRequest]:
            yield TailLogEntriesRequest(resource_names=["projects/proj"])
            held_open.wait(30)

        try:
            for _ in clients.logging().tail_log_entries(requests(), retry=None, timeout=0.5):
                pass
        finally:
            held_open.set()

    with pytest.raises(gexc.DeadlineExceeded):
        await asyncio.to_thread(tail)
    await opened(hub, 0)


@pytest.mark.fault(
    "logs",
    "TailLogEntries fails with UNAVAILABLE (fault injection)",
    "the client's stream raises ServiceUnavailable; no session is left open",
)
def test_an_injected_failure_fails_the_stream(emulator: Any, gcp_clients: Clients) -> None:
    emulator.faults.fail("TailLogEntries", grpc.StatusCode.UNAVAILABLE, times=1)
    tail = Tail(gcp_clients, project=emulator.project)
    assert tail.done.wait(30)
    assert isinstance(tail.error, gexc.ServiceUnavailable), tail.error
    assert emulator.tails.open_sessions() == 0
    assert emulator.faults.count("TailLogEntries") == 1


@pytest.mark.fault(
    "logs",
    "TailLogEntries stream broken after N responses (fault break:N)",
    "the client gets N responses, then UNAVAILABLE; the session's slot comes back",
)
def test_a_stream_broken_after_two_responses(emulator: Any, gcp_clients: Clients) -> None:
    emulator.faults.apply("TailLogEntries=break:2")
    tail = Tail(gcp_clients, project=emulator.project)
    wait_until(lambda: emulator.tails.open_sessions() == 1, what="the session open")
    log = f"projects/{emulator.project}/logs/app"
    for n in range(3):
        emulator.logs.append([{"logName": log, "textPayload": f"line {n}"}])
        if n < 2:
            wait_until(lambda n=n: len(tail.responses) == n + 1, what=f"response {n + 1}")
    assert tail.done.wait(30)
    assert isinstance(tail.error, gexc.ServiceUnavailable), tail.error
    assert "stream was broken" in str(tail.error)
    assert tail.texts() == ["line 0", "line 1"]
    wait_until(lambda: emulator.tails.open_sessions() == 0, what="the slot back")


async def test_entries_over_the_rate_are_suppressed_and_counted(hub_and_clients: Any) -> None:
    hub, clients = hub_and_clients  # 5 entries a minute for the project
    tail = Tail(clients)
    await opened(hub, 1)
    await write(clients, *(entry(f"e{n}", n) for n in range(7)))
    await eventually(lambda: tail.responses, what="a response")
    await ended(tail)
    [response] = tail.responses
    assert [e.text_payload for e in response.entries] == ["e0", "e1", "e2", "e3", "e4"]
    [info] = response.suppression_info
    assert (info.reason, info.suppressed_count) == (REASON.RATE_LIMIT, 2)
    assert hub.suppressed == {"RATE_LIMIT": 2, "NOT_CONSUMED": 0}


@pytest.mark.fault(
    "logs",
    "TailLogEntries client stops reading while entries keep coming",
    "bounded memory: the session holds at most max_pending, reports NOT_CONSUMED",
)
async def test_a_slow_reader_gets_not_consumed_counts_and_memory_stays_bounded(
    serve_handlers: Any,
) -> None:
    store = LogStore()
    hub = TailHub(store, max_pending=4)
    clients = await serve_handlers(logging_api.handlers(store, hub))
    tail = Tail(clients, pause_after=1)
    await opened(hub, 1)
    big = "x" * 200_000  # fills gRPC's flow-control windows in a few dozen entries
    written = 0

    def flood() -> bool:
        nonlocal written
        for _ in range(5):
            store.append([{"logName": LOG, "textPayload": f"{written} {big}"}])
            written += 1
            assert hub.held() <= 4
        return hub.suppressed["NOT_CONSUMED"] > 0

    await eventually(flood, within=30, what="entries dropped for the slow reader")
    tail.resume()
    await eventually(lambda: hub.held() == 0, what="the held entries sent")
    await ended(tail)
    assert tail.error is None
    received = len(tail.texts())
    dropped = tail.suppressed(REASON.NOT_CONSUMED)
    assert dropped == hub.suppressed["NOT_CONSUMED"] > 0
    assert received + dropped == written  # every entry sent or counted


async def test_later_requests_are_accepted_and_ignored(hub_and_clients: Any) -> None:
    hub, clients = hub_and_clients
    later = TailLogEntriesRequest(resource_names=["projects/other"], filter="nothing")
    tail = Tail(clients, 'textPayload:"a"', extra=[later, later])
    await opened(hub, 1)
    await write(clients, entry("a"), entry("b"))
    await eventually(lambda: tail.texts() == ["a"], what="the first request's filter")
    await ended(tail)
    assert tail.error is None


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            TailLogEntriesRequest(
                resource_names=["projects/proj"], buffer_window=timedelta(seconds=61)
            ),
            "between 0 and 60000 milliseconds",
        ),
        (TailLogEntriesRequest(resource_names=["folders/1"]), "is not supported"),
        (TailLogEntriesRequest(), "resource_names is required"),
        (TailLogEntriesRequest(resource_names=["projects/proj"], filter="a AND ("), "column"),
    ],
)
async def test_an_invalid_first_request_is_invalid_argument(
    hub_and_clients: Any, request_: TailLogEntriesRequest, message: str
) -> None:
    hub, clients = hub_and_clients

    def tail() -> None:
        for _ in clients.logging().tail_log_entries(iter([request_]), timeout=10):
            pass

    with pytest.raises(gexc.InvalidArgument, match=message):
        await asyncio.to_thread(tail)
    assert hub.open_sessions() == 0


async def test_a_client_that_closes_at_once_ends_cleanly(hub_and_clients: Any) -> None:
    """``iter([request])`` half-closes right after its request: the session ends, OK."""
    hub, clients = hub_and_clients
    request = TailLogEntriesRequest(resource_names=["projects/proj"])
    got = await asyncio.to_thread(
        lambda: list(clients.logging().tail_log_entries(iter([request]), timeout=10))
    )
    assert got == []
    await opened(hub, 0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "TailLogEntries=break:2",
            FaultSpec("TailLogEntries", grpc.StatusCode.UNAVAILABLE, break_after=2),
        ),
        (
            "TailLogEntries=break:0:INTERNAL@2",
            FaultSpec("TailLogEntries", grpc.StatusCode.INTERNAL, nth=2, break_after=0),
        ),
    ],
)
def test_break_specs_parse(spec: str, expected: FaultSpec) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["TailLogEntries=break", "TailLogEntries=break:x"])
def test_a_break_without_a_count_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="count of responses"):
        parse_spec(spec)


def test_a_negative_break_is_refused() -> None:
    with pytest.raises(ConfigError, match="0 or more"):
        FaultInjector().break_stream("TailLogEntries", -1)
