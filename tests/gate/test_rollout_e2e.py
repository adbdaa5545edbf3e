"""``deploy-guard rollout`` end to end against the emulator.

The CLI in-process for whole rollouts; the driver's Python API (``build_gate``)
where a test chooses the moment to interfere: a deploy mid-step, a signal
mid-step, a write that fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.errors import ActionError, ConfigError
from deploy_guard.gcp.rollouts import ROLLOUT_ANNOTATION, RolloutRecord, current, encode
from deploy_guard.gcp.traffic import REJECTED
from deploy_guard.policy.model import RolloutStep
from deploy_guard.runtime.rollout import RolloutGate, RolloutOptions
from gates import build_gate, run_guard
from waiting import eventually, wait_until

POLICIES = Path(__file__).parent / "policies"
ROLLOUT = POLICIES / "chat-rollout.yaml"
#: Steps long enough for a test to act while one runs.
LONG = (RolloutStep(percent=10, duration=3.0), RolloutStep(percent=50, duration=3.0))
#: Long enough for another deploy (a revision to start) to land within step 1, even on a
#: loaded machine.
DEPLOY_ROOM = (RolloutStep(percent=10, duration=10.0), RolloutStep(percent=50, duration=3.0))


def events(report: Any) -> list[str]:
    return [e.event for e in report.timeline.events]


def rollout_gate(gcp_clients: Any, emulator: Any, revision: str, **options: Any) -> Any:
    return build_gate(
        gcp_clients,
        emulator,
        revision,
        policy=ROLLOUT,
        gate_class=RolloutGate,
        options_class=RolloutOptions,
        **options,
    )


@dataclass
class Walking:
    """A rollout running in the background, at its first step: the test interferes now."""

    base: str
    candidate: str
    gate: Any
    task: asyncio.Future[Any]


async def at_first_step(
    chat: Any, gcp_clients: Any, emulator: Any, *, steps: Any = LONG, **options: Any
) -> Walking:
    """Deploy a baseline and a candidate, start a rollout of it, wait until step 1 runs."""
    base = chat.first()
    cand = chat.candidate(tag=None)
    gate = rollout_gate(gcp_clients, emulator, cand, steps=steps, **options)
    task = asyncio.ensure_future(gate.run())
    await eventually(lambda: "step_started" in events(gate.report), within=30, what="step 1")
    return Walking(base, cand, gate, task)


def left_part_way(chat: Any) -> str:
    """A baseline, a candidate, and the record of a rollout of it whose process died."""
    base = chat.first()
    cand = chat.candidate(tag=None)
    svc = chat.get()
    past = datetime.now(UTC) - timedelta(minutes=5)
    record = RolloutRecord(cand, {base: 100}, 1, 10, ((10, 60.0),), "gone/1", past, past)
    svc.annotations = {**svc.annotations, ROLLOUT_ANNOTATION: encode(record)}
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)
    return cand


def rollout(
    tmp_path: Path, revision: str, *flags: str, policy: str = "chat-rollout.yaml"
) -> tuple[int, dict[str, Any], str]:
    return run_guard("rollout", tmp_path, revision, *flags, policy=policy)


def start_rollout(env: dict[str, str], revision: str, *flags: str) -> subprocess.Popen[str]:
    """``deploy-guard rollout`` as a subprocess (as Cloud Build runs it), stderr dropped."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "deploy_guard", "rollout", "--revision", revision),
            *("--policy", str(ROLLOUT), "--log-interval", "0.5s", *flags),
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_a_healthy_candidate_walks_every_step_to_100(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None)
    code, doc, out = rollout(tmp_path, cand)
    assert code == 0, out
    assert chat.serving() == {cand: 100}
    assert [(s["phase"], s["percent"], s["status"]) for s in doc["steps"]] == [
        ("tag", 0, "pass"),
        ("step", 10, "pass"),
        ("step", 50, "pass"),
        ("promote", 100, "pass"),
    ]
    assert doc["steps"][1]["traffic_verified"] == {base: 90, cand: 10}
    assert doc["steps"][2]["traffic_verified"] == {base: 50, cand: 50}
    assert (doc["verdict"], doc["action"]) == ("pass", "promoted")
    assert chat.tags() == set()
    assert chat.get().annotations.get(ROLLOUT_ANNOTATION, "") == ""


def test_a_candidate_failing_with_1011_through_its_tag_url_never_gets_traffic(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, tag=None)
    code, doc, out = rollout(tmp_path, cand)
    assert code == 1, out
    assert chat.serving() == {base: 100}
    assert [s["status"] for s in doc["steps"]] == ["fail", "pending", "pending", "pending"]
    assert "shift_requested" not in [e["event"] for e in doc["timeline"]]
    assert cand in chat.get().annotations.get(REJECTED, "")
    assert doc["steps"][0]["stopped"]  # where it stopped, and why
    assert chat.tags() == set()
    # the log rules fail-fast left open are filled in by the report-only pass, on the stage too
    top = {r["rule"]: r["status"] for r in doc["rules"]}
    assert {r["rule"]: r["status"] for r in doc["steps"][0]["rules"]} == top


@pytest.mark.fault(
    "traffic",
    "another deploy lands while a rollout step is judged",
    "the next step's write is refused: exit 4, the other deploy's traffic stands",
)
async def test_a_deploy_landing_mid_step_stops_the_rollout_without_writing(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    walk = await at_first_step(chat, gcp_clients, emulator, steps=DEPLOY_ROOM)
    base, cand, task = walk.base, walk.candidate, walk.task
    other = await asyncio.to_thread(chat.candidate, {"OTHER": "1"}, tag="other")
    report = await task
    assert (report.action, report.exit_code) == ("superseded", 4)
    assert "shift_refused" in events(report)
    assert "rollback_requested" not in events(report)
    assert chat.serving() == {base: 90, cand: 10}  # the other deploy's spec, untouched
    assert other != cand


async def test_a_signal_mid_step_puts_the_split_from_before_back(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    walk = await at_first_step(chat, gcp_clients, emulator)
    base, cand, task = walk.base, walk.candidate, walk.task
    task.cancel()
    report = await task
    assert (report.action, report.exit_code) == ("rolled_back", 3)
    assert chat.serving() == {base: 100}
    annotations = chat.get().annotations
    assert cand not in annotations.get(REJECTED, "")  # interrupted, not found bad
    assert annotations.get(ROLLOUT_ANNOTATION, "") == ""
    assert [s.status for s in report.steps] == ["pass", "interrupted", "pending", "pending"]
    assert not any(t.startswith("dg-") for t in chat.tags())


async def test_a_signal_with_on_interrupt_hold_keeps_the_step_and_its_record(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    walk = await at_first_step(chat, gcp_clients, emulator, on_interrupt="hold")
    base, cand, task = walk.base, walk.candidate, walk.task
    task.cancel()
    report = await task
    assert (report.action, report.exit_code) == ("held", 3)
    assert chat.serving() == {base: 90, cand: 10}
    record = current(dict(chat.get().annotations))
    assert record is not None
    assert (record.revision, record.step, record.percent) == (cand, 1, 10)
    assert not record.live(datetime.now(UTC))  # stopped: --resume may take it over at once


@pytest.mark.fault(
    "traffic",
    "UpdateService fails (INTERNAL) on a rollout step's write",
    "exit 4, traffic stays at the last verified step, its record says which",
)
async def test_a_step_write_that_fails_stops_at_the_last_verified_step(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    walk = await at_first_step(chat, gcp_clients, emulator)
    base, cand, task = walk.base, walk.candidate, walk.task
    emulator.faults.fail("UpdateService", grpc.StatusCode.INTERNAL, nth=1)  # step 2's write
    report = await task
    assert (report.action, report.exit_code) == ("failed", 4)
    assert chat.serving() == {base: 90, cand: 10}
    record = current(dict(chat.get().annotations))
    assert record is not None
    assert (record.step, record.percent) == (1, 10)
    assert "--resume" in report.message
    assert not any(t.startswith("dg-") for t in chat.tags())


@pytest.mark.fault(
    "traffic",
    "UpdateService answers UNAVAILABLE once on a rollout step's write",
    "retried; the rollout goes on to 100 %",
)
async def test_a_step_write_answered_unavailable_once_is_retried_and_goes_on(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    walk = await at_first_step(chat, gcp_clients, emulator)
    cand, task = walk.candidate, walk.task
    emulator.faults.fail("UpdateService", grpc.StatusCode.UNAVAILABLE, nth=1)
    report = await task
    assert (report.action, report.exit_code) == ("promoted", 0)
    assert chat.serving() == {cand: 100}


async def test_a_second_rollout_on_the_same_service_is_refused(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None)
    first = rollout_gate(gcp_clients, emulator, cand, steps=LONG)
    task = asyncio.ensure_future(first.run())
    await eventually(lambda: "step_started" in events(first.report), within=30, what="step 1")
    second = rollout_gate(gcp_clients, emulator, cand, steps=LONG)
    with pytest.raises(ActionError, match="a rollout is already running"):
        await second.run()
    assert second.report.exit_code == 4
    task.cancel()
    await task
    assert chat.serving() == {base: 100}


@pytest.mark.parametrize("policy", ["chat-rollout.yaml", "chat-fast.yaml"])
async def test_resume_continues_a_dead_rollout_from_its_last_verified_step(
    chat: Any, gcp_clients: Any, emulator: Any, policy: str
) -> None:
    """The recorded steps are walked, whatever the policy says (chat-fast has no rollout:)."""
    from google.cloud import run_v2

    base = chat.first()
    cand = chat.candidate(tag=None)
    # What a rollout whose process died at step 1 leaves: 90/10 and its record, expired.
    svc = chat.get()
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc.traffic = [
        run_v2.TrafficTarget(type_=kind, revision=base, percent=90),
        run_v2.TrafficTarget(type_=kind, revision=cand, percent=10),
    ]
    past = datetime.now(UTC) - timedelta(minutes=5)
    record = RolloutRecord(cand, {base: 100}, 1, 10, ((10, 1.0), (50, 1.0)), "gone/1", past, past)
    svc.annotations = {**svc.annotations, ROLLOUT_ANNOTATION: encode(record)}
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)
    gate = build_gate(
        gcp_clients,
        emulator,
        cand,
        policy=POLICIES / policy,
        gate_class=RolloutGate,
        options_class=RolloutOptions,
        resume=True,
    )
    report = await gate.run()
    assert (report.action, report.exit_code) == ("promoted", 0), report.message
    assert chat.serving() == {cand: 100}
    assert [s.status for s in report.steps] == ["pass", "pass", "pass", "pass"]
    assert report.steps[2].traffic_verified == {base: 50, cand: 50}
    assert "rollout_resumed" in events(report)


@pytest.mark.fault(
    "signals",
    "SIGTERM while a rollout step is judged (the CLI as Cloud Build runs it)",
    "the split from before the rollout is put back and verified, report written, exit 3",
)
def test_sigterm_mid_step_puts_traffic_back_and_exits_3(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None)
    report = tmp_path / "report.json"
    proc = start_rollout(emulator_env, cand, "--steps", "10:30s,50:30s", "--report", str(report))
    try:
        wait_until(lambda: chat.serving().get(cand) == 10 or proc.poll() is not None, within=30)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, _err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, out
    assert chat.serving() == {base: 100}
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["action"], doc["exit_code"]) == ("inconclusive", "rolled_back", 3)
    assert doc["error"] == "interrupted by SIGTERM"
    assert [s["status"] for s in doc["steps"]][:2] == ["pass", "interrupted"]
    assert out.startswith("inconclusive: interrupted by SIGTERM at step 1/2 (10%)")


@pytest.mark.fault(
    "signals",
    "second signal while a rollout puts the split back after the first",
    "stops at once; report: action unverified, how to look; exit 130",
)
def test_a_second_signal_while_the_split_is_put_back_says_the_write_is_unverified(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    report = tmp_path / "report.json"
    proc = start_rollout(emulator_env, cand, "--steps", "10:30s,50:30s", "--report", str(report))
    try:
        wait_until(lambda: chat.serving().get(cand) == 10 or proc.poll() is not None, within=30)
        assert proc.poll() is None
        writes = emulator.faults.count("UpdateService")
        emulator.faults.delay("UpdateService", 60.0, nth=1)  # the write that puts it back hangs
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: emulator.faults.count("UpdateService") > writes, within=30)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)  # long before the held write is answered
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    doc = json.loads(report.read_text())
    assert (doc["action"], doc["exit_code"]) == ("unverified", 130)
    assert "the rollback traffic write was sent and not verified" in doc["error"]
    assert "gcloud run services describe chat" in doc["error"]


def test_a_check_on_a_service_a_rollout_left_part_way_says_so(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    cand = left_part_way(chat)
    report = tmp_path / "check.json"
    args = ["check", "--revision", cand, "--policy", str(POLICIES / "chat-fast.yaml")]
    result = CliRunner().invoke(cli, [*args, "--report", str(report), "--log-interval", "0.5s"])
    assert result.exit_code == 0, result.output
    notes = json.loads(report.read_text())["notes"]
    assert any(n.startswith("a rollout stopped part-way on chat: ") for n in notes), notes


def test_rolling_out_the_revision_that_serves_everything_is_a_usage_error(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    code, doc, _out = rollout(tmp_path, base)
    assert code == 2
    assert "already serves all of chat's traffic: nothing to roll out" in doc["error"]
    assert (doc["command"], doc["verdict"]) == ("rollout", "error")
    assert chat.serving() == {base: 100}


def test_a_rollout_without_steps_is_a_usage_error_before_any_call(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    before = emulator.faults.count("UpdateService")
    code, doc, _out = rollout(tmp_path, cand, policy="chat-fast.yaml")
    assert code == 2
    assert doc["error"].startswith("no rollout steps: add rollout.steps to policy")
    assert emulator.faults.count("UpdateService") == before


async def test_resume_refuses_new_steps(chat: Any, gcp_clients: Any, emulator: Any) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    gate = rollout_gate(gcp_clients, emulator, cand, resume=True, steps=LONG)
    with pytest.raises(ConfigError, match="leave out --steps"):
        await gate.run()
    assert gate.report.exit_code == 2


@pytest.mark.fault(
    "signals",
    "a signal while the rollout's promotion write is in flight",
    "the promotion is finished and verified and stands: exit 0, never undone",
)
async def test_a_signal_during_the_promotion_leaves_it_promoted(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    walk = await at_first_step(chat, gcp_clients, emulator)
    gate, task = walk.gate, walk.task
    await eventually(lambda: events(gate.report).count("step_started") == 2, within=30)
    emulator.faults.reset_counts()
    emulator.faults.delay("UpdateService", 1.5, nth=1)  # the next write: the promotion
    await eventually(lambda: emulator.faults.count("UpdateService") >= 1, within=30)
    task.cancel()  # the promotion is held in the emulator now
    report = await task
    assert (report.action, report.exit_code) == ("promoted", 0), report.message
    assert chat.serving() == {walk.candidate: 100}
    assert "rollback_requested" not in events(report)
    assert "during the last traffic write" in (report.error or "")


@pytest.mark.fault(
    "secrets",
    "a probe URL's query value in the reason a rollout stopped",
    "redacted before it is written to the service's annotation",
)
def test_the_reason_a_rollout_stopped_is_kept_on_the_service_without_secrets() -> None:
    from deploy_guard.log import register_secret
    from deploy_guard.runtime.rollout import stopped_record

    register_secret("tok3n-from-env")
    now = datetime.now(UTC)
    record = RolloutRecord("svc-2", {"svc-1": 100}, 1, 10, ((10, 1.0),), "h/1", now, now)
    why = "no requests finished; is /health?key=s3cr3tvalue reachable? token tok3n-from-env"
    text = stopped_record(record, why)
    assert "s3cr3tvalue" not in text
    assert "tok3n-from-env" not in text
    stopped = current({ROLLOUT_ANNOTATION: text})
    assert stopped is not None
    assert "is /health?key=" in stopped.extra["stopped"]


async def test_a_record_overtaken_by_another_change_does_not_block_a_new_rollout(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """A rollout refused mid-step (someone deployed) leaves its record live; the service no
    longer serves that step, so the next rollout replaces it instead of waiting for it."""
    walk = await at_first_step(chat, gcp_clients, emulator, steps=DEPLOY_ROOM)
    other = await asyncio.to_thread(chat.candidate, {"OTHER": "1"}, tag=None, percent=20)
    report = await walk.task
    assert report.action == "superseded"
    record = current(dict(chat.get().annotations))
    assert record is not None
    assert record.live(datetime.now(UTC))  # its holder never wrote again: the service moved
    gate = rollout_gate(gcp_clients, emulator, other, steps=LONG)
    second = await gate.run()
    assert (second.action, second.exit_code) == ("promoted", 0), second.message
    assert any(n.startswith("the rollout record of ") for n in second.notes)
    assert chat.serving() == {other: 100}
    assert chat.get().annotations.get(ROLLOUT_ANNOTATION, "") == ""


def test_check_promote_ends_a_held_rollouts_record(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    cand = left_part_way(chat)
    code, doc, out = run_guard("check", tmp_path, cand, "--promote", policy="chat-fast.yaml")
    assert code == 0, out
    assert doc["action"] == "promoted"
    assert chat.get().annotations.get(ROLLOUT_ANNOTATION, "") == ""  # nothing left to block
