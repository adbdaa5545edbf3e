"""Google's Pub/Sub emulator for tests: ``gcloud beta emulators pubsub start`` on a free port.

Importable from any test (``from pubsub_emulator import running_pubsub``). Needs
``gcloud`` with its pubsub-emulator component and Java, as on this project's
machines; :func:`missing` says what is absent, so a test can skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT = "notify-project"


def _component() -> Path | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    root = Path(gcloud).resolve().parent.parent  # .../google-cloud-sdk/bin/gcloud
    for candidate in (root, Path("/usr/lib/google-cloud-sdk")):
        emulator = candidate / "platform" / "pubsub-emulator"
        if emulator.is_dir():
            return emulator
    return None


def missing() -> str | None:
    """Why the emulator cannot run here, or None."""
    if shutil.which("gcloud") is None:
        return "gcloud is not installed (the Pub/Sub emulator comes with it)"
    if shutil.which("java") is None:
        return "java is not installed (the Pub/Sub emulator needs it)"
    if _component() is None:
        return "gcloud's pubsub-emulator component is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_pubsub(within: float = 90.0) -> Iterator[str]:
    """Start the emulator; yield its ``host:port`` (``PUBSUB_EMULATOR_HOST``); stop it."""
    port = _free_port()
    config = tempfile.mkdtemp(prefix="dg-gcloud-")
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": config,  # gcloud writes nothing into the user's own config
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
    }
    log = Path(config) / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port=127.0.0.1:{port}",
                f"--project={PROJECT}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own group: gcloud, then java under it
        )
    try:
        deadline = time.monotonic() + within
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Pub/Sub emulator did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)
        shutil.rmtree(config, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the emulator's process group (gcloud and the java it started), by its id."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=15)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.poll()
