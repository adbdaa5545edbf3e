"""The gate's Python API against an emulator, for tests that choose the moment to interfere.

Importable from any test (``from gates import build_gate``): pytest puts ``tests/`` on
``sys.path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_guard.analysis.sources import cloud_sources
from deploy_guard.gcp.cloudrun import CloudRun
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.policy import load_file
from deploy_guard.report.model import CheckReport
from deploy_guard.runtime.driver import Gate
from deploy_guard.runtime.options import CheckOptions

CHAT_HOLD = Path(__file__).parent / "gate" / "policies" / "chat-hold.yaml"


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
