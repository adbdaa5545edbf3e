"""The gate's Python API against an emulator, for tests that choose the moment to interfere.

Importable from any test (``from gates import build_gate``): pytest puts ``tests/`` on
``sys.path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from deploy_guard.analysis.sources import cloud_sources
from deploy_guard.cli import cli
from deploy_guard.gcp.cloudrun import CloudRun
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.policy import load_file
from deploy_guard.report.model import CheckReport
from deploy_guard.runtime.driver import Gate
from deploy_guard.runtime.options import CheckOptions

POLICIES = Path(__file__).parent / "gate" / "policies"
CHAT_HOLD = POLICIES / "chat-hold.yaml"


def build_gate(
    gcp_clients: Any,
    emulator: Any,
    revision: str,
    *,
    router: CloudRun | None = None,
    policy: Path = CHAT_HOLD,
    progress: Any = None,
    gate_class: type[Gate] = Gate,
    options_class: type[CheckOptions] = CheckOptions,
    **options: Any,
) -> Gate:
    """A gate checking ``revision`` by ``policy`` (log passes every 0.5 s unless told).

    ``gate_class`` and ``options_class``: another driver on the same parts (a rollout's).
    """
    router = router or CloudRun(gcp_clients, emulator.project, emulator.region, calls=ApiCalls())
    options.setdefault("log_interval", 0.5)
    opts = options_class(
        project=emulator.project, region=emulator.region, revision=revision, **options
    )
    return gate_class(
        [load_file(policy)],
        opts,
        router,
        cloud_sources(gcp_clients, router.calls),
        CheckReport(revision=revision),
        progress=progress,
    )


def run_guard(
    command: str, tmp_path: Path, revision: str, *flags: str, policy: str
) -> tuple[int, dict[str, Any], str]:
    """``deploy-guard COMMAND --revision REV --policy tests/gate/policies/POLICY`` in-process.

    Returns the exit code, the JSON report ({} when none was written) and the output.
    """
    name = revision.rsplit("/", 1)[-1]
    report = tmp_path / f"{command}-{name}-{len(list(tmp_path.iterdir()))}.json"
    args = [command, "--revision", revision, "--policy", str(POLICIES / policy)]
    args += ["--report", str(report), "--log-interval", "0.5s", *flags]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, doc, result.output
