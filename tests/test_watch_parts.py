"""The watch's small parts from plain data: what it judges, its bounds, fleet, health port."""

from __future__ import annotations

import asyncio
from typing import Any

import click
import pytest

from deploy_guard.actions.result import ActionResult
from deploy_guard.commands.watch import pick_service
from deploy_guard.gcp.traffic import Allocation, ServiceState
from deploy_guard.report.model import CheckReport, Timeline
from deploy_guard.runtime.health import MAX_HEAD, HealthServer
from deploy_guard.runtime.watch import _append, primary_revision
from deploy_guard.strategies.watch import Event, Judged, Watching


def state(split: dict[str, int], latest: str = "") -> ServiceState:
    return ServiceState(
        name="projects/p/locations/r/services/chat",
        short="chat",
        generation=1,
        latest_created_revision=latest,
        latest_ready_revision=latest,
        traffic=(),
        traffic_statuses=tuple(Allocation(revision=r, percent=p) for r, p in split.items()),
    )


def test_the_revision_watched_is_the_latest_ready_one_serving_else_the_largest_share() -> None:
    assert primary_revision(state({"v1": 90, "v2": 10}, latest="v2")) == "v2"
    assert primary_revision(state({"v1": 90, "v2": 10}, latest="v3")) == "v1"
    assert primary_revision(state({"v1": 0, "v2": 100}, latest="v1")) == "v2"
    assert primary_revision(state({})) is None


def test_a_capped_timeline_keeps_its_head_and_its_latest_and_counts_the_rest() -> None:
    timeline = Timeline()
    timeline.cap(3, 5)
    for i in range(1_000):
        timeline.add(f"e{i}")
    names = [e.event for e in timeline.events]
    assert names == ["e0", "e1", "e2", "e995", "e996", "e997", "e998", "e999"]
    assert timeline.dropped == 992
    report = CheckReport(revision="v1", command="watch")
    report.timeline = timeline
    assert report.to_dict()["timeline_dropped"] == 992
    assert "timeline_dropped" not in CheckReport(revision="v1").to_dict()  # a check's: as before


def test_the_history_stays_short_however_long_the_watch_runs() -> None:
    history: list[Event] = [Watching("v1")]
    for i in range(10_000):
        _append(history, Judged("v1", "pass" if i % 2 else "inconclusive"))
    assert len(history) == 2  # one record of the latest status
    for i in range(1_000):
        _append(history, Watching(f"v{i}"))
        _append(history, ActionResult("rollback", "none", 0, "x"))
    assert len(history) <= 200
    assert history[0] == Watching("v1")


def test_a_fleet_s_task_watches_the_service_its_index_names(tmp_path: Any) -> None:
    listed = tmp_path / "services.txt"
    listed.write_text("# the fleet\nchat\n\nbilling  # payments\n")
    assert pick_service((), str(listed), env={"CLOUD_RUN_TASK_INDEX": "1"}) == "billing"
    assert pick_service(("solo",), None, env={}) == "solo"
    assert pick_service(("a", "b"), None, env={"CLOUD_RUN_TASK_INDEX": "0"}) == "a"
    with pytest.raises(click.UsageError, match="CLOUD_RUN_TASK_INDEX"):
        pick_service(("a", "b"), None, env={})
    with pytest.raises(click.UsageError, match="only 2 services"):
        pick_service(("a", "b"), None, env={"CLOUD_RUN_TASK_INDEX": "2"})
    with pytest.raises(click.UsageError, match="not a number"):
        pick_service(("a", "b"), None, env={"CLOUD_RUN_TASK_INDEX": "one"})
    with pytest.raises(click.UsageError, match="cannot read"):
        pick_service((), str(tmp_path / "missing.txt"), env={})


async def test_the_health_port_bounds_what_a_client_may_send() -> None:
    server = HealthServer(0, lambda: {"status": "pass"}, host="127.0.0.1")
    port = await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD * 2) + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        assert b"pass" not in answer  # a head too large is never served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /anything HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK")
        assert answer.endswith(b'{"status": "pass"}')
    finally:
        await server.stop()
