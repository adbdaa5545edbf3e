"""``deploy-guard emulator``: the host line first, faults from flags, no orphans on exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from click.testing import CliRunner
from google.api_core import exceptions as gexc
from google.cloud import run_v2

from deploy_guard.cli import cli
from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from waiting import process_gone as gone
from waiting import wait_until

HOST_LINE = re.compile(r"^DEPLOY_GUARD_EMULATOR_HOST=(127\.0\.0\.1:\d+)\n$")


def read_line(stream: IO[str], within_s: float = 30.0) -> str:
    """One line from a child's stdout, or fail after ``within_s`` (never hang the suite)."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(within_s)
    if not box:
        raise AssertionError(f"no line on stdout within {within_s} s")
    return box[0]


def wait_exit(proc: subprocess.Popen[str], within_s: float = 20.0) -> int:
    try:
        return proc.wait(within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the emulator did not exit within {within_s} s") from None


@pytest.fixture
def start_command(tmp_path: Path) -> Iterator[Any]:
    """Start ``deploy-guard emulator ARGS`` as a child process; kill it if a test did not."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        stderr = (tmp_path / f"stderr-{len(started)}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "deploy_guard", "emulator", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "DEPLOY_GUARD_LOG_FORMAT": "json"},
        )
        stderr.close()
        started.append(proc)
        assert proc.stdout is not None
        line = read_line(proc.stdout)
        match = HOST_LINE.match(line)
        assert match, f"first stdout line was {line!r}"
        return proc, match.group(1)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_prints_host_first_serves_faults_and_leaves_no_process_after_sigterm(
    start_command: Any, app_template: Any, fast_polling: Any
) -> None:
    proc, host = start_command("--port", "0", "--fault", "ListServices=UNAVAILABLE")
    clients = Clients(host=host)
    try:
        parent = "projects/local-project/locations/us-central1"
        services = clients.services()
        svc = services.create_service(
            parent=parent, service=run_v2.Service(template=app_template()), service_id="chat"
        ).result(timeout=60, polling=fast_polling)
        pid = httpx.get(svc.uri, timeout=10).json()["pid"]
        assert not gone(pid)
        with pytest.raises(gexc.ServiceUnavailable):
            services.list_services(parent=parent, retry=None)
    finally:
        clients.close()

    proc.send_signal(signal.SIGTERM)
    assert wait_exit(proc) == 0
    wait_until(lambda: gone(pid), 5, f"revision process {pid} exiting with the emulator")
    assert proc.stdout is not None
    assert proc.stdout.read() == ""  # the host line was the only stdout output


def test_sigint_stops_it_cleanly(start_command: Any) -> None:
    proc, _host = start_command("--project", "p1", "--region", "europe-west1")
    proc.send_signal(signal.SIGINT)
    assert wait_exit(proc) == 0


def test_a_hang_up_stops_its_revisions_too(
    start_command: Any, app_template: Any, fast_polling: Any
) -> None:
    proc, host = start_command()
    clients = Clients(host=host)
    try:
        svc = (
            clients.services()
            .create_service(
                parent="projects/local-project/locations/us-central1",
                service=run_v2.Service(template=app_template()),
                service_id="chat",
            )
            .result(timeout=60, polling=fast_polling)
        )
        pid = httpx.get(svc.uri, timeout=10).json()["pid"]
    finally:
        clients.close()
    proc.send_signal(signal.SIGHUP)  # the terminal it ran in was closed
    assert wait_exit(proc) == 0
    wait_until(lambda: gone(pid), 5, f"revision process {pid} exiting with the emulator")


def test_a_bad_flag_is_a_usage_error_before_anything_starts() -> None:
    result = CliRunner().invoke(cli, ["emulator", "--fault", "GetService=NOPE"])
    assert result.exit_code == 2
    assert "not a gRPC status code" in result.output
    result = CliRunner().invoke(cli, ["emulator", "--metrics-delay", "soon"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--fault", "ListLogEntrie=UNAVAILABLE"], "matches no RPC"),
        (["--project", ""], "not a project id"),
        (["--project", "a/b"], "not a project id"),
        (["--region", "Europe West"], "not a region name"),
        (["--startup-timeout", "0s"], "not positive"),
    ],
)
def test_a_project_region_or_timeout_no_api_could_use_is_a_usage_error(
    args: list[str], needle: str
) -> None:
    result = CliRunner().invoke(cli, ["emulator", *args])
    assert result.exit_code == 2
    assert needle in result.output
    assert "DEPLOY_GUARD_EMULATOR_HOST" not in result.output  # refused before serving


def test_a_taken_port_is_a_usage_error(emulator: EmulatorThread) -> None:
    port = emulator.address.rsplit(":", 1)[1]
    result = CliRunner().invoke(cli, ["emulator", "--port", port])
    assert result.exit_code == 2
    assert "cannot listen" in result.output


def test_help_says_how_to_point_scripts_at_it() -> None:
    result = CliRunner().invoke(cli, ["emulator", "--help"])
    assert result.exit_code == 0
    for text in ("DEPLOY_GUARD_EMULATOR_HOST", "insecure_channel", "--fault", "127.0.0.1"):
        assert text in result.output
