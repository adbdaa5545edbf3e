"""A Cloud Deploy canary phase on the emulator, and the verify container run as Cloud Deploy would.

:class:`CanaryPhase` does to a service what Cloud Deploy's Cloud Run canary does
before a phase's verify job: deploy the release's revision, then write the
phase's split pinned by revision name (the stable revision keeps the rest), the
new revision tagged when the pipeline has ``canaryRevisionTags``.

:func:`run_verify` runs the ``verify:`` container of the repository's
``skaffold.yaml`` as a process: its ``command`` and ``args`` as written, with the
image's paths (``/policies/``, ``/tmp/deploy-guard/``) mapped to folders of the
test, and the environment Cloud Deploy gives a verify job (:func:`phase_env`),
pointed at the emulator. Nothing else of this machine's set-up leaks in: no
``GOOGLE_CLOUD_PROJECT`` or ``CLOUDSDK_RUN_REGION``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = ROOT / "skaffold.yaml"
CHAT_APP = ROOT / "examples" / "chat_agent" / "app.py"
#: The test's policy in place of the image's /policies/chat-agent.yaml (short holds).
FAST_POLICY = ROOT / "tests" / "gate" / "policies" / "chat-fast.yaml"
#: The methods that change a service: a verify job must call none of them.
WRITES = ("CreateService", "UpdateService", "DeleteService", "DeleteRevision")
#: Where the image keeps what the command line names.
IMAGE_PATHS = ("/policies/", "/tmp/deploy-guard/")


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def verify_container(path: Path = SKAFFOLD) -> dict[str, Any]:
    """The one ``verify:`` container of ``skaffold.yaml``."""
    doc = YAML(typ="safe").load(path.read_text())
    (case,) = doc["verify"]
    container: dict[str, Any] = case["container"]
    return container


@dataclass
class CanaryPhase:
    """A service on the emulator that Cloud Deploy's canary is walking."""

    emulator: Any
    clients: Any
    polling: Any
    service: str
    stable: str = ""
    candidate: str = ""
    deploys: int = 0

    @property
    def name(self) -> str:
        return f"{self.emulator.parent}/services/{self.service}"

    def _template(self, env: dict[str, str]) -> Any:
        from google.cloud import run_v2

        self.deploys += 1  # a changed template is what makes a new revision
        env = {**env, "RELEASE_SERIAL": str(self.deploys)}
        container = run_v2.Container(
            image="local/chat-agent",
            command=[sys.executable, str(CHAT_APP)],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()],
        )
        return run_v2.RevisionTemplate(containers=[container])

    def get(self) -> Any:
        return self.clients.services().get_service(name=self.name)

    def release(self, env: dict[str, str] | None = None) -> str:
        """The first release: its revision serves everything (the stable one from now on)."""
        from google.cloud import run_v2

        op = self.clients.services().create_service(
            parent=self.emulator.parent,
            service=run_v2.Service(template=self._template(env or {})),
            service_id=self.service,
        )
        self.stable = short(op.result(timeout=60, polling=self.polling).latest_ready_revision)
        return self.stable

    def phase(self, percent: int, env: dict[str, str] | None = None, tag: str = "") -> str:
        """Deploy the next release's revision and give it ``percent``, as a phase does."""
        from google.cloud import run_v2

        pinned = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
        svc = self.get()
        svc.template = self._template(env or {})
        svc.traffic = [run_v2.TrafficTarget(type_=pinned, revision=self.stable, percent=100)]
        self.clients.services().update_service(service=svc).result(timeout=60, polling=self.polling)
        svc = self.get()
        self.candidate = short(svc.latest_created_revision)
        split = [run_v2.TrafficTarget(type_=pinned, revision=self.stable, percent=100 - percent)]
        split.append(
            run_v2.TrafficTarget(type_=pinned, revision=self.candidate, percent=percent, tag=tag)
        )
        svc.traffic = split
        self.clients.services().update_service(service=svc).result(timeout=60, polling=self.polling)
        return self.candidate

    def serving(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.get().traffic_statuses:
            if t.percent:
                out[t.revision] = out.get(t.revision, 0) + t.percent
        return out

    def state(self) -> dict[str, Any]:
        """What a write would change: generation, etag, the split and the tags, annotations."""
        svc = self.get()
        return {
            "generation": svc.generation,
            "etag": svc.etag,
            "traffic": [(t.revision, t.percent, t.tag) for t in svc.traffic],
            "annotations": dict(svc.annotations),
        }


def phase_env(phase: CanaryPhase, *, name: str = "canary-10", **extra: str) -> dict[str, str]:
    """What Cloud Deploy sets for the verify job of ``phase``'s current phase."""
    svc = phase.get()
    env = {
        "CLOUD_DEPLOY_PROJECT": "123456789012",
        "CLOUD_DEPLOY_PROJECT_ID": phase.emulator.project,
        "CLOUD_DEPLOY_LOCATION": phase.emulator.region,
        "CLOUD_DEPLOY_DELIVERY_PIPELINE": "chat-agent",
        "CLOUD_DEPLOY_TARGET": "prod",
        "CLOUD_DEPLOY_RELEASE": f"rel-{phase.deploys:03d}",
        "CLOUD_DEPLOY_ROLLOUT": f"rel-{phase.deploys:03d}-to-prod-0001",
        "CLOUD_DEPLOY_JOB_RUN": "4c1f0e5a-6b1d-4f7e-9a53-0d9c2b7e8f10",
        "CLOUD_DEPLOY_PHASE": name,
        "CLOUD_RUN_PROJECT": phase.emulator.project,
        "CLOUD_RUN_LOCATION": phase.emulator.region,
        "CLOUD_RUN_SERVICE": phase.service,
        "CLOUD_RUN_REVISION": phase.candidate,
        "CLOUD_RUN_SERVICE_URLS": ",".join(svc.urls) or svc.uri,
        "TARGET_TYPE": "RUN",
    }
    return {**env, **extra}


@dataclass
class Outcome:
    code: int
    report: dict[str, Any]
    summary: str
    stdout: str
    stderr: str
    argv: list[str] = field(default_factory=list)


def run_verify(
    emulator: Any, env: dict[str, str], tmp: Path, *, policy: Path = FAST_POLICY
) -> Outcome:
    """Run skaffold.yaml's verify container as Cloud Deploy would, against ``emulator``."""
    container = verify_container()
    policies, out = tmp / "policies", tmp / "out"
    policies.mkdir(parents=True, exist_ok=True)
    shutil.copy(policy, policies / "chat-agent.yaml")
    mapped = dict(zip(IMAGE_PATHS, (f"{policies}/", f"{out}/"), strict=True))

    def local(arg: str) -> str:
        for inside, here in mapped.items():
            if arg.startswith(inside):
                return here + arg[len(inside) :]
        return arg

    (program,) = container["command"]
    argv = [str(Path(sys.executable).parent / program), *map(local, container["args"])]
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD", "GOOGLE_"))}
    environ = {
        **keep,
        **env,
        "DEPLOY_GUARD_EMULATOR_HOST": emulator.address,
        "DEPLOY_GUARD_LOG_FORMAT": "json",
    }
    proc = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=120)
    args = list(container["args"])
    report_path = Path(local(args[args.index("--report") + 1]))
    summary_path = Path(local(args[args.index("--summary") + 1]))
    return Outcome(
        code=proc.returncode,
        report=json.loads(report_path.read_text()) if report_path.exists() else {},
        summary=summary_path.read_text() if summary_path.exists() else "",
        stdout=proc.stdout,
        stderr=proc.stderr,
        argv=argv,
    )
