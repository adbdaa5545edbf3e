"""A fleet of chat services on one emulator, and guards run as real processes.

``Services`` deploys ``examples/chat_agent/app.py`` as services ``svc-0``, ``svc-1``, ...:
a healthy first revision with all the traffic, then a candidate that takes it over (as a
plain ``gcloud run deploy`` does), healthy or broken by the app's failure switches.
``guard_processes`` starts one ``deploy-guard`` process per fleet entry at once, with the
environment a Cloud Run job gives its tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHAT_APP = ROOT / "examples" / "chat_agent" / "app.py"
POLICIES = Path(__file__).parent / "fleet" / "policies"
FLEET_POLICY = POLICIES / "fleet-chat.yaml"


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


@dataclass
class Services:
    """Chat services on one emulator (see the module docstring)."""

    emulator: Any
    clients: Any
    polling: Any

    def name(self, service: str) -> str:
        return f"{self.emulator.parent}/services/{service}"

    def _template(self, env: Mapping[str, str]) -> Any:
        from google.cloud import run_v2

        container = run_v2.Container(
            image="local/chat-agent",
            command=[sys.executable, str(CHAT_APP)],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()],
        )
        return run_v2.RevisionTemplate(containers=[container])

    def deploy(self, service: str, candidate_env: Mapping[str, str]) -> tuple[str, str]:
        """Create ``service`` (one healthy revision), then deploy a candidate taking 100 %."""
        from google.cloud import run_v2

        services = self.clients.services()
        first = services.create_service(
            parent=self.emulator.parent,
            service=run_v2.Service(template=self._template({"DEPLOY": "1"})),
            service_id=service,
        ).result(timeout=60, polling=self.polling)
        first.template = self._template({"DEPLOY": "2", **candidate_env})
        second = services.update_service(service=first).result(timeout=60, polling=self.polling)
        return short(first.latest_ready_revision), short(second.latest_created_revision)

    def deploy_all(self, candidates: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
        """``svc-K`` for each candidate environment, deployed in parallel."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(
                pool.map(lambda kv: self.deploy(f"svc-{kv[0]}", kv[1]), enumerate(candidates))
            )

    def serving(self, service: str) -> dict[str, int]:
        svc = self.clients.services().get_service(name=self.name(service))
        out: dict[str, int] = {}
        for t in svc.traffic_statuses:
            revision = t.revision or short(svc.latest_ready_revision)
            if t.percent:
                out[revision] = out.get(revision, 0) + t.percent
        return out


def fleet_file(path: Path, services: Sequence[str], *, quota: str = "120/min") -> Path:
    """A fleet file for ``services``, every one judged by the fleet policy."""
    lines = ["version: 1", f"log_read_quota: {quota}", "services:"]
    for service in services:
        lines += [f"  - service: {service}", f"    policy: {FLEET_POLICY}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Guard:
    """One finished guard process: its exit code, JSON report and JSON log lines."""

    index: int
    code: int
    report: dict[str, Any]
    events: list[dict[str, Any]]
    stderr: str


def guard_processes(
    emulator: Any,
    fleet: Path,
    folder: Path,
    count: int,
    *flags: str,
    command: str = "check",
    timeout: float = 120,
) -> list[Guard]:
    """``count`` guards started at once, task K with CLOUD_RUN_TASK_INDEX=K; all finished."""
    env = {
        **os.environ,
        "DEPLOY_GUARD_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "CLOUDSDK_RUN_REGION": emulator.region,
        "DEPLOY_GUARD_LOG_FORMAT": "json",
        "CLOUD_RUN_TASK_COUNT": str(count),
    }
    procs = []
    for k in range(count):
        report = folder / f"report-{k}.json"
        args = [sys.executable, "-m", "deploy_guard", command, "--fleet", str(fleet)]
        args += ["--report", str(report), *flags]
        procs.append(
            subprocess.Popen(
                args,
                env={**env, "CLOUD_RUN_TASK_INDEX": str(k)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    guards = []
    try:
        for k, proc in enumerate(procs):
            _out, err = proc.communicate(timeout=timeout)
            report = folder / f"report-{k}.json"
            doc = json.loads(report.read_text()) if report.exists() else {}
            events = []
            for line in err.splitlines():
                if line.startswith("{"):
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue
            guards.append(Guard(k, proc.returncode, doc, events, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return guards
