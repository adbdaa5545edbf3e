"""Fixtures for the rollout tests: a service of the revision app, real users, short policies.

- ``emulator`` (overrides the root one): metric points are visible
  :data:`METRICS_DELAY_S` after a request ends, like Cloud Monitoring's lag
  scaled down, so a policy's ``metric_lag`` (1 s in ``policies/``) is honoured
  and steps of a few seconds can decide. Options still come from indirect
  parametrisation (``{"metrics_delay": 2.0}``).
- ``shop``: a :class:`Shop`, the gate tests' :class:`~gate.conftest.Chat`
  running ``tests/apps/revision_app.py`` (every answer names its revision);
  ``baseline`` deploys its first revision, 100 % of the traffic::

      base = baseline                                  # "shop-00001-abc"
      cand = shop.candidate({"APP_FAIL_PATH": "/api/tool", "APP_FAIL_EVERY": "3"})
      shop.route({base: 90, cand: 10})                 # what a step writes
      with Users(shop.url, rate=30, paths=["/", "/api/tool"]) as users: ...

- ``rollout``: ``deploy-guard rollout`` in-process through click, as a user
  runs it: ``rollout(revision, *flags, policy="healthy.yaml")`` -> (exit code,
  JSON report).
- ``POLICIES``: ``healthy.yaml`` (HTTP and WebSocket probes, a logs rule and
  an error-rate rule against the baseline; steps 10:3s,50:3s), ``error-rate.yaml``
  (its metric rule fails a candidate whose /api/tool fails 1 in 3 under real
  traffic, while its probes of / pass) and ``ws-1011.yaml`` (its WebSocket
  probe fails a candidate with ``APP_WS_CLOSE=1011`` before any step). Their
  metric rules say ``missing_data: ignore``: the tag stage is judged as a
  check, with no real traffic; in a step real users give them data. Users at
  40 requests/s or more give a 10 % step enough requests to decide.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from emulators import running_emulator
from gate.conftest import Chat

APPS = Path(__file__).resolve().parents[1] / "apps"
POLICIES = Path(__file__).parent / "policies"
#: Seconds before a finished request shows in Cloud Monitoring (the policies' metric_lag is 1 s).
METRICS_DELAY_S = 0.5


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorThread]:
    """A fresh emulator whose metric points show :data:`METRICS_DELAY_S` late."""
    options = {"metrics_delay": METRICS_DELAY_S, **getattr(request, "param", {})}
    with running_emulator(**options) as emu:
        yield emu


@dataclass
class Shop(Chat):
    """Revisions of one service running the revision app (``APP_*`` env plays failures)."""

    service: str = "shop"

    def template(self, env: dict[str, str] | None = None, command: list[str] | None = None) -> Any:
        return super().template(env, command or [sys.executable, str(APPS / "revision_app.py")])

    @property
    def url(self) -> str:
        """The service's main URL: real users come here, through the traffic split."""
        return str(self.get().uri)

    def tag_url(self, tag: str = "candidate") -> str:
        return next(t.uri for t in self.get().traffic_statuses if t.tag == tag)

    def route(self, split: dict[str, int]) -> dict[str, int]:
        """Write ``split`` (revision -> percent), keeping every tag; the split read back."""
        from google.cloud import run_v2

        svc = self.get()
        kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
        latest = svc.latest_ready_revision.rsplit("/", 1)[-1]
        tags = {t.tag: t.revision or latest for t in svc.traffic_statuses if t.tag}
        svc.traffic = [
            run_v2.TrafficTarget(type_=kind, revision=rev, percent=pct)
            for rev, pct in split.items()
        ] + [run_v2.TrafficTarget(type_=kind, revision=rev, tag=tag) for tag, rev in tags.items()]
        self.clients.services().update_service(service=svc).result(timeout=60, polling=self.polling)
        return self.serving()


@pytest.fixture
def shop(emulator: EmulatorThread, gcp_clients: Clients, fast_polling: Any) -> Shop:
    return Shop(emulator, gcp_clients, fast_polling)


@pytest.fixture
def baseline(shop: Shop) -> str:
    """The service's first revision, serving 100 % (its short name)."""
    return shop.first()


RolloutFn = Any


@pytest.fixture
def rollout(emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> RolloutFn:
    """``rollout(revision, *flags, policy="healthy.yaml")`` -> (exit code, JSON report)."""
    for key, value in {
        "DEPLOY_GUARD_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "CLOUDSDK_RUN_REGION": emulator.region,
        "DEPLOY_GUARD_LOG_FORMAT": "json",
    }.items():
        monkeypatch.setenv(key, value)

    def run(revision: str, *flags: str, policy: str = "healthy.yaml") -> tuple[int, dict[str, Any]]:
        report = tmp_path / f"rollout-{len(list(tmp_path.iterdir()))}.json"
        args = ["rollout", "--revision", revision, "--policy", str(POLICIES / policy)]
        result = CliRunner().invoke(
            cli,
            [*args, "--report", str(report), "--log-interval", "0.5s", *flags],
            catch_exceptions=False,
        )
        doc = json.loads(report.read_text()) if report.exists() else {}
        return result.exit_code, doc

    return run
