"""What ``deploy-guard watch`` must never do, end to end against the emulator.

The worst thing a watch can do is roll back a healthy revision: a source that
cannot read, a session Cloud Run itself cut, a deploy the watch has not read
yet, or a baseline that no longer serves must never become a fail. Next worst
is a signal it does not hear, or a watcher that goes silent while it works.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, REJECTED
from deploy_guard.measurements import MetricMeasurement
from waiting import eventually

from .test_cloud_run_limits_e2e import TimedChat
from .test_watch_e2e import (
    POLICIES,
    events,
    promote,
    watch_gate,
    watch_through_a_logging_outage,
)


def update(chat: Any, split: dict[str, int], **annotations: str) -> None:
    """Serve ``split`` (revision -> percent) and set ``annotations``, as a person would."""
    from google.cloud import run_v2

    svc = chat.get()
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc.traffic = [
        run_v2.TrafficTarget(type_=kind, revision=rev, percent=pct) for rev, pct in split.items()
    ]
    for key, value in annotations.items():
        svc.annotations[key] = value
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)
    assert chat.serving() == split


@pytest.mark.fault(
    "logs",
    "watch: Cloud Logging UNAVAILABLE, rule with missing_data: fail",
    "degraded, no rollback",
)
def test_missing_data_fail_never_turns_an_outage_into_a_rollback(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    """``missing_data: fail`` keeps a check from promoting blind; a watch must not act blind."""
    policy = POLICIES / "chat-watch-strict.yaml"
    cand, _ = watch_through_a_logging_outage(chat, emulator, tmp_path, policy)
    assert cand not in chat.get().annotations.get(REJECTED, "")


@pytest.mark.fault(
    "traffic",
    "watch: a deploy whose request timeout cuts the canary's sessions",
    "followed, those rules not judged, no rollback",
)
async def test_a_deploy_whose_request_timeout_cuts_the_sessions_is_not_rolled_back(
    emulator: Any, gcp_clients: Any, fast_polling: Any
) -> None:
    """Cloud Run cuts every session at the request timeout (1006): not the revision's fault."""
    chat = TimedChat(emulator, gcp_clients, fast_polling)
    chat.first()
    gate = watch_gate(gcp_clients, emulator, duration=12.0)
    task = asyncio.ensure_future(gate.run())
    try:
        await eventually(lambda: gate.report.revision, within=30, what="watching")
        chat.timeout_s = 1  # `gcloud run deploy --timeout=1`: shorter than a canary session
        new = await asyncio.to_thread(chat.candidate, None, tag=None, percent=100)
        report = await asyncio.wait_for(task, 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert report.action == "none", report.message
    assert report.exit_code == 0, report.message
    assert chat.serving() == {new: 100}
    assert report.revision == new
    assert any("request timeout of 1s" in note for note in report.notes), report.notes
    rows = {r["rule"]: r for r in report.rules}
    for name in ("chat-golden-path-canary", "chat-golden-path"):  # not judged on the new one
        assert rows[name]["status"] == "pending"
        assert rows[name]["message"].startswith(f"not judged on {new}: its request timeout")
    assert rows["health"]["status"] == "pass"


@pytest.mark.fault(
    "traffic",
    "watch: a bad deploy lands between two reads of the service",
    "re-read before acting: the new revision followed and rolled back, not the old one",
)
async def test_a_deploy_not_read_yet_is_followed_before_acting(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """The canary meets a new, bad revision before the watch has read the service: the watch
    re-reads the service before it acts, and rolls back the revision that failed, not the
    one it thought it watched (whose write, against a stale read, would be refused)."""
    base = chat.first()
    update(chat, {base: 100}, **{LAST_KNOWN_GOOD: base})
    gate = watch_gate(gcp_clients, emulator, service_interval=3600.0, duration=60.0)
    task = asyncio.ensure_future(gate.run())
    try:
        await eventually(
            lambda: "window_judged" in events(gate.report), within=30, what="base judged"
        )
        bad_env = {"CHAT_BAD_AFTER": "0"}
        bad = await asyncio.to_thread(chat.candidate, bad_env, tag=None, percent=100)
        report = await asyncio.wait_for(task, 60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (report.exit_code, report.action) == (1, "rolled_back"), report.message
    assert report.watch["rollbacks"][0]["revision"] == bad
    assert chat.serving() == {base: 100}
    rejected = chat.get().annotations.get(REJECTED, "")
    assert bad in rejected
    assert base not in rejected


async def test_a_baseline_that_stops_serving_is_no_longer_compared_with(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """``relative_to_baseline`` against a revision with no traffic left compares with nothing:
    its count falls to zero and any line of the watched revision would fail it."""
    base = chat.first()
    new = chat.candidate(tag=None, percent=50)
    update(chat, {base: 50, new: 50}, **{LAST_KNOWN_GOOD: base})
    gate = watch_gate(gcp_clients, emulator)
    task = asyncio.ensure_future(gate.run())
    try:
        await eventually(lambda: gate.report.baseline == [base], within=30, what="a baseline")
        assert gate.report.revision == new
        await asyncio.to_thread(update, chat, {new: 100})
        await eventually(lambda: gate.report.baseline == [], within=30, what="no baseline")
        assert gate.report.revision == new
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert chat.serving() == {new: 100}


@pytest.mark.fault(
    "signals",
    "watch --keep-watching: SIGTERM during the rollback write",
    "the write finished and verified, then the watch stops (0 without --for, 1 with)",
)
@pytest.mark.parametrize(("duration", "code"), [(None, 0), (120.0, 1)])
async def test_a_signal_during_the_rollback_write_ends_the_watch_after_the_write(
    chat: Any, gcp_clients: Any, emulator: Any, duration: float | None, code: int
) -> None:
    """With --keep-watching too: the write is finished, verified, and then the watch stops."""
    base = chat.first()
    cand = chat.candidate({"CHAT_BAD_AFTER": "2"}, tag=None, percent=0)
    promote(chat, base, cand)
    emulator.faults.delay("UpdateService", 2.0, times=1)  # the rollback's write
    gate = watch_gate(gcp_clients, emulator, keep_watching=True, duration=duration)
    task = asyncio.ensure_future(gate.run())
    try:
        await eventually(
            lambda: "rollback_requested" in events(gate.report), within=30, what="the rollback"
        )
        task.cancel()  # SIGTERM while the write is in flight
        report = await asyncio.wait_for(asyncio.shield(task), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert report.exit_code == code, report.message
    assert report.action == "rolled_back", report.message
    assert chat.serving() == {base: 100}
    assert "watch_interrupted" in events(report)
    assert "rollback_verified" in events(report)


class Flapping:
    """A metric source whose reads fail and succeed in turn: the status flips every read.

    The watch builds a source per read; they share ``reads``."""

    def __init__(self, rules: tuple[Any, ...], reads: list[int]) -> None:
        self.rules, self.reads = rules, reads

    async def measure(self, *, complete: bool, deadline: float | None = None) -> list[Any]:
        self.reads.append(1)
        now = datetime.now(UTC)
        return [
            MetricMeasurement(
                rule=r.name,
                metric="error_rate",
                value=0.0,
                requests=100,
                complete=True,
                start=now - timedelta(minutes=1),
                end=now,
                error="Monitoring blinked" if len(self.reads) % 2 else None,
            )
            for r in self.rules
            if r.kind == "metric"
        ]


async def test_the_heartbeat_and_the_service_reads_go_on_while_the_status_flaps(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """A status that changes every second must not starve the minute's heartbeat (the
    watcher would look dead) nor the reads of the service (deploys would go unseen)."""
    chat.first()
    policy = POLICIES / "chat-watch-flapping.yaml"
    gate = watch_gate(gcp_clients, emulator, policy=policy, service_interval=2.0)
    real, reads = gate.sources, []

    def sources(scope: Any) -> Any:
        return replace(real(scope), metrics=Flapping(scope.rules, reads))

    gate.sources = sources
    with capture_logs() as logs:
        task = asyncio.ensure_future(gate.run())
        try:
            await eventually(
                lambda: sum(e["event"] == "watch_heartbeat" for e in logs) >= 2,
                within=30,
                what="two heartbeats",
            )
            new = await asyncio.to_thread(chat.candidate, None, tag=None, percent=100)
            await eventually(lambda: gate.report.revision == new, within=30, what="followed")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert events(gate.report).count("window_judged") >= 4  # it did flap
