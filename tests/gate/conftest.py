"""Fixtures for the gate's end-to-end tests: the chat agent deployed on the emulator.

``chat`` deploys ``examples/chat_agent/app.py`` as revisions of a service
(healthy or with a failure switch) and hands back short revision names;
``check`` runs ``deploy-guard check`` in-process through click, the way a user
runs it, and returns its exit code and JSON report.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy_guard.gcp.clients import Clients
from gates import run_guard

ROOT = Path(__file__).resolve().parents[2]
CHAT_APP = ROOT / "examples" / "chat_agent" / "app.py"
POLICIES = Path(__file__).parent / "policies"


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


@dataclass
class Chat:
    """Deploys revisions of one chat service on the emulator."""

    emulator: Any
    clients: Clients
    polling: Any
    service: str = "chat"
    deploys: int = 0

    @property
    def name(self) -> str:
        return f"{self.emulator.parent}/services/{self.service}"

    def template(self, env: dict[str, str] | None = None, command: list[str] | None = None) -> Any:
        from google.cloud import run_v2

        container = run_v2.Container(
            image="local/chat-agent",
            command=command or [sys.executable, str(CHAT_APP)],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
        )
        return run_v2.RevisionTemplate(containers=[container])

    def get(self) -> Any:
        return self.clients.services().get_service(name=self.name)

    def first(self, env: dict[str, str] | None = None) -> str:
        """Create the service: one revision with 100 % of the traffic."""
        from google.cloud import run_v2

        op = self.clients.services().create_service(
            parent=self.emulator.parent,
            service=run_v2.Service(template=self.template(env)),
            service_id=self.service,
        )
        return short(op.result(timeout=60, polling=self.polling).latest_ready_revision)

    def candidate(
        self,
        env: dict[str, str] | None = None,
        *,
        tag: str | None = "candidate",
        percent: int = 0,
        command: list[str] | None = None,
        wait: bool = True,
    ) -> str:
        """Deploy a new revision with no traffic (and a tag), like ``--no-traffic --tag``.

        ``percent`` > 0 makes it a canary: that share moves from the serving revision.
        """
        from google.cloud import run_v2

        svc = self.get()
        kinds = run_v2.TrafficTargetAllocationType
        keep = [
            run_v2.TrafficTarget(
                type_=kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision=t.revision or short(svc.latest_ready_revision),
                percent=t.percent,
                tag=t.tag,
            )
            for t in svc.traffic_statuses
            if t.percent > 0
        ]
        if percent:
            keep[0].percent -= percent
        if tag or percent:
            keep.append(
                run_v2.TrafficTarget(
                    type_=kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                    percent=percent,
                    tag=tag or "",
                )
            )
        self.deploys += 1  # a changed template is what makes a new revision
        svc.template = self.template({**(env or {}), "DEPLOY_SERIAL": str(self.deploys)}, command)
        svc.traffic = keep
        op = self.clients.services().update_service(service=svc)
        if not wait:
            return ""
        # A revision that never starts fails the operation: the test wants that revision.
        with contextlib.suppress(Exception):
            op.result(timeout=60, polling=self.polling)
        return short(self.get().latest_created_revision)

    def serving(self) -> dict[str, int]:
        svc = self.get()
        out: dict[str, int] = {}
        for t in svc.traffic_statuses:
            rev = t.revision or short(svc.latest_ready_revision)
            if t.percent:
                out[rev] = out.get(rev, 0) + t.percent
        return out

    def tags(self) -> set[str]:
        return {t.tag for t in self.get().traffic_statuses if t.tag}


@pytest.fixture
def chat(emulator: Any, gcp_clients: Clients, fast_polling: Any) -> Chat:
    return Chat(emulator, gcp_clients, fast_polling)


@pytest.fixture
def emulator_env(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "DEPLOY_GUARD_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "CLOUDSDK_RUN_REGION": emulator.region,
        "DEPLOY_GUARD_LOG_FORMAT": "json",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


CheckFn = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def check(emulator_env: dict[str, str], tmp_path: Path) -> CheckFn:
    """``check(revision, *flags, policy="chat-fast.yaml")`` -> (exit code, JSON report)."""

    def run(
        revision: str, *flags: str, policy: str = "chat-fast.yaml"
    ) -> tuple[int, dict[str, Any]]:
        code, doc, _output = run_guard("check", tmp_path, revision, *flags, policy=policy)
        return code, doc

    return run
