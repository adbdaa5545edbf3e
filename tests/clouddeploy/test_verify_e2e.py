"""skaffold.yaml's verify container, run as Cloud Deploy runs it, against the emulator.

Each test sets a service up the way Cloud Deploy's Cloud Run canary leaves it
before a phase's verify job (the release's revision at 10 %, pinned by name,
the stable revision at 90 %), runs the container's command line from
``skaffold.yaml`` with the variables Cloud Deploy sets, and asserts the exit
code (the verify result), the report's ``cloud_deploy`` block, and that nothing
was written: the emulator saw no write call, and the service's generation,
etag, split, tags and annotations are as Cloud Deploy left them.

One emulator for the module (each test its own service), to keep it lean.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clouddeploy.verify_phase import WRITES, CanaryPhase, phase_env, run_verify
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.traffic import REJECTED
from emulators import running_emulator


@pytest.fixture(scope="module")
def cd_emulator() -> Iterator[Any]:
    with running_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def cd_clients(cd_emulator: Any) -> Iterator[Clients]:
    clients = Clients(host=cd_emulator.address)
    try:
        yield clients
    finally:
        clients.close()


@pytest.fixture
def service(
    cd_emulator: Any, cd_clients: Clients, fast_polling: Any, request: pytest.FixtureRequest
) -> CanaryPhase:
    """A fresh service per test: ``chat-<test name>``, short enough for a tag."""
    name = "chat-" + request.node.name.removeprefix("test_").replace("_", "-")[:30].strip("-")
    return CanaryPhase(cd_emulator, cd_clients, fast_polling, service=name)


def wrote_nothing(emulator: Any, phase: CanaryPhase, before: dict[str, Any]) -> None:
    counts = emulator.faults.counts()
    writes = {m: n for m, n in counts.items() if m.rsplit("/", 1)[-1] in WRITES}
    assert writes == {}, writes
    assert phase.state() == before


@pytest.mark.fault(
    "traffic",
    "Cloud Deploy's verify job on a healthy canary phase (10 %, tagged)",
    "exit 0; the emulator sees no write; generation, etag, split and tags unchanged",
)
def test_a_healthy_phase_passes_and_nothing_is_written(
    cd_emulator: Any, service: CanaryPhase, tmp_path: Path
) -> None:
    stable = service.release()
    candidate = service.phase(10, tag="canary")
    assert service.serving() == {stable: 90, candidate: 10}
    before = service.state()
    cd_emulator.faults.reset_counts()
    out = run_verify(cd_emulator, phase_env(service), tmp_path)
    assert out.code == ExitCode.PASS, out.stderr
    wrote_nothing(cd_emulator, service, before)
    report = out.report
    assert report["verdict"] == "pass"
    assert report["action"] == "none"
    assert report["revision"] == candidate
    assert report["baseline"] == [stable]
    assert report["traffic_before"] == report["traffic_after"] == {stable: 90, candidate: 10}
    assert report["temporary_tag"] == ""
    tag_url = next(t.uri for t in service.get().traffic_statuses if t.tag == "canary")
    assert report["target_url"] == tag_url  # the tag URL: every session the candidate's
    block = report["cloud_deploy"]
    assert block["phase"] == "canary-10"
    assert block["percentage"] == 10
    assert block["pipeline"] == "chat-agent"
    assert block["target"] == "prod"
    assert block["job_run"]
    assert block["rollout"].endswith("-to-prod-0001")
    assert block["percentage_source"] == "traffic"  # verify jobs get no PERCENTAGE_DEPLOY
    assert block["probes"] == "tag"
    assert "phase canary-10 passed" in out.stdout
    assert "Cloud Deploy" in out.summary
    assert "canary-10" in out.summary


@pytest.mark.fault(
    "traffic",
    "Cloud Deploy's verify job on a canary phase whose sessions close with 1011",
    "exit 1 (the phase failed; Cloud Deploy's repair rolls back); the guard writes nothing",
)
def test_a_1011_phase_fails_and_nothing_is_written(
    cd_emulator: Any, service: CanaryPhase, tmp_path: Path
) -> None:
    stable = service.release()
    candidate = service.phase(10, {"CHAT_FAIL_1011_AFTER": "0.5"}, tag="canary")
    before = service.state()
    cd_emulator.faults.reset_counts()
    env = phase_env(service, CLOUD_DEPLOY_PERCENTAGE_DEPLOY="10")
    out = run_verify(cd_emulator, env, tmp_path)
    assert out.code == ExitCode.FAIL, out.stderr
    wrote_nothing(cd_emulator, service, before)
    report = out.report
    assert report["verdict"] == "fail"
    assert report["action"] == "none"
    assert "chat-golden-path" in report["deciding_rules"]
    assert "1011" in " ".join(report["reasons"])
    assert report["traffic_after"] == {stable: 90, candidate: 10}
    assert report["cloud_deploy"]["percentage_source"] == "CLOUD_DEPLOY_PERCENTAGE_DEPLOY"
    assert "repair rule rolls the rollout back" in report["message"]
    events = [e["event"] for e in report["timeline"]]
    assert "cloud_deploy_phase" in events
    assert "decision" in events
    assert not any(
        e.startswith(("rollback", "promote", "temp_tag", "rejection")) for e in events
    ), events


def test_without_a_tag_the_probes_share_the_service_url_and_a_failure_still_fails(
    cd_emulator: Any, service: CanaryPhase, tmp_path: Path
) -> None:
    """No canaryRevisionTags: half the sessions reach the 1011 candidate at 50 %."""
    stable = service.release()
    service.phase(50, {"CHAT_FAIL_1011_AFTER": "0.5"})
    before = service.state()
    cd_emulator.faults.reset_counts()
    out = run_verify(cd_emulator, phase_env(service, name="canary-50"), tmp_path)
    assert out.code == ExitCode.FAIL, out.stderr
    wrote_nothing(cd_emulator, service, before)
    report = out.report
    assert report["target_url"] == service.get().uri
    assert report["cloud_deploy"]["probes"] == "service_url"
    assert any("no tag URL" in n and "50 %" in n for n in report["notes"]), report["notes"]
    assert stable in report["baseline"]


def test_a_candidate_with_no_tag_and_no_traffic_cannot_be_reached(
    cd_emulator: Any, service: CanaryPhase, tmp_path: Path
) -> None:
    service.release()
    service.phase(0)
    before = service.state()
    cd_emulator.faults.reset_counts()
    out = run_verify(cd_emulator, phase_env(service), tmp_path)
    assert out.code == ExitCode.USAGE, out.stderr
    wrote_nothing(cd_emulator, service, before)
    assert out.report["verdict"] == "error"
    assert "canaryRevisionTags" in out.report["error"]
    assert out.report["cloud_deploy"]["phase"] == "canary-10"


def test_a_rejected_candidate_is_noted_without_promising_a_promote(
    cd_emulator: Any, service: CanaryPhase, tmp_path: Path
) -> None:
    """--promote is refused in this mode, so the note names what does take it off."""
    service.release()
    candidate = service.phase(0)  # no tag, no traffic: exit 2 once the notes are made
    svc = service.get()
    svc.annotations[REJECTED] = candidate  # an earlier check outside Cloud Deploy failed it
    update = service.clients.services().update_service(service=svc)
    update.result(timeout=60, polling=service.polling)
    before = service.state()
    cd_emulator.faults.reset_counts()
    out = run_verify(cd_emulator, phase_env(service), tmp_path)
    assert out.code == ExitCode.USAGE, out.stderr
    wrote_nothing(cd_emulator, service, before)
    (note,) = [n for n in out.report["notes"] if "rejected list" in n]
    assert "--promote" not in note
    assert f"--clear-rejected {candidate}" in note
