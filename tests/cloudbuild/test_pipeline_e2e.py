"""The Cloud Build pipeline's sequence, end to end, against the emulator.

The deploy and read-revision steps call ``gcloud``, which is not here: they are
mirrored with the official ``run_v2`` client making the Admin API calls that
``gcloud run deploy --no-traffic --tag`` and ``gcloud run services describe`` make.
The ``guard``, ``keep-report`` and ``verdict`` steps are the pipeline's own shell
scripts, taken from ``cloudbuild.yaml``, substituted the way Cloud Build does, and run
with bash: ``deploy-guard check`` (or ``rollout``, with ``_GUARD_MODE=rollout``) is the
real CLI in a subprocess, pointed at the emulator with ``DEPLOY_GUARD_EMULATOR_HOST``.
Only ``gcloud storage cp`` (the upload of a failed check's report) is a stand-in script
that records its arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # two revisions, a check with 2 s WebSocket holds

HERE = Path(__file__).resolve().parent
CHAT_APP = HERE.parents[1] / "examples" / "chat_agent" / "app.py"
POLICY = HERE / "policy.yaml"
SERVICE = "chat-agent"


# --- the gcloud steps, mirrored with the official client ----------------------------


def chat_template(env: dict[str, str]) -> Any:
    """A revision running the example chat service (the image is recorded, not pulled)."""
    from google.cloud import run_v2

    container = run_v2.Container(
        image=f"europe-west1-docker.pkg.dev/test-project/cloud-run/{SERVICE}:build",
        command=[sys.executable, str(CHAT_APP)],
        env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()],
    )
    return run_v2.RevisionTemplate(containers=[container])


def gcloud_run_deploy(
    clients: Any, parent: str, env: dict[str, str], tag: str, polling: Any
) -> Any:
    """What the pipeline's ``deploy`` step asks of the Cloud Run Admin API.

    An existing service gets the new template, its LATEST traffic pinned to the
    revision that served it (``--no-traffic``) and ``tag`` moved to the new revision
    at 0 % (``--tag``). A service that does not exist yet is created with all traffic
    on its first revision: ``--no-traffic`` is refused there, as the step handles.
    """
    from google.cloud import run_v2

    services = clients.services()
    names = {s.name.rsplit("/", 1)[-1] for s in services.list_services(parent=parent)}
    if SERVICE not in names:  # the step's `grep -qx` on `services list`
        op = services.create_service(
            parent=parent, service=run_v2.Service(template=chat_template(env)), service_id=SERVICE
        )
        return op.result(timeout=60, polling=polling)
    svc = services.get_service(name=f"{parent}/services/{SERVICE}")
    revision_type = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    latest_type = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
    serving = svc.latest_ready_revision.rsplit("/", 1)[-1]
    traffic = [
        run_v2.TrafficTarget(
            type_=revision_type,
            revision=t.revision if t.type_ == revision_type else serving,
            percent=t.percent,
            tag="" if t.tag == tag else t.tag,
        )
        for t in svc.traffic
        if t.percent > 0 or (t.tag and t.tag != tag)
    ] or [run_v2.TrafficTarget(type_=revision_type, revision=serving, percent=100)]
    traffic.append(run_v2.TrafficTarget(type_=latest_type, percent=0, tag=tag))
    svc.template = chat_template(env)
    svc.traffic = traffic
    return services.update_service(service=svc).result(timeout=60, polling=polling)


def latest_created_revision(clients: Any, parent: str) -> str:
    """``gcloud run services describe --format 'value(status.latestCreatedRevisionName)'``."""
    svc = clients.services().get_service(name=f"{parent}/services/{SERVICE}")
    return str(svc.latest_created_revision).rsplit("/", 1)[-1]


def served_split(clients: Any, parent: str) -> dict[str, int]:
    """Revision -> percent actually serving (``traffic_statuses``), zeros dropped."""
    svc = clients.services().get_service(name=f"{parent}/services/{SERVICE}")
    latest = svc.latest_ready_revision.rsplit("/", 1)[-1]
    split: dict[str, int] = {}
    for status in svc.traffic_statuses:
        name = status.revision or latest
        if status.percent:
            split[name] = split.get(name, 0) + status.percent
    return split


# --- the pipeline's own steps, run with bash ----------------------------------------


class Build:
    """One pipeline run's /workspace, substitutions and environment."""

    def __init__(self, pipeline: Any, emulator: Any, tmp_path: Path, **values: str) -> None:
        project, region = emulator.parent.split("/")[1::2]
        self.pipeline = pipeline
        self.workspace = tmp_path / "workspace"
        (self.workspace / "deploy-guard").mkdir(parents=True)  # done by read-revision
        self.values = pipeline.values(
            PROJECT_ID=project,
            BUILD_ID="b-42",
            _SERVICE=SERVICE,
            _REGION=region,
            _POLICY=str(POLICY),
            _CHECK_TIMEOUT="60s",
            **values,
        )
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        self.gcloud_calls = tmp_path / "gcloud-calls.jsonl"
        fake = bin_dir / "gcloud"  # stands in for `gcloud storage cp` only
        fake.write_text(
            "#!/usr/bin/env python3\n"
            "import json, sys\n"
            f"open({str(self.gcloud_calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        )
        fake.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
        env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]])
        env["DEPLOY_GUARD_EMULATOR_HOST"] = emulator.address
        env["DEPLOY_GUARD_LOG_FORMAT"] = "json"
        self.env = env
        self.check_output = ""

    def run_step(self, step_id: str) -> subprocess.CompletedProcess[str]:
        return self.pipeline.run_step(step_id, self.values, self.workspace, self.env)

    @property
    def exit_code(self) -> int:
        return int((self.workspace / "deploy-guard" / "exit-code").read_text().strip())

    def report(self) -> dict[str, Any]:
        path = self.workspace / "deploy-guard" / "report.json"
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def uploads(self) -> list[list[str]]:
        if not self.gcloud_calls.exists():
            return []
        return [json.loads(line) for line in self.gcloud_calls.read_text().splitlines()]


def run_pipeline(
    pipeline: Any,
    emulator: Any,
    clients: Any,
    polling: Any,
    tmp_path: Path,
    candidate_env: dict[str, str],
    **values: str,
) -> tuple[Build, str, str]:
    """Baseline deployed by hand, then the pipeline: deploy, read, guard, keep, verdict."""
    parent = emulator.parent
    gcloud_run_deploy(clients, parent, {}, "candidate", polling)  # the first deploy
    baseline = latest_created_revision(clients, parent)
    build = Build(pipeline, emulator, tmp_path, **values)
    gcloud_run_deploy(clients, parent, candidate_env, build.values["_TAG"], polling)
    candidate = latest_created_revision(clients, parent)
    assert candidate != baseline
    assert served_split(clients, parent) == {baseline: 100}, "--no-traffic moved traffic"
    (build.workspace / "revision").write_text(candidate + "\n")

    guard = build.run_step("guard")
    build.check_output = guard.stdout + guard.stderr  # shown when an assertion fails
    assert guard.returncode == 0, build.check_output  # the step itself never fails the build
    keep = build.run_step("keep-report")
    assert keep.returncode == 0, keep.stderr
    verdict = build.run_step("verdict")
    assert verdict.returncode == build.exit_code, verdict.stdout + verdict.stderr
    assert f"/deploy-guard/{SERVICE}/b-42/" in verdict.stdout
    return build, baseline, candidate


def test_the_pipeline_promotes_a_healthy_revision(
    pipeline: Any, emulator: Any, gcp_clients: Any, fast_polling: Any, tmp_path: Path
) -> None:
    build, _baseline, candidate = run_pipeline(
        pipeline, emulator, gcp_clients, fast_polling, tmp_path, {"CHAT_REVISION_NOTE": "2"}
    )
    assert build.exit_code == 0, build.check_output
    report = build.report()
    assert report["verdict"] == "pass"
    assert report["action"] == "promoted"
    assert report["revision"].rsplit("/", 1)[-1] == candidate
    assert served_split(gcp_clients, emulator.parent) == {candidate: 100}
    assert build.uploads() == [], "a passing build keeps its report through `artifacts`"
    summary = (build.workspace / "deploy-guard" / "summary.md").read_text(encoding="utf-8")
    assert candidate in summary


def test_the_pipeline_fails_a_1011_revision_and_traffic_stays_on_the_baseline(
    pipeline: Any, emulator: Any, gcp_clients: Any, fast_polling: Any, tmp_path: Path
) -> None:
    build, baseline, candidate = run_pipeline(
        pipeline, emulator, gcp_clients, fast_polling, tmp_path, {"CHAT_FAIL_1011_AFTER": "1"}
    )
    assert build.exit_code == 1, build.check_output
    report = build.report()
    assert report["verdict"] == "fail"
    assert "1011" in json.dumps(report["rules"])
    # Traffic never reached the candidate: the split after is the split before.
    assert report["traffic_before"] == report["traffic_after"] == {baseline: 100}
    assert served_split(gcp_clients, emulator.parent) == {baseline: 100}
    assert candidate not in served_split(gcp_clients, emulator.parent)
    # The failed check's report and summary were kept where a passing build's artifacts go.
    (upload,) = build.uploads()
    assert upload[:2] == ["storage", "cp"]
    assert sorted(Path(p).name for p in upload[2:-1]) == ["report.json", "summary.md"]
    region_project = emulator.parent.split("/")[1]
    assert upload[-1] == f"gs://{region_project}-deploy-guard/deploy-guard/{SERVICE}/b-42/"


def test_the_pipeline_in_rollout_mode_walks_a_healthy_revision_to_all_traffic(
    pipeline: Any, emulator: Any, gcp_clients: Any, fast_polling: Any, tmp_path: Path
) -> None:
    pytest.importorskip("deploy_guard.commands.rollout", reason="deploy-guard rollout not built")
    build, _baseline, candidate = run_pipeline(
        pipeline,
        emulator,
        gcp_clients,
        fast_polling,
        tmp_path,
        {"CHAT_REVISION_NOTE": "2"},
        _GUARD_MODE="rollout",
        _ROLLOUT_STEPS="50:3s",
    )
    assert build.exit_code == 0, build.check_output
    report = build.report()
    assert (report["command"], report["verdict"]) == ("rollout", "pass"), report["message"]
    assert served_split(gcp_clients, emulator.parent) == {candidate: 100}
    assert [s["percent"] for s in report["steps"] if s["phase"] == "step"] == [50]
    assert build.uploads() == []
