"""Fixtures for the audit-log checks: one emulator per module, the site, the guard.

``site`` (:class:`audit.site.Site`) deploys and changes services as a named principal and
reads back the audit entries the emulator wrote. ``guard`` runs ``deploy-guard check
--from-audit-event`` in-process through click and returns its exit code, JSON report and
output. Each test uses services of its own, so the module's tests share one emulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from audit.site import POLICY, Site
from deploy_guard.cli import cli
from deploy_guard.gcp.clients import Clients
from emulators import running_emulator


@pytest.fixture(scope="module")
def audit_emulator() -> Iterator[Any]:
    with running_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def site(audit_emulator: Any) -> Iterator[Site]:
    from google.api_core import retry
    from google.api_core.future import polling

    fast = retry.Retry(
        predicate=polling.POLLING_PREDICATE, initial=0.02, maximum=0.2, multiplier=1.5, timeout=60
    )
    clients = Clients(host=audit_emulator.address)
    try:
        yield Site(audit_emulator, clients, fast)
    finally:
        clients.close()


Guard = Callable[..., tuple[int, dict[str, Any], str]]


@pytest.fixture
def guard(audit_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Guard:
    """``guard(event, *flags, source=None)`` -> (exit code, JSON report, output).

    ``event`` (a LogEntry dict, a list, a CloudEvent) is written to a file unless
    ``source`` says where the command reads it (``env:NAME``). The environment's region
    is another one on purpose: the event says where the deploy was.
    """
    monkeypatch.setenv("DEPLOY_GUARD_EMULATOR_HOST", audit_emulator.address)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", audit_emulator.project)
    monkeypatch.setenv("CLOUDSDK_RUN_REGION", "asia-east1")
    monkeypatch.setenv("DEPLOY_GUARD_LOG_FORMAT", "json")
    runs = iter(range(1000))

    def run(event: Any, *flags: str, source: str | None = None) -> tuple[int, dict[str, Any], str]:
        n = next(runs)
        if source is None:
            path = tmp_path / f"event-{n}.json"
            path.write_text(json.dumps(event))
            source = str(path)
        report = tmp_path / f"report-{n}.json"
        args = ["check", "--from-audit-event", source, "--policy", str(POLICY)]
        args += ["--report", str(report), "--log-interval", "0.5s", *flags]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        doc = json.loads(report.read_text()) if report.exists() else {}
        return result.exit_code, doc, result.output

    return run
