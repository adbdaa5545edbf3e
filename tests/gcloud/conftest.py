"""Fixtures for gcloud against the emulator: one emulator per module, the real gcloud binary.

``emulator`` is overridden here with module scope, so every test in a module
shares one emulator (and its revision processes): gcloud takes a second or
two per command, and a fresh emulator per test would add more. Tests in a
module therefore use service names of their own.

``gcloud(*args)`` runs the real binary with the variables ``deploy-guard
emulator --gcloud-env`` writes, a private ``CLOUDSDK_CONFIG`` and ``HOME``
pointing at an empty directory, so a test can show that the user's own
configuration is never touched. Tests that need gcloud are skipped, with the
reason, where it is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy_guard.emulator.rest.gcloud_env import gcloud_environment
from deploy_guard.emulator.server import EmulatorThread
from emulators import running_emulator
from gcloud_runner import GCLOUD, Gcloud

ROOT = Path(__file__).resolve().parents[2]
#: A Ready revision is routed this long after it listens: gcloud must wait for it.
ROUTE_DELAY_S = 0.3


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorThread]:
    """One emulator for the module, started from the repository root (the examples' paths)."""
    with running_emulator(workdir=str(ROOT), route_delay=ROUTE_DELAY_S) as emu:
        yield emu


@pytest.fixture(scope="module")
def gcloud_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``HOME`` gcloud runs with: empty, and it must stay without ``.config/gcloud``."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def gcloud(
    emulator: EmulatorThread, gcloud_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Gcloud:
    """``gcloud("run", "services", "list")`` -> CompletedProcess (asserting exit 0 unless
    ``ok=False``); ``gcloud.json(...)`` parses ``--format json``."""
    if GCLOUD is None:
        pytest.skip("gcloud is not installed (not on PATH)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
    env.update(
        gcloud_environment(
            rest_address=emulator.rest_address,
            grpc_address=emulator.address,
            project=emulator.project,
            region=emulator.region,
            config_dir=str(tmp_path_factory.mktemp("gcloud-config")),
        )
    )
    env["HOME"] = str(gcloud_home)
    return Gcloud(env)
