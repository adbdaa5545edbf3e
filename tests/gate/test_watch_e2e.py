"""``deploy-guard watch`` end to end against the emulator.

The chat agent is promoted (100 %, recorded as last known good, the revision
before it recorded as what served before, as ``check --promote`` records them),
then watched. ``CHAT_BAD_AFTER=N`` turns it bad N seconds into its process's
life: every new session dies with 1011 and the orchestrator error is logged.
The CLI runs in-process for whole watches; the driver's Python API
(``build_gate``) where a test chooses the moment to interfere (a deploy, a
rollout, a restart).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, REJECTED, SERVED_BEFORE, encode_split
from deploy_guard.runtime.watch import WatchGate, WatchOptions
from gates import build_gate
from waiting import eventually, wait_until

POLICIES = Path(__file__).parent / "policies"
WATCH = POLICIES / "chat-watch.yaml"
WATCH_LOGS = POLICIES / "chat-watch-logs.yaml"
ROOT = Path(__file__).resolve().parents[2]


def promote(chat: Any, base: str, cand: str) -> None:
    """``cand`` serves 100 %, recorded as a passing check records it."""
    from google.cloud import run_v2

    svc = chat.get()
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc.traffic = [run_v2.TrafficTarget(type_=kind, revision=cand, percent=100)]
    svc.annotations[LAST_KNOWN_GOOD] = cand
    svc.annotations[SERVED_BEFORE] = encode_split({base: 100})
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)
    assert chat.serving() == {cand: 100}


def watch_gate(gcp_clients: Any, emulator: Any, *, policy: Path = WATCH, **options: Any) -> Any:
    options.setdefault("service", "chat")
    options.setdefault("service_interval", 0.5)
    return build_gate(
        gcp_clients,
        emulator,
        "",
        policy=policy,
        gate_class=WatchGate,
        options_class=WatchOptions,
        **options,
    )


def events(report: Any) -> list[str]:
    return [e.event for e in report.timeline.events]


def run_watch(tmp_path: Path, *flags: str, policy: Path = WATCH) -> tuple[int, dict[str, Any]]:
    report = tmp_path / f"watch-{len(list(tmp_path.iterdir()))}.json"
    args = ["watch", "--service", "chat", "--policy", str(policy), "--report", str(report)]
    args += ["--log-interval", "0.5s", "--service-interval", "0.5s", *flags]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, doc


def test_a_revision_that_turns_bad_is_rolled_back_to_the_last_known_good(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_BAD_AFTER": "4"}, tag=None, percent=0)
    promote(chat, base, cand)
    code, doc = run_watch(tmp_path, "--for", "60s")
    assert code == 1, doc.get("message")
    assert doc["verdict"] == "fail"
    assert doc["action"] == "rolled_back"
    assert chat.serving() == {base: 100}
    assert cand in chat.get().annotations[REJECTED]
    rollback = doc["watch"]["rollbacks"][0]
    assert rollback["revision"] == cand
    assert rollback["first_bad_to_verified_s"] >= 0
    assert doc["command"] == "watch"


def test_a_healthy_revision_is_watched_for_its_whole_for_with_no_action(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None, percent=0)
    promote(chat, base, cand)
    code, doc = run_watch(tmp_path, "--for", "8s")
    assert code == 0, doc.get("message")
    assert doc["verdict"] == "pass"
    assert doc["action"] == "none"
    assert chat.serving() == {cand: 100}
    assert doc["watch"]["canary_sessions"] >= 1
    assert doc["watch"]["probe_rounds"] >= 1
    assert "watch_heartbeat" not in [e["event"] for e in doc["timeline"]]  # a log, not news


@pytest.mark.fault(
    "logs", "watch: ListLogEntries and TailLogEntries UNAVAILABLE", "degraded, no rollback"
)
def test_a_logging_outage_degrades_the_watch_and_never_rolls_back(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    _, doc = watch_through_a_logging_outage(chat, emulator, tmp_path, WATCH)
    assert "watch_degraded" in [e["event"] for e in doc["timeline"]]


def watch_through_a_logging_outage(
    chat: Any, emulator: Any, tmp_path: Path, policy: Path
) -> tuple[str, dict[str, Any]]:
    """A promoted healthy revision watched for 8 s while Cloud Logging answers UNAVAILABLE:
    degraded (exit 3), never rolled back. Returns the revision and the report."""
    base = chat.first()
    cand = chat.candidate(tag=None, percent=0)
    promote(chat, base, cand)
    emulator.faults.fail("ListLogEntries", grpc.StatusCode.UNAVAILABLE)
    emulator.faults.fail("TailLogEntries", grpc.StatusCode.UNAVAILABLE)
    code, doc = run_watch(tmp_path, "--for", "8s", "--api-retry", "1s", policy=policy)
    assert code == 3, doc.get("message")
    assert (doc["verdict"], doc["action"]) == ("inconclusive", "none")
    assert chat.serving() == {cand: 100}
    assert doc["watch"]["degraded"][0]["why"].startswith("Cloud Logging: ")
    return cand, doc


async def test_a_new_deploy_mid_watch_is_followed(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    gate = watch_gate(gcp_clients, emulator)
    task = asyncio.ensure_future(gate.run())
    try:
        await eventually(lambda: gate.report.revision == base, within=30, what="watching base")
        new = await asyncio.to_thread(chat.candidate, None, tag=None, percent=100)
        await eventually(
            lambda: "deploy_followed" in events(gate.report), within=30, what="the deploy followed"
        )
        assert gate.report.revision == new
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert gate.report.exit_code == 0  # stopped without --for: a watcher being shut down


async def test_a_restarted_watch_judges_the_window_s_past_from_cloud_logging(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """Nothing local: a new watcher reads the bad lines logged before it started."""
    base = chat.first()
    cand = chat.candidate({"CHAT_BAD_AFTER": "0"}, tag=None, percent=0)
    promote(chat, base, cand)
    first = watch_gate(gcp_clients, emulator, policy=WATCH_LOGS)
    task = asyncio.ensure_future(first.run())
    await eventually(lambda: first.report.revision == cand, within=30, what="watching")
    task.cancel()  # the watcher dies before anything went wrong
    await asyncio.gather(task, return_exceptions=True)
    assert chat.serving() == {cand: 100}
    # a user's session breaks: the revision logs the orchestrator error
    await asyncio.to_thread(_one_session, chat)
    second = watch_gate(gcp_clients, emulator, policy=WATCH_LOGS, duration=30.0)
    report = await second.run()
    assert report.exit_code == 1, report.message
    assert chat.serving() == {base: 100}


def _one_session(chat: Any) -> None:
    """One chat session through the service's URL, as a user (it dies with 1011)."""
    from websockets.sync.client import connect

    url = str(chat.get().uri).replace("http", "ws", 1) + "/ws/chat"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "message", "user_id": "u", "session_id": "s", "text": "hi"}))
        try:
            while True:
                ws.recv(timeout=10)
        except Exception:  # the 1011 close
            return


def test_several_services_need_a_task_index(emulator_env: dict[str, str], tmp_path: Path) -> None:
    args = ["watch", "--service", "a", "--service", "b", "--policy", str(WATCH)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "CLOUD_RUN_TASK_INDEX" in result.output
    result = CliRunner().invoke(cli, args, env={"CLOUD_RUN_TASK_INDEX": "2"})
    assert result.exit_code == 2
    assert "only 2 services" in result.output
    # a job with more tasks than services: two watchers on one service would race
    alone = ["watch", "--service", "a", "--policy", str(WATCH)]
    result = CliRunner().invoke(cli, alone, env={"CLOUD_RUN_TASK_INDEX": "1"})
    assert result.exit_code == 2
    assert "only 1 service is listed" in result.output


@pytest.mark.parametrize(("flags", "code"), [((), 0), (("--for", "10m"), 3)])
def test_sigterm_ends_a_watch_with_its_report(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path, flags: tuple[str, ...], code: int
) -> None:
    base = chat.first()
    report = tmp_path / "watch.json"
    args = ["watch", "--service", "chat", "--policy", str(WATCH), "--report", str(report)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy_guard", *args, "--service-interval", "0.5s", *flags],
        env={**os.environ, **emulator_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the JSON log: wait until it judges the revision
            if '"window_judged"' in line or '"watch_heartbeat"' in line:
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == code
    assert doc["revision"] == base
    wait_until(lambda: chat.serving() == {base: 100})


def test_a_rollout_in_progress_is_left_to_its_rollout(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    """A live rollout record: the rollout judges its steps; the watch only looks."""
    from datetime import UTC, datetime, timedelta

    from google.cloud import run_v2

    from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION, RolloutRecord, encode

    base = chat.first()
    cand = chat.candidate({"CHAT_BAD_AFTER": "0"}, tag=None, percent=10)
    now = datetime.now(UTC)
    record = RolloutRecord(
        revision=cand,
        before={base: 100},
        step=1,
        percent=10,
        steps=((10, 600.0), (50, 600.0)),
        by="another-host:1",
        started=now,
        until=now + timedelta(minutes=30),
    )
    svc = chat.get()
    svc.annotations[ROLLOUT_ANNOTATION] = encode(record)
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc.traffic = [
        run_v2.TrafficTarget(type_=kind, revision=base, percent=90),
        run_v2.TrafficTarget(type_=kind, revision=cand, percent=10),
    ]
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)
    code, doc = run_watch(tmp_path, "--for", "6s")
    assert code == 3, doc.get("message")
    assert "a rollout is in progress" in doc["message"]
    assert chat.serving() == {base: 90, cand: 10}  # the rollout's split, untouched
    assert "watch_standing_aside" in [e["event"] for e in doc["timeline"]]


def test_keep_watching_watches_the_restored_revision(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_BAD_AFTER": "2"}, tag=None, percent=0)
    promote(chat, base, cand)
    code, doc = run_watch(tmp_path, "--for", "15s", "--keep-watching")
    assert code == 1, doc.get("message")  # the release failed, though the watch went on
    assert doc["action"] == "rolled_back"
    assert f"rolled back {cand} while watching" in doc["message"]
    assert chat.serving() == {base: 100}
    watched = [e["detail"]["revision"] for e in doc["timeline"] if e["event"] == "watching"]
    assert watched == [cand, base]
    assert doc["watch"]["revision"] == base
    assert doc["watch"]["status"] == "pass"


@pytest.mark.fault("traffic", "watch: GetService UNAVAILABLE", "degraded, then recovered")
async def test_a_run_api_outage_degrades_the_watch_until_it_answers_again(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    from deploy_guard.gcp.cloudrun import CloudRun
    from deploy_guard.gcp.errors import ApiCalls

    # the gate's own reads retry for api_retry (build_gate's default router, for 30 s)
    router = CloudRun(
        gcp_clients, emulator.project, emulator.region, calls=ApiCalls(), retry_deadline=0.5
    )
    gate = watch_gate(gcp_clients, emulator, api_retry=0.5, router=router)
    task = asyncio.ensure_future(gate.run())
    try:
        await eventually(lambda: gate.report.revision == base, within=30, what="watching")
        emulator.faults.fail("GetService", grpc.StatusCode.UNAVAILABLE)
        await eventually(
            lambda: "watch_degraded" in events(gate.report), within=30, what="degraded"
        )
        emulator.faults.clear()
        await eventually(
            lambda: "watch_recovered" in events(gate.report), within=30, what="recovered"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert chat.serving() == {base: 100}
    assert "Cloud Run Admin API" in gate.report.watch["degraded"][0]["why"]


@pytest.mark.fault("metrics", "watch: ListTimeSeries UNAVAILABLE", "degraded, no rollback")
def test_a_monitoring_outage_degrades_the_watch_and_never_rolls_back(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None, percent=0)
    promote(chat, base, cand)
    emulator.faults.fail("ListTimeSeries", grpc.StatusCode.UNAVAILABLE)
    policy = POLICIES / "chat-watch-metrics.yaml"
    code, doc = run_watch(tmp_path, "--for", "6s", "--api-retry", "0.5s", policy=policy)
    assert code == 3, doc.get("message")
    assert doc["action"] == "none"
    assert chat.serving() == {cand: 100}
    assert doc["watch"]["degraded"][0]["why"].startswith("Cloud Monitoring: ")


async def test_the_health_port_answers_what_is_watched(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    import httpx

    base = chat.first()
    gate = watch_gate(gcp_clients, emulator, health_port=0)
    task = asyncio.ensure_future(gate.run())
    try:
        await eventually(lambda: gate.report.revision == base, within=30, what="watching")
        port = next(
            e.detail["port"] for e in gate.report.timeline.events if e.event == "health_listening"
        )
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{port}/")
            refused = await client.post(f"http://127.0.0.1:{port}/", content=b"x")
        assert answer.status_code == 200
        assert answer.json()["revision"] == base
        assert answer.json()["service"] == "chat"
        assert refused.status_code == 405
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
