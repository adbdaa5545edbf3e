"""Traces: bounded whatever the run, on the run's timeline, recorded only when bound."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from deploy_guard import traces
from deploy_guard.report.model import CheckReport
from deploy_guard.traces import (
    FIRST_SESSIONS,
    LOG_HEAD,
    LOG_TAIL,
    MAX_RULES,
    METRIC_HEAD,
    METRIC_TAIL,
    NOTABLE_HEAD,
    NOTABLE_TAIL,
    SessionTrace,
    Traces,
)


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def session(ok: bool = True, *, cut: bool = False, n: int = 0, code: int = 1000) -> SessionTrace:
    return SessionTrace(
        kind="websocket",
        ok=ok,
        cut=cut,
        end=7.0,
        handshake=0.01,
        events=tuple((0.02 + i / 100, f"event-{i}") for i in range(5)),
        hold=0.1,
        hold_wanted=60.0,
        close_code=code,
        closed_by="server",
        closed_at=7.0,
        cause=None if ok else "close_code",
        detail="" if ok else f"close code {code} after 7.0 s",
        user="user-1",
        session=f"s{n}",
    )


def test_a_sessions_start_is_placed_on_the_runs_timeline() -> None:
    clock = Clock(10.0)
    book = Traces(clock)
    book.session("chat", session(), age=7.5)
    [record] = book.to_dict()["sessions"]["chat"]["sessions"]
    assert record["t"] == 2.5  # ended now (10 s in), 7.5 s after it began
    assert record["events"][0] == [0.02, "event-0"]
    assert (record["close_code"], record["closed_by"], record["hold_wanted"]) == (
        1000,
        "server",
        60,
    )


def test_ten_thousand_sessions_keep_the_first_and_the_failed_ones_within_a_bound() -> None:
    clock = Clock()
    book = Traces(clock)
    for n in range(10_000):
        clock.now = n * 0.01
        failed = n % 100 == 99  # one in a hundred closes with 1011
        book.session("cycles", session(not failed, n=n, code=1011 if failed else 1000), age=0.005)
    doc = book.to_dict()["sessions"]["cycles"]
    kept = doc["sessions"]
    assert len(kept) == FIRST_SESSIONS + NOTABLE_HEAD + NOTABLE_TAIL
    assert (doc["seen"], doc["failed"], doc["cut"]) == (10_000, 100, 0)
    assert doc["left_out"] == 10_000 - len(kept)
    ids = [r["session"] for r in kept]
    assert ids[:FIRST_SESSIONS] == [f"s{n}" for n in range(FIRST_SESSIONS)]
    failed_ids = [r["session"] for r in kept if not r["ok"]]
    # the first failures, and the latest: a long run's last incident is never dropped
    assert failed_ids[0] == "s99"
    assert failed_ids[-1] == "s9999"
    assert [r["t"] for r in kept] == sorted(r["t"] for r in kept)


def test_the_document_of_a_huge_run_stays_under_a_fixed_size() -> None:
    """However long the run, a rule's traces cost the report a bounded number of bytes."""
    clock = Clock()
    book = Traces(clock, wall=lambda: 1_800_000_000.0 + clock.now)
    for n in range(20_000):
        clock.now = n * 0.01
        book.session("a", session(n % 3 != 0, n=n, code=1011), age=0.01)
        book.log_match(
            "logs",
            datetime.fromtimestamp(1_800_000_000 + n * 0.01, UTC),
            severity="ERROR",
            text="x" * 5000,  # a log line of any length is kept short
        )
        book.metric_point("m", "error_rate", value=0.01, end=None, requests=n)
    size = len(json.dumps(book.to_dict()))
    assert size < 200_000, size
    doc = book.to_dict()
    assert len(doc["log_matches"]["logs"]["matches"]) == LOG_HEAD + LOG_TAIL
    assert doc["log_matches"]["logs"]["left_out"] == 20_000 - LOG_HEAD - LOG_TAIL
    assert len(doc["metric_points"]["m"]["points"]) == METRIC_HEAD + METRIC_TAIL


def test_cut_sessions_are_counted_apart_from_failures() -> None:
    book = Traces(Clock(8.0))
    book.session("hold", session(False, code=1011), age=7.5)
    book.session("hold", session(False, cut=True, code=0), age=7.5)
    doc = book.to_dict()["sessions"]["hold"]
    assert (doc["seen"], doc["failed"], doc["cut"]) == (2, 1, 1)


def test_log_matches_and_metric_points_share_the_sessions_time_axis() -> None:
    clock = Clock(20.0)
    wall0 = 1_800_000_000.0  # the run started at this UTC second
    book = Traces(clock, wall=lambda: wall0 + clock.now)
    book.log_match(
        "no-1011", datetime.fromtimestamp(wall0 + 7.25, UTC), severity="ERROR", text="1011"
    )
    book.metric_point(
        "error-rate",
        "error_rate",
        value=0.5,
        end=datetime.fromtimestamp(wall0 + 12.0, UTC),
        requests=10,
    )
    doc = book.to_dict()
    assert doc["log_matches"]["no-1011"]["matches"][0]["t"] == 7.25
    assert doc["metric_points"]["error-rate"]["points"][0]["t"] == 12.0
    assert doc["metric_points"]["error-rate"]["metric"] == "error_rate"


def test_rules_beyond_the_bound_are_counted_not_kept() -> None:
    book = Traces(Clock())
    for n in range(MAX_RULES + 5):
        book.session(f"rule-{n}", session(), age=0.0)
    doc = book.to_dict()
    assert len(doc["sessions"]) == MAX_RULES
    assert doc["rules_left_out"] == 5


async def test_recording_reaches_tasks_started_inside_and_stops_at_exit() -> None:
    book = Traces(Clock())
    assert traces.current() is None
    traces.session("r", session(), age=0.0)  # nothing bound: nothing recorded, no error
    with traces.recording(book):

        async def in_a_task() -> None:
            traces.session("r", session(), age=0.0)

        await asyncio.create_task(in_a_task())
        assert await asyncio.to_thread(lambda: traces.current() is book)
    assert traces.current() is None
    assert book.to_dict()["sessions"]["r"]["seen"] == 1


def test_a_report_carries_traces_only_when_there_are_some() -> None:
    report = CheckReport(revision="chat-00002-bbb")
    assert "traces" not in report.to_dict()  # a check that probed nothing: its fields as ever
    report.traces.session("ws", session(False, code=1011), age=1.0)
    doc = report.to_dict()
    assert doc["traces"]["sessions"]["ws"]["failed"] == 1
