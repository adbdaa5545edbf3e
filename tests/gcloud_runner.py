"""The real gcloud binary, run with a given environment (``from gcloud_runner import Gcloud``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

#: gcloud on the PATH, or None (tests that need it are skipped, saying so).
GCLOUD = shutil.which("gcloud")


class Gcloud:
    """The real gcloud, pointed at one emulator."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(
        self, *args: str, ok: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        assert GCLOUD is not None
        done = subprocess.run(
            [GCLOUD, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if ok:
            assert done.returncode == 0, f"gcloud {' '.join(args)}:\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--format", "json").stdout)
