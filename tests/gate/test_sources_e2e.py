"""The Cloud Logging and Cloud Monitoring sources against the emulator, on their own."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import websockets

from deploy_guard.emulator.realism import Realism
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.gcp.logs import CloudLogging
from deploy_guard.gcp.metrics import CloudMonitoring
from deploy_guard.policy.load import load_file
from deploy_guard.policy.model import Rule
from waiting import eventually

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "chat-agent.yaml"


def tag_url(chat: Any, tag: str) -> str:
    return next(t.uri for t in chat.get().traffic_statuses if t.tag == tag)


def metric_rule(name: str, kind: str, **extra: Any) -> Rule:
    return Rule.model_validate(
        {"name": name, "kind": "metric", "metric": {"type": kind, "min_requests": 1, **extra}}
    )


async def test_monitoring_counts_requests_and_5xx_of_the_candidate(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_HEALTH_STATUS": "503"})
    async with httpx.AsyncClient() as http:
        for _ in range(6):
            await http.get(tag_url(chat, "candidate") + "/health")
    source = CloudMonitoring(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision=cand,
        rules=[
            metric_rule("errors", "error_rate", max=0.01, baseline={"factor": 1.0}),
            metric_rule("count", "request_count", min=1),
            metric_rule("p99", "latency", percentile=99, max=5.0),
        ],
        since=datetime.now(UTC) - timedelta(minutes=5),
        baseline=[base],
    )
    by_rule = {m.rule: m for m in await source.measure(complete=True)}
    assert by_rule["errors"].error is None, by_rule["errors"].error
    assert by_rule["errors"].value == 1.0
    assert by_rule["errors"].requests == 6
    assert by_rule["errors"].baseline_value is None  # the baseline served nothing: no data
    assert by_rule["count"].value == 6
    assert by_rule["p99"].value is not None
    assert 0 <= by_rule["p99"].value < 5.0


def logs_rule(name: str, patterns: list[str], fragment: str | None = None) -> Rule:
    return Rule.model_validate(
        {
            "name": name,
            "kind": "logs",
            "logs": {"filter": fragment, "patterns": patterns, "max_count": 0},
        }
    )


async def test_logging_pages_are_bounded_counted_and_deduplicated(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    async with httpx.AsyncClient() as http:
        for _ in range(10):  # ten request logs at least: more than three pages of two
            await http.get(tag_url(chat, "candidate") + "/health")
    calls = ApiCalls()
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision=cand,
        rules=[logs_rule("all", []), logs_rule("errors", ["failed"], "severity>=ERROR")],
        since=datetime.now(UTC) - timedelta(minutes=5),
        calls=calls,
        page_size=2,
        max_pages=3,
    )
    first = {m.rule: m for m in await source.measure(complete=False)}
    assert calls.get("logging", "ListLogEntries") == 3  # bounded: 3 pages of 2
    assert first["all"].entries_scanned == 6
    second = {m.rule: m for m in await source.measure(complete=True)}
    # the next pass starts a minute before the newest entry seen and skips duplicates
    assert second["all"].entries_scanned > 6
    assert second["all"].entries_scanned == second["all"].matches["*"]
    assert len(source.filters) == 2


async def test_logging_errors_become_data(chat: Any, gcp_clients: Any, emulator: Any) -> None:
    cand = chat.first()
    emulator.faults.fail("ListLogEntries", grpc.StatusCode.PERMISSION_DENIED)
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision=cand,
        rules=[logs_rule("errors", ["x"])],
        since=datetime.now(UTC),
    )
    (m,) = await source.measure(complete=True)
    assert m.error is not None
    assert "roles/logging.viewer" in m.error


#: The realistic profile with only its empty pages: every first page of a query is
#: empty with a token (then real, then empty again...).
EMPTY_FIRST_PAGES = {
    "realistic": Realism(
        logs_delay_s=0,
        route_delay_s=0,
        metric_min_lag_s=0,
        metric_max_lag_s=0,
        empty_page_ratio=1.0,
    )
}


async def _error_lines(chat: Any, n: int) -> str:
    """A candidate that logged ``n`` ERROR lines ("tool call failed"), read back once."""
    chat.first()
    cand = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    async with websockets.connect(
        tag_url(chat, "candidate").replace("http", "ws") + "/ws/chat"
    ) as ws:
        for i in range(n):
            await ws.send(json.dumps({"type": "message", "user_id": "u", "session_id": f"s{i}"}))
            while json.loads(await ws.recv())["type"] != "agent_completed":
                pass
    return cand


@pytest.mark.parametrize("emulator", [EMPTY_FIRST_PAGES], indirect=True)
@pytest.mark.fault(
    "logs",
    "first ListLogEntries page empty with a next_page_token",
    "reader pages on: entries counted, not 'no entries'",
)
async def test_an_empty_first_page_with_a_token_is_not_no_entries(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    cand = await _error_lines(chat, 3)
    calls = ApiCalls()
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision=cand,
        rules=[logs_rule("tool-errors", ["tool call failed"], "severity>=ERROR")],
        since=datetime.now(UTC) - timedelta(minutes=5),
        calls=calls,
        max_pages=1,  # one page with entries: the empty one before it is not that page
    )
    [m] = await source.measure(complete=True)
    assert m.error is None, m.error
    assert m.matches == {"tool call failed": 3}
    assert calls.get("logging", "ListLogEntries") == 2  # the empty page, then the real one
    assert emulator.logs.empty_pages_served == 1


@pytest.mark.parametrize("emulator", [EMPTY_FIRST_PAGES], indirect=True)
@pytest.mark.fault(
    "logs",
    "last pass stops with empty pages and a token left",
    "error (incomplete search), never a pass",
)
async def test_a_last_pass_whose_search_did_not_finish_is_an_error_not_a_pass(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    cand = await _error_lines(chat, 1)
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision=cand,
        rules=[logs_rule("tool-errors", ["tool call failed"], "severity>=ERROR")],
        since=datetime.now(UTC) - timedelta(minutes=5),
        max_empty_pages=1,
    )
    [during] = await source.measure(complete=False)
    assert during.error is None  # a pass while probing: the next one goes on from there
    [last] = await source.measure(complete=True)
    assert last.error is not None
    assert "had not finished searching" in last.error
    assert "next_page_token" in last.error


@pytest.mark.fault(
    "logs",
    "container died: 'Container called exit(1).' at WARNING",
    "counted by the shipped policy's no-crashes-in-logs, not by severity>=ERROR",
)
async def test_the_shipped_crash_rule_counts_a_warning_exit_line_that_error_rules_miss(
    chat: Any, gcp_clients: Any, emulator: Any, revision_app: Any
) -> None:
    rules = [
        r for r in load_file(SHIPPED).rules if r.name in ("no-crashes-in-logs", "no-error-logs")
    ]
    chat.first()
    cand = chat.candidate(command=[sys.executable, str(revision_app)])
    async with httpx.AsyncClient() as http:
        await http.get(tag_url(chat, "candidate") + "/exit", params={"code": "1"})

    def exit_logged() -> bool:
        return any(
            e["resource"]["labels"]["revision_name"] == cand
            for e in emulator.logs.entries('log_id("run.googleapis.com/varlog/system")')
        )

    await eventually(exit_logged, what="the exit line")
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision=cand,
        rules=rules,
        since=datetime.now(UTC) - timedelta(minutes=5),
    )
    by_rule = {m.rule: m for m in await source.measure(complete=True)}
    crash = by_rule["no-crashes-in-logs"]
    assert crash.matches["Container called exit\\("] == 1
    assert crash.samples[0]["severity"] == "WARNING"
    assert crash.samples[0]["text"] == "Container called exit(1)."
    assert by_rule["no-error-logs"].total == 0  # WARNING: no ERROR entry says it
