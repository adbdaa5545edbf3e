"""Shared fixtures: a real emulator, official clients pointed at it, a test revision.

- ``emulator``: a started :class:`~deploy_guard.emulator.server.EmulatorThread`
  (function-scoped, so tests never share state). ``emulator.address`` is the
  ``DEPLOY_GUARD_EMULATOR_HOST`` value; ``emulator.parent`` is
  ``projects/local-project/locations/us-central1``; ``emulator.faults``,
  ``.logs``, ``.metrics`` are the fault injector and stores; ``emulator.pids()``
  lists running revision processes.
- ``gcp_clients``: :class:`deploy_guard.gcp.clients.Clients` on the emulator.
- ``revision_app``: path of ``tests/apps/revision_app.py`` (see its docstring).
- ``app_template``: builds a ``run_v2.RevisionTemplate`` running that app.
- ``fast_polling``: pass as ``operation.result(polling=fast_polling)`` so a
  test does not wait the client's default 1 s between ``GetOperation`` polls.
- ``deploy``: create or update a service to run the app and wait for it::

      svc = deploy("chat")                          # 100 % to LATEST
      svc = deploy("chat", env={"V": "2"}, traffic=[...])  # a new revision

- ``in_terminal``: run ``deploy-guard ARGS`` as a process on a pseudo-terminal
  (stdout and stderr are a TTY, as for a person) and get back its exit code
  and what the screen showed, colour codes stripped::

      code, screen = in_terminal("policy", "validate", env={...})
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from emulators import running_emulator

APPS = Path(__file__).parent / "apps"


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Secrets and safe query parameters registered by one test never redact another's output."""
    from deploy_guard.log import forget_secrets

    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorThread]:
    """A fresh emulator for one test; revisions get 10 s to listen.

    Its options can be set per test (the realistic profile, say) with indirect
    parametrisation: ``@pytest.mark.parametrize("emulator", [{"realistic":
    Realism(...)}], indirect=True)``.
    """
    with running_emulator(**getattr(request, "param", {})) as emu:
        yield emu


@pytest.fixture
def gcp_clients(emulator: EmulatorThread) -> Iterator[Clients]:
    """The project's client factory, pointed at ``emulator``."""
    clients = Clients(host=emulator.address)
    try:
        yield clients
    finally:
        clients.close()


@pytest.fixture(scope="session")
def revision_app() -> Path:
    return APPS / "revision_app.py"


@pytest.fixture
def app_template(revision_app: Path) -> Callable[..., Any]:
    """``app_template(env={"K": "v"}, revision="", timeout_s=0)`` -> RevisionTemplate."""
    from google.cloud import run_v2

    def build(
        env: dict[str, str] | None = None, revision: str = "", timeout_s: float = 0
    ) -> run_v2.RevisionTemplate:
        container = run_v2.Container(
            image="local/revision-app",
            command=[sys.executable, str(revision_app)],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in (env or {}).items()],
        )
        template = run_v2.RevisionTemplate(containers=[container], revision=revision)
        if timeout_s:
            template.timeout = {"seconds": int(timeout_s), "nanos": int(timeout_s % 1 * 1e9)}
        return template

    return build


@pytest.fixture(scope="session")
def fast_polling() -> Any:
    from google.api_core import retry
    from google.api_core.future import polling

    return retry.Retry(
        predicate=polling.POLLING_PREDICATE, initial=0.02, maximum=0.2, multiplier=1.5, timeout=60
    )


@pytest.fixture
def deploy(
    emulator: EmulatorThread,
    gcp_clients: Clients,
    app_template: Callable[..., Any],
    fast_polling: Any,
) -> Callable[..., Any]:
    """``deploy(service_id, env=None, traffic=None)`` -> the Service once reconciled.

    Creates the service on first use, else updates it with a new template
    (``env`` changes make a new revision). ``traffic`` (a list of
    ``run_v2.TrafficTarget``) replaces the split; None keeps it. Raises the
    client's error if the revision fails.
    """
    from google.api_core import exceptions
    from google.cloud import run_v2

    def run(service_id: str, env: dict[str, str] | None = None, traffic: Any = None) -> Any:
        services = gcp_clients.services()
        name = f"{emulator.parent}/services/{service_id}"
        template = app_template(env=env)
        try:
            svc = services.get_service(name=name)
        except exceptions.NotFound:
            svc = None
        if svc is None:
            spec = run_v2.Service(template=template, traffic=traffic or [])
            op = services.create_service(
                parent=emulator.parent, service=spec, service_id=service_id
            )
        else:
            svc.template = template
            if traffic is not None:
                svc.traffic = traffic
            op = services.update_service(service=svc)
        return op.result(timeout=60, polling=fast_polling)

    return run


_ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07)")
InTerminal = Callable[..., tuple[int, str]]


@pytest.fixture
def in_terminal() -> InTerminal:
    """``in_terminal(*args, env=None, timeout=60)`` -> (exit code, screen text)."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        environ = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy_guard", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=environ,
            close_fds=True,
        )
        os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([master], [], [], left)
                if not ready:
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
        finally:
            os.close(master)
            if proc.poll() is None and time.monotonic() >= deadline:
                proc.kill()
        code = proc.wait(10)
        text = b"".join(chunks).decode(errors="replace").replace("\r", "")
        return code, _ANSI.sub("", text)

    return run
