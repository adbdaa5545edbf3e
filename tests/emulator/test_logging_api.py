"""Cloud Logging v2 over gRPC: the official client against the emulator's handlers.

A real ``grpc.aio`` server on 127.0.0.1:0 serves :func:`logging_api.handlers`;
the client is ``LoggingServiceV2Client`` built by ``deploy_guard.gcp.clients``
(so the same insecure-channel path the guard uses). The sync client runs in a
worker thread, because the server lives on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.logging_v2.types import LogEntry, TailLogEntriesRequest
from google.logging.type import log_severity_pb2 as LogSeverity

from deploy_guard.emulator import logging_api
from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.emulator.logstore import LogStore
from deploy_guard.gcp.clients import Clients
from waiting import wait_until

OLD = RevisionRef("proj", "europe-west1", "chat", "chat-00001-aaa", "chat")
NEW = RevisionRef("proj", "europe-west1", "chat", "chat-00002-bbb", "chat")
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SINCE = 'timestamp>="2026-11-25T11:00:00Z"'


@pytest.fixture
async def served(serve_handlers: Any) -> tuple[LogStore, Clients]:
    store = LogStore()
    return store, await serve_handlers(logging_api.handlers(store))


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def list_entries(clients: Clients, filter_: str, **extra: Any) -> list[LogEntry]:
    def run() -> list[LogEntry]:
        request = {"resource_names": ["projects/proj"], "filter": filter_, **extra}
        return list(clients.logging().list_log_entries(request=request))

    return await call(run)


def record(ref: RevisionRef, status: int, at: datetime, url: str = "/chat") -> RequestRecord:
    return RequestRecord(
        ref=ref,
        method="GET",
        url=f"https://chat.example{url}",
        protocol="HTTP/1.1",
        status=status,
        latency_s=0.25,
        start_time=at,
        end_time=at + timedelta(seconds=0.25),
        user_agent="probe/1",
        remote_ip="127.0.0.1",
    )


async def test_json_and_text_lines_become_payloads_with_resource_labels(served: Any) -> None:
    store, clients = served
    line = json.dumps({"severity": "warn", "message": "orchestrator slow", "user": "u1"})
    store.revision_output(NEW, "stdout", line, T0)
    store.revision_output(NEW, "stderr", "Traceback: orchestrator is None", T0)

    entries = await list_entries(clients, SINCE)

    assert [e.log_name for e in entries] == [
        "projects/proj/logs/run.googleapis.com%2Fstdout",
        "projects/proj/logs/run.googleapis.com%2Fstderr",
    ]
    structured, text = entries
    assert structured.severity == LogSeverity.WARNING
    assert dict(structured.json_payload) == {"message": "orchestrator slow", "user": "u1"}
    assert text.text_payload == "Traceback: orchestrator is None"
    assert text.severity == LogSeverity.DEFAULT
    assert structured.resource.type == "cloud_run_revision"
    assert dict(structured.resource.labels) == {
        "project_id": "proj",
        "location": "europe-west1",
        "service_name": "chat",
        "revision_name": "chat-00002-bbb",
        "configuration_name": "chat",
    }
    assert structured.insert_id
    assert structured.insert_id != text.insert_id
    assert structured.receive_timestamp >= structured.timestamp


async def test_filters_by_revision_severity_substring_and_regex(served: Any) -> None:
    store, clients = served
    store.revision_output(OLD, "stdout", '{"severity":"ERROR","message":"old failure"}', T0)
    store.revision_output(NEW, "stdout", '{"severity":"ERROR","message":"WebSocket 1011"}', T0)
    store.revision_output(NEW, "stdout", '{"severity":"INFO","message":"ok 1011"}', T0)
    store.revision_output(NEW, "stderr", "Orchestrator is None", T0)
    rev = 'resource.labels.revision_name="chat-00002-bbb"'

    errors = await list_entries(clients, f"{SINCE} {rev} AND severity>=ERROR")
    # {"severity", "message"} only: the message is textPayload, as on Cloud Logging
    assert [e.text_payload for e in errors] == ["WebSocket 1011"]

    text = await list_entries(clients, f'{SINCE} {rev} textPayload:"orchestrator is"')
    assert [e.text_payload for e in text] == ["Orchestrator is None"]

    regex = await list_entries(clients, f'{SINCE} {rev} textPayload=~"^WebSocket \\d+$"')
    assert len(regex) == 1

    either = await list_entries(
        clients, f'{SINCE} {rev} (textPayload:"1011" OR textPayload:"None") -severity=INFO'
    )
    assert len(either) == 2


async def test_request_logs_carry_http_request_and_status_severity(served: Any) -> None:
    store, clients = served
    store.request(record(NEW, 200, T0))
    store.request(record(NEW, 404, T0 + timedelta(seconds=1)))
    store.request(record(NEW, 503, T0 + timedelta(seconds=2), url="/x?token=s3cret"))

    entries = await list_entries(clients, f'{SINCE} log_id("run.googleapis.com/requests")')

    assert [e.severity for e in entries] == [
        LogSeverity.INFO,
        LogSeverity.WARNING,
        LogSeverity.ERROR,
    ]
    last = entries[-1].http_request
    assert last.status == 503
    assert last.request_method == "GET"
    assert last.latency.ToTimedelta().total_seconds() == pytest.approx(0.25)
    assert "s3cret" not in last.request_url
    five = await list_entries(clients, f"{SINCE} httpRequest.status>=500")
    assert len(five) == 1


async def test_audit_entries_use_the_activity_log(served: Any) -> None:
    store, clients = served
    from deploy_guard.emulator.audit import record_admin_activity

    record_admin_activity(
        store,
        project="proj",
        location="europe-west1",
        service="chat",
        method_name="google.cloud.run.v2.Services.UpdateService",
        resource_name="projects/proj/locations/europe-west1/services/chat",
        request={"traffic": [{"percent": 100}]},
        when=T0,
    )
    entries = await list_entries(
        clients, f'{SINCE} protoPayload.methodName="google.cloud.run.v2.Services.UpdateService"'
    )
    assert len(entries) == 1
    assert entries[0].log_name.endswith("cloudaudit.googleapis.com%2Factivity")
    assert entries[0].severity == LogSeverity.NOTICE


async def test_order_by_desc_and_paging_with_tokens(served: Any) -> None:
    store, clients = served
    store.append(
        {
            "logName": "projects/proj/logs/app",
            "resource": {"type": "global"},
            "timestamp": (T0 + timedelta(milliseconds=i)).isoformat(),
            "textPayload": f"line {i}",
        }
        for i in range(2100)
    )

    def pages(order_by: str) -> list[list[str]]:
        pager = clients.logging().list_log_entries(
            request={
                "resource_names": ["projects/proj"],
                "filter": SINCE,
                "order_by": order_by,
                "page_size": 1000,
            }
        )
        return [[e.text_payload for e in page.entries] for page in pager.pages]

    asc = await call(pages, "timestamp asc")
    assert [len(p) for p in asc] == [1000, 1000, 100]
    flat = [t for p in asc for t in p]
    assert flat == [f"line {i}" for i in range(2100)]
    desc = await call(pages, "timestamp desc")
    assert [t for p in desc for t in p] == flat[::-1]


async def test_bad_requests_are_invalid_argument(served: Any) -> None:
    _store, clients = served
    with pytest.raises(gexc.InvalidArgument) as bad_filter:
        await list_entries(clients, 'severity>=ERROR AND (textPayload:"x"')
    assert "Unparseable filter" in bad_filter.value.message
    assert "column 37" in bad_filter.value.message
    with pytest.raises(gexc.InvalidArgument, match="order_by"):
        await list_entries(clients, SINCE, order_by="severity desc")
    with pytest.raises(gexc.InvalidArgument, match="page_size"):
        await list_entries(clients, SINCE, page_size=1001)
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        await list_entries(clients, SINCE, page_token="not-a-token")
    with pytest.raises(gexc.InvalidArgument, match="resource_names"):
        await call(lambda: list(clients.logging().list_log_entries(request={"filter": SINCE})))


async def test_a_token_from_another_query_is_refused(served: Any) -> None:
    store, clients = served
    for i in range(3):
        store.revision_output(NEW, "stdout", f"line {i}", T0 + timedelta(seconds=i))

    def first_token() -> str:
        request = {"resource_names": ["projects/proj"], "filter": SINCE, "page_size": 1}
        pager = clients.logging().list_log_entries(request=request)
        return str(pager.next_page_token)

    token = await call(first_token)
    assert token
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        await list_entries(clients, f"{SINCE} severity>=DEFAULT", page_token=token, page_size=1)


async def test_write_log_entries_applies_defaults_and_validates(served: Any) -> None:
    _store, clients = served

    def write(**request: Any) -> None:
        clients.logging().write_log_entries(request=request)

    await call(
        write,
        log_name="projects/proj/logs/deploy-guard",
        resource={"type": "global", "labels": {"project_id": "proj"}},
        labels={"run": "r1"},
        entries=[
            {"json_payload": {"message": "verdict", "rule": "ws"}, "severity": "NOTICE"},
            {"text_payload": "second", "labels": {"run": "r2"}},
        ],
    )
    entries = await list_entries(clients, 'logName="projects/proj/logs/deploy-guard"')
    assert [dict(e.labels) for e in entries] == [{"run": "r1"}, {"run": "r2"}]
    assert entries[0].json_payload["rule"] == "ws"

    with pytest.raises(gexc.InvalidArgument, match="log_name"):
        await call(write, entries=[{"text_payload": "no name", "resource": {"type": "global"}}])
    with pytest.raises(gexc.InvalidArgument, match="1 valid entries were written"):
        await call(
            write,
            resource={"type": "global"},
            partial_success=True,
            entries=[
                {"log_name": "projects/proj/logs/partial", "text_payload": "kept"},
                {"log_name": "bad/name", "text_payload": "dropped"},
            ],
        )
    kept = await list_entries(clients, 'log_id("partial")')
    assert [e.text_payload for e in kept] == ["kept"]


async def test_list_logs_names_each_log_once(served: Any) -> None:
    store, clients = served
    store.revision_output(NEW, "stdout", "a", T0)
    store.revision_output(NEW, "stdout", "b", T0)
    store.request(record(NEW, 200, T0))
    names = await call(lambda: list(clients.logging().list_logs(parent="projects/proj")))
    assert names == [
        "projects/proj/logs/run.googleapis.com%2Frequests",
        "projects/proj/logs/run.googleapis.com%2Fstdout",
    ]


def test_special_json_fields_are_lifted_out_like_cloud_logging() -> None:
    store = LogStore()
    line = json.dumps(
        {
            "severity": 500,
            "message": "boom",
            "time": "2026-11-25T12:00:05.5Z",
            "logging.googleapis.com/labels": {"run": "r9"},
            "logging.googleapis.com/trace": "projects/proj/traces/abc",
        }
    )
    store.revision_output(NEW, "stdout", line, T0)
    store.revision_output(NEW, "stdout", '{"severity": "exception", "message": "x"}', T0)
    store.revision_output(NEW, "stdout", "[1, 2]", T0)  # JSON, but not an object: text
    store.revision_output(NEW, "stdout", "   ", T0)  # blank lines are not logged
    second, third, first = store.entries()  # time order: "time" moved the first one later
    assert first["textPayload"] == "boom"  # message was the only field left
    assert "jsonPayload" not in first
    assert first["timestamp"] == "2026-11-25T12:00:05.500000Z"
    assert first["labels"] == {"run": "r9"}
    assert first["trace"] == "projects/proj/traces/abc"
    assert (first["severity"], second["severity"]) == ("ERROR", "ERROR")
    assert third["textPayload"] == "[1, 2]"


async def test_special_json_fields_become_log_entry_fields(served: Any) -> None:
    # Cloud Run's agent moves these keys out of jsonPayload into the LogEntry
    # ("Structured logging: special JSON fields"), so the usual filters find them.
    store, clients = served
    line = {
        "severity": "ERROR",
        "message": "upstream failed",
        "httpRequest": {"requestMethod": "GET", "requestUrl": "/chat", "status": 502},
        "logging.googleapis.com/sourceLocation": {"file": "app.py", "line": 12, "function": "h"},
        "logging.googleapis.com/trace_sampled": True,
        "logging.googleapis.com/operation": {"id": "op-1", "producer": "chat", "first": True},
        "timestampSeconds": int(T0.timestamp()) + 7,
        "timestampNanos": 250_000_000,
    }
    store.revision_output(NEW, "stdout", json.dumps(line), T0)
    object_time = {"message": "object time", "timestamp": {"seconds": int(T0.timestamp()) + 9}}
    store.revision_output(NEW, "stdout", json.dumps(object_time), T0)
    # a special key whose value does not fit its LogEntry field stays in jsonPayload
    store.revision_output(NEW, "stdout", json.dumps({"message": "odd", "httpRequest": "GET"}), T0)

    [odd] = await list_entries(clients, f'{SINCE} jsonPayload.message="odd"')
    assert dict(odd.json_payload) == {"message": "odd", "httpRequest": "GET"}
    [failed] = await list_entries(clients, f"{SINCE} httpRequest.status>=500")
    assert failed.text_payload == "upstream failed"  # only message was left
    assert failed.severity == LogSeverity.ERROR
    assert failed.http_request.status == 502
    assert failed.http_request.request_url == "/chat"
    assert failed.source_location.file == "app.py"
    assert failed.source_location.line == 12
    assert failed.source_location.function == "h"
    assert failed.trace_sampled is True
    assert (failed.operation.id, failed.operation.producer) == ("op-1", "chat")
    assert failed.operation.first is True
    assert failed.timestamp == T0 + timedelta(seconds=7, milliseconds=250)
    for filter_ in ('sourceLocation.file="app.py"', "traceSampled=true", 'operation.id="op-1"'):
        assert [e.insert_id for e in await list_entries(clients, f"{SINCE} {filter_}")] == [
            failed.insert_id
        ]
    assert await list_entries(clients, f"{SINCE} jsonPayload.httpRequest.status=502") == []
    [timed] = await list_entries(clients, f'{SINCE} textPayload="object time"')
    assert timed.timestamp == T0 + timedelta(seconds=9)


def test_a_revisions_structured_lines_reach_the_entry_fields(
    emulator: Any, gcp_clients: Clients, fast_polling: Any
) -> None:
    """The same through a real revision process and the whole emulator."""
    from google.cloud import run_v2

    app = """
import http.server, json, os
print(json.dumps({"severity": "WARNING", "message": "slow upstream",
    "httpRequest": {"requestMethod": "POST", "status": 503, "latency": "2.5s"},
    "logging.googleapis.com/sourceLocation": {"file": "app.py", "line": "7"}}), flush=True)
server = http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])),
                                http.server.SimpleHTTPRequestHandler)
server.serve_forever()
"""
    container = run_v2.Container(image="local/app", command=[sys.executable, "-c", app])
    gcp_clients.services().create_service(
        parent=emulator.parent,
        service=run_v2.Service(template=run_v2.RevisionTemplate(containers=[container])),
        service_id="structured",
    ).result(polling=fast_polling)
    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = (
        f'timestamp>="{since}" log_id("run.googleapis.com/stdout") '
        'httpRequest.status>=500 sourceLocation.file="app.py"'
    )

    def found() -> list[LogEntry]:
        request = {"resource_names": ["projects/local-project"], "filter": query}
        return list(gcp_clients.logging().list_log_entries(request=request))

    [entry] = wait_until(found, what="the revision's structured line")
    assert entry.severity == LogSeverity.WARNING
    assert entry.http_request.latency.ToTimedelta().total_seconds() == pytest.approx(2.5)
    assert entry.source_location.line == 7
    assert entry.text_payload == "slow upstream"  # message was the only field left


async def test_write_refuses_timestamps_beyond_a_day_ahead_or_the_retention_period(
    served: Any,
) -> None:
    _store, clients = served
    now = datetime.now(UTC)

    def write(*stamps: datetime, partial: bool = False) -> None:
        clients.logging().write_log_entries(
            request={
                "log_name": "projects/proj/logs/stamps",
                "resource": {"type": "global"},
                "partial_success": partial,
                "entries": [{"text_payload": f"{t:%Y-%m-%d %H}", "timestamp": t} for t in stamps],
            }
        )

    ahead = now + timedelta(hours=25)
    too_old = now - timedelta(days=31)
    with pytest.raises(gexc.InvalidArgument, match=r"entries\[0\]: .* over a day in the future"):
        await call(write, ahead)
    with pytest.raises(gexc.InvalidArgument, match=r"entries\[0\]: .* retention period"):
        await call(write, too_old)
    # per entry, like any bad entry: partial_success writes the others
    inside = [now + timedelta(hours=23), now - timedelta(days=29)]
    with pytest.raises(gexc.InvalidArgument, match=r"entries\[1\].*entries\[3\]") as info:
        await call(write, inside[0], ahead, inside[1], too_old, partial=True)
    assert "2 valid entries were written" in info.value.message

    def stored() -> list[str]:
        request = {"resource_names": ["projects/proj"], "filter": 'log_id("stamps")'}
        return [e.text_payload for e in clients.logging().list_log_entries(request=request)]

    assert await call(stored) == [f"{t:%Y-%m-%d %H}" for t in sorted(inside)]


def test_store_is_bounded_and_time_ordered() -> None:
    store = LogStore(max_entries=100)
    store.append(
        {"logName": "projects/proj/logs/app", "timestamp": (T0 + timedelta(seconds=i)).isoformat()}
        for i in range(1000)
    )
    assert 100 <= len(store) <= 110
    kept = store.entries()
    assert kept[-1]["timestamp"] == "2026-11-25T12:16:39.000000Z"  # the newest survive
    store.append([{"logName": "projects/proj/logs/app", "timestamp": "2026-11-25T12:16:00Z"}])
    stamps = [e["timestamp"] for e in store.entries()]
    assert stamps == sorted(stamps)  # a late, older entry lands in time order
    with pytest.raises(ValueError, match="logName"):
        store.append([{"logName": "nope"}])


async def test_tail_with_a_bad_filter_is_invalid_argument(served: Any) -> None:
    _store, clients = served

    def tail() -> None:
        request = TailLogEntriesRequest(resource_names=["projects/proj"], filter="severity>=")
        for _ in clients.logging().tail_log_entries(iter([request]), timeout=5):
            pass

    with pytest.raises(gexc.InvalidArgument, match="column 11"):
        await call(tail)


async def test_an_ingestion_delay_holds_entries_back_from_listing(serve_handlers: Any) -> None:
    """``--logs-delay``: an entry is listed only that long after it arrived, as on Cloud Logging."""
    now = [datetime.now(UTC)]
    store = LogStore(clock=lambda: now[0], delay_s=5)
    clients = await serve_handlers(logging_api.handlers(store))
    store.revision_output(NEW, "stdout", '{"severity":"ERROR","message":"late"}', now[0])
    flt = f'timestamp>="{(now[0] - timedelta(minutes=1)).isoformat()}"'
    assert await list_entries(clients, flt) == []
    now[0] += timedelta(seconds=4.9)
    assert await list_entries(clients, flt) == []
    now[0] += timedelta(seconds=0.2)
    [entry] = await list_entries(clients, flt)
    assert entry.text_payload == "late"


@pytest.mark.fault(
    "logs", "JSON line with only message left", "textPayload, as Cloud Logging stores it"
)
def test_a_json_line_whose_only_remaining_field_is_message_is_text_payload() -> None:
    """ "message is saved as textPayload if it is the only field remaining after the
    Logging agent moves the other special-purpose fields" (structured logging docs)."""
    store = LogStore()
    only = {"severity": "ERROR", "message": "tool failed", "time": "2026-11-25T11:59:59Z"}
    store.revision_output(NEW, "stdout", json.dumps(only), T0)
    special = {
        "message": "with specials",
        "logging.googleapis.com/labels": {"k": "v"},
        "httpRequest": {"status": 502},
    }
    store.revision_output(NEW, "stdout", json.dumps(special), T0)
    store.revision_output(NEW, "stdout", json.dumps({"message": "m", "user": "u1"}), T0)
    store.revision_output(NEW, "stdout", json.dumps({"message": {"nested": 1}}), T0)
    plain, specials, two, nested = store.entries()
    assert (plain["textPayload"], plain["severity"]) == ("tool failed", "ERROR")
    assert "jsonPayload" not in plain
    assert specials["textPayload"] == "with specials"
    assert specials["labels"] == {"k": "v"}
    assert specials["httpRequest"]["status"] == 502
    assert two["jsonPayload"] == {"message": "m", "user": "u1"}  # another field: jsonPayload
    assert nested["jsonPayload"] == {"message": {"nested": 1}}  # not a string: kept as it is


@pytest.mark.fault(
    "logs", "plain stderr line and a Python traceback", "one DEFAULT textPayload entry per line"
)
def test_plain_output_lines_and_a_traceback_are_default_text_entries() -> None:
    store = LogStore()
    traceback = [
        "ERROR:    Exception in ASGI application",
        "Traceback (most recent call last):",
        '  File "/app/main.py", line 12, in chat',
        "    await agent.run()",
        "AttributeError: 'NoneType' object has no attribute 'run'",
    ]
    for line in traceback:
        store.revision_output(NEW, "stderr", line + "\n", T0)
    store.revision_output(NEW, "stdout", "listening on 8080", T0)
    entries = store.entries()
    assert [e["textPayload"] for e in entries] == [*traceback, "listening on 8080"]
    assert {e["severity"] for e in entries} == {"DEFAULT"}  # "ERROR:" in the text is no severity
    assert [e["logName"].rsplit("%2F", 1)[-1] for e in entries] == ["stderr"] * 5 + ["stdout"]


@pytest.mark.fault(
    "logs",
    "ListLogEntries page empty with a next_page_token (search ran out of time)",
    "paging on finds every entry",
)
async def test_realistic_pages_can_be_empty_with_a_token_and_paging_still_finds_everything(
    serve_handlers: Any,
) -> None:
    """ "If a value for next_page_token appears and the entries field is empty, it means
    that the search found no log entries so far but it did not have time to search all
    the possible log entries" (logging.proto). Never twice in a row for one token."""
    store = LogStore(empty_page_ratio=1.0)
    clients = await serve_handlers(logging_api.handlers(store))
    for i in range(5):
        store.revision_output(NEW, "stdout", f"line {i}", T0 + timedelta(seconds=i))

    def pages() -> list[tuple[list[str], bool]]:
        request = {"resource_names": ["projects/proj"], "filter": SINCE, "page_size": 2}
        pager = clients.logging().list_log_entries(request=request)
        return [([e.text_payload for e in p.entries], bool(p.next_page_token)) for p in pager.pages]

    shapes = await call(pages)
    assert shapes == [
        ([], True),
        (["line 0", "line 1"], True),
        ([], True),
        (["line 2", "line 3"], True),
        ([], True),
        (["line 4"], False),
    ]
    assert store.empty_pages_served == 3


async def test_empty_pages_are_drawn_from_the_seed(serve_handlers: Any) -> None:
    async def shapes(seed: int) -> list[int]:
        store = LogStore(empty_page_ratio=0.4, seed=seed)
        clients = await serve_handlers(logging_api.handlers(store))
        for i in range(12):
            store.revision_output(NEW, "stdout", f"line {i}", T0 + timedelta(seconds=i))

        def run() -> list[int]:
            request = {"resource_names": ["projects/proj"], "filter": SINCE, "page_size": 1}
            pager = clients.logging().list_log_entries(request=request)
            return [len(p.entries) for p in pager.pages]

        return await call(run)

    first, again, other = await shapes(7), await shapes(7), await shapes(8)
    assert first == again  # the same seed: the same pages, empty ones included
    assert 0 in first
    assert sum(first) == 12
    assert first != other
