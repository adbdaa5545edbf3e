"""The Cloud Build pipeline, end to end, against the emulator, with the real gcloud.

Every step runs its own script from ``cloudbuild.yaml``, substituted the way Cloud
Build does, with bash. ``deploy`` and ``read-revision`` run the real ``gcloud``
(``gcloud run services list``, ``gcloud run deploy --no-traffic --tag``, ``gcloud run
services describe``), pointed at the emulator's REST front by the variables
``deploy-guard emulator --gcloud-env`` writes; ``guard``, ``keep-report`` and ``verdict``
run the real ``deploy-guard`` against the same emulator over gRPC. Only ``gcloud
storage cp`` (``keep-report``'s upload of a failed check's report) goes to a stand-in
that records its arguments, because Cloud Storage is not emulated: the ``gcloud`` the
steps find first on ``PATH`` records ``storage`` calls and hands every other call to
the real binary.

The image: the emulator records it and never pulls it. A revision runs the container's
command and args, and a deploy that names only ``--image``, as the ``deploy`` step
does, keeps the command the service already has. So, as a user of the emulator does
(docs/gcloud.md), the service is first deployed by hand with ``gcloud run deploy
--command python --args APP_DIR/main.py``; the pipeline's deploys then keep that
command. Each build writes ``APP_DIR/main.py`` (``_APP_DIR`` is the build context):
the example chat agent with this build's failure switches, the stand-in for the image
``docker build`` makes of that folder. A revision reads it when it starts, so the
candidate runs this build while the baseline keeps running the one before. The tests
share one emulator and that first revision: each is one more build of the same service
(gcloud takes a second or more per command), starting from whatever serves.

Where gcloud is not installed these tests are skipped, saying so: the guard step's
shell logic is still tested with a recording ``deploy-guard`` in
``test_pipeline_scripts.py``, and ``check --promote`` and ``rollout`` against the
emulator in ``tests/gate``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy_guard.emulator.rest.gcloud_env import gcloud_environment
from deploy_guard.emulator.server import EmulatorThread
from emulators import running_emulator
from gcloud_runner import GCLOUD, Gcloud

pytestmark = [
    pytest.mark.slow,  # two revisions, a check with 2 s WebSocket holds
    pytest.mark.skipif(
        GCLOUD is None,
        reason="gcloud is not installed (not on PATH): the pipeline's deploy and "
        "read-revision steps run the real gcloud",
    ),
]

HERE = Path(__file__).resolve().parent
CHAT_APP = HERE.parents[1] / "examples" / "chat_agent" / "app.py"
POLICY = HERE / "policy.yaml"
SERVICE = "chat-agent"

#: ``gcloud`` first on the steps' PATH: records ``gcloud storage ...``, runs the rest.
GCLOUD_SHIM = """\
import json, os, sys
if sys.argv[1:2] == ["storage"]:
    with open(os.environ["GCLOUD_STORAGE_CALLS"], "a") as out:
        out.write(json.dumps(sys.argv[1:]) + "\\n")
    sys.exit(0)
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""

#: What a build's "image" runs: the example chat agent with this build's switches.
APP_MAIN = """\
# chat-agent as built by {build}: the emulator runs this file as the revision.
import os, runpy
os.environ.update({settings!r})
runpy.run_path({app!r}, run_name="__main__")
"""


def served_split(clients: Any, parent: str) -> dict[str, int]:
    """Revision -> percent actually serving (``traffic_statuses``, read over v2), zeros dropped."""
    svc = clients.services().get_service(name=f"{parent}/services/{SERVICE}")
    latest = svc.latest_ready_revision.rsplit("/", 1)[-1]
    split: dict[str, int] = {}
    for status in svc.traffic_statuses:
        name = status.revision or latest
        if status.percent:
            split[name] = split.get(name, 0) + status.percent
    return split


class Site:
    """What the module's builds share: the emulator, gcloud pointed at it, the build context.

    gcloud takes a second or more per command, so the service's first revision is deployed
    by hand once (:meth:`first_deploy`) and each test is one more build of the same service,
    as on a real project: a build starts from whatever serves (one revision at 100 %), and the
    ``candidate`` tag moves from the previous build's revision to the new one.
    """

    def __init__(self, emulator: Any, folder: Path) -> None:
        assert GCLOUD is not None
        self.emulator = emulator
        self.app_dir = folder / "app"  # _APP_DIR, the build context
        self.app_dir.mkdir()
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "gcloud"
        shim.write_text(f"#!{sys.executable}\n" + GCLOUD_SHIM.format(real=GCLOUD))
        shim.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
        env.update(  # what `. FILE` sets after `deploy-guard emulator --gcloud-env FILE`
            gcloud_environment(
                rest_address=emulator.rest_address,
                grpc_address=emulator.address,
                project=emulator.project,
                region=emulator.region,
                config_dir=str(folder / "gcloud-config"),
            )
        )
        env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]])
        env["DEPLOY_GUARD_LOG_FORMAT"] = "json"
        self.env = env
        self.gcloud = Gcloud(env)

    def build_app(self, build: str, settings: dict[str, str]) -> None:
        """The ``build`` step's stand-in: this build's image, as the file its revision runs."""
        text = APP_MAIN.format(build=build, settings=settings, app=str(CHAT_APP))
        (self.app_dir / "main.py").write_text(text, encoding="utf-8")

    def first_deploy(self) -> None:
        """The service's first revision, deployed by hand: the command every deploy keeps."""
        self.build_app("hand", {})
        main = str(self.app_dir / "main.py")
        deploy = ("run", "deploy", SERVICE, "--image", "local/chat-agent:first", "--quiet")
        self.gcloud(*deploy, "--command", sys.executable, "--args", main)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    """One emulator for the module (its builds are one service's builds in a row)."""
    with running_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def site(emulator: EmulatorThread, tmp_path_factory: pytest.TempPathFactory) -> Site:
    shared = Site(emulator, tmp_path_factory.mktemp("pipeline"))
    shared.first_deploy()
    return shared


class Build:
    """One pipeline run: its /workspace, substitutions and step outputs."""

    def __init__(self, pipeline: Any, site: Site, tmp_path: Path, **values: str) -> None:
        self.pipeline = pipeline
        self.site = site
        self.workspace = tmp_path / "workspace"
        self.workspace.mkdir()
        emulator = site.emulator
        defaults = {
            "PROJECT_ID": emulator.project,
            "BUILD_ID": "b-42",
            "_SERVICE": SERVICE,
            "_REGION": emulator.region,
            "_POLICY": str(POLICY),
            "_CHECK_TIMEOUT": "60s",
            "_APP_DIR": str(site.app_dir),
        }
        self.values = pipeline.values(**{**defaults, **values})
        self.storage_calls = tmp_path / "gcloud-storage-calls.jsonl"
        self.env = {**site.env, "GCLOUD_STORAGE_CALLS": str(self.storage_calls)}
        self.output: dict[str, str] = {}

    @property
    def upload_to(self) -> str:
        """Where the pipeline keeps this build's reports."""
        bucket = self.values["_REPORTS_BUCKET"]
        return f"gs://{bucket}/deploy-guard/{SERVICE}/{self.values['BUILD_ID']}/"

    def run_step(self, step_id: str) -> subprocess.CompletedProcess[str]:
        done = self.pipeline.run_step(step_id, self.values, self.workspace, self.env)
        self.output[step_id] = done.stdout + done.stderr  # shown when an assertion fails
        return done

    @property
    def exit_code(self) -> int:
        return int((self.workspace / "deploy-guard" / "exit-code").read_text().strip())

    def report(self) -> dict[str, Any]:
        path = self.workspace / "deploy-guard" / "report.json"
        return dict(json.loads(path.read_text(encoding="utf-8")))

    def uploads(self) -> list[list[str]]:
        if not self.storage_calls.exists():
            return []
        return [json.loads(line) for line in self.storage_calls.read_text().splitlines()]


def run_pipeline(
    pipeline: Any,
    site: Site,
    clients: Any,
    tmp_path: Path,
    candidate: dict[str, str],
    **values: str,
) -> tuple[Build, str, str]:
    """One build of the service: deploy, read-revision, guard, keep-report, verdict."""
    parent = site.emulator.parent
    (baseline,) = served_split(clients, parent)
    build = Build(pipeline, site, tmp_path, **values)
    site.build_app(build.values["BUILD_ID"], candidate)

    deploy = build.run_step("deploy")
    assert deploy.returncode == 0, build.output["deploy"]
    assert "does not exist yet" not in deploy.stdout
    read = build.run_step("read-revision")
    assert read.returncode == 0, build.output["read-revision"]
    revision = (build.workspace / "revision").read_text().strip()
    assert f"candidate revision {revision}" in read.stdout
    svc = clients.services().get_service(name=f"{parent}/services/{SERVICE}")
    assert revision == svc.latest_created_revision.rsplit("/", 1)[-1] != baseline
    assert served_split(clients, parent) == {baseline: 100}, "--no-traffic moved traffic"
    tag = build.values["_TAG"]
    assert [t.revision for t in svc.traffic_statuses if t.tag == tag] == [revision]
    container = svc.template.containers[0]  # the step's image, the command deployed by hand
    assert container.image == build.values["_IMAGE"]
    assert list(container.args) == [str(site.app_dir / "main.py")]

    guard = build.run_step("guard")
    assert guard.returncode == 0, build.output["guard"]  # the step itself never fails a build
    keep = build.run_step("keep-report")
    assert keep.returncode == 0, build.output["keep-report"]
    verdict = build.run_step("verdict")
    assert verdict.returncode == build.exit_code, build.output["verdict"]
    assert build.upload_to in verdict.stdout
    return build, baseline, revision


def test_the_pipeline_fails_a_1011_revision_and_traffic_stays_on_the_baseline(
    pipeline: Any, site: Site, gcp_clients: Any, tmp_path: Path
) -> None:
    build, baseline, candidate = run_pipeline(
        pipeline, site, gcp_clients, tmp_path, {"CHAT_FAIL_1011_AFTER": "1"}, BUILD_ID="b-1"
    )
    assert build.exit_code == 1, build.output["guard"]
    report = build.report()
    assert report["verdict"] == "fail"
    assert "1011" in json.dumps(report["rules"])
    # Traffic never reached the candidate: the split after is the split before.
    assert report["traffic_before"] == report["traffic_after"] == {baseline: 100}
    assert served_split(gcp_clients, site.emulator.parent) == {baseline: 100}
    # The failed check's report and summary were kept where a passing build's artifacts go.
    (upload,) = build.uploads()
    assert upload[:2] == ["storage", "cp"]
    assert sorted(Path(p).name for p in upload[2:-1]) == ["report.json", "summary.md"]
    assert upload[-1] == f"gs://{site.emulator.project}-deploy-guard/deploy-guard/{SERVICE}/b-1/"
    # gcloud describes the guard's doing: the baseline serves, the candidate keeps its tag
    traffic = site.gcloud.json("run", "services", "describe", SERVICE)["status"]["traffic"]
    assert {t["revisionName"]: t["percent"] for t in traffic if t.get("percent")} == {baseline: 100}
    assert {t["tag"]: t["revisionName"] for t in traffic if t.get("tag")} == {
        "candidate": candidate
    }


def test_the_pipeline_promotes_a_healthy_revision(
    pipeline: Any, site: Site, gcp_clients: Any, tmp_path: Path
) -> None:
    build, _baseline, candidate = run_pipeline(
        pipeline, site, gcp_clients, tmp_path, {}, BUILD_ID="b-2"
    )
    assert build.exit_code == 0, build.output["guard"]
    report = build.report()
    assert report["verdict"] == "pass"
    assert report["action"] == "promoted"
    assert report["revision"].rsplit("/", 1)[-1] == candidate
    assert served_split(gcp_clients, site.emulator.parent) == {candidate: 100}
    assert build.uploads() == [], "a passing build keeps its report through `artifacts`"
    summary = (build.workspace / "deploy-guard" / "summary.md").read_text(encoding="utf-8")
    assert candidate in summary


def test_the_pipeline_in_rollout_mode_walks_a_healthy_revision_to_all_traffic(
    pipeline: Any, site: Site, gcp_clients: Any, tmp_path: Path
) -> None:
    build, _baseline, candidate = run_pipeline(
        pipeline,
        site,
        gcp_clients,
        tmp_path,
        {},
        BUILD_ID="b-3",
        _GUARD_MODE="rollout",
        _ROLLOUT_STEPS="50:3s",
    )
    assert build.exit_code == 0, build.output["guard"]
    report = build.report()
    assert (report["command"], report["verdict"]) == ("rollout", "pass"), report["message"]
    assert served_split(gcp_clients, site.emulator.parent) == {candidate: 100}
    assert [s["percent"] for s in report["steps"] if s["phase"] == "step"] == [50]
    assert build.uploads() == []


def test_the_deploy_step_creates_an_absent_service_without_no_traffic(
    pipeline: Any, site: Site, tmp_path: Path
) -> None:
    """The first-deploy branch, against real gcloud: ``services list`` does not list the
    service, so ``--no-traffic`` (which Cloud Run refuses on a new service) is left out. The
    emulator then refuses the deploy itself: a service's first revision needs ``--command``
    there, which the step (written for real images) does not pass."""
    build = Build(pipeline, site, tmp_path, _SERVICE="chat-agent-new")
    deploy = build.run_step("deploy")
    assert "chat-agent-new does not exist yet; first deploy creates it" in deploy.stdout
    assert deploy.returncode != 0
    assert "command is empty" in deploy.stderr, deploy.stderr  # not a --no-traffic refusal
