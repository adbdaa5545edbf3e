"""Revision processes: started with Cloud Run's environment, ready when listening, stopped whole."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.emulator.processes import RevisionProcess
from waiting import eventually
from waiting import process_gone as gone

REF = RevisionRef("local-project", "us-central1", "chat", "chat-00001-abc", "chat")


class RecordingSink:
    """A LogSink that keeps what it is given (the seam the LogStore also implements)."""

    def __init__(self) -> None:
        self.lines: list[tuple[RevisionRef, str, str]] = []
        self.system_lines: list[tuple[str, str]] = []  # (severity, message)

    def revision_output(
        self, ref: RevisionRef, stream: Literal["stdout", "stderr"], line: str, when: datetime
    ) -> None:
        self.lines.append((ref, stream, line))

    def request(self, record: RequestRecord) -> None:
        pass

    def system(self, ref: RevisionRef, severity: str, message: str, when: datetime) -> None:
        self.system_lines.append((severity, message))

    def audit(self, **_fields: Any) -> None:
        pass

    def text(self) -> str:
        return "\n".join(line for _, _, line in self.lines)


def environ_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


async def test_ready_process_gets_cloud_run_env_and_its_output_reaches_the_sink(
    revision_app: Path,
) -> None:
    sink = RecordingSink()
    proc = RevisionProcess(REF, [sys.executable, str(revision_app)], {"GREETING": "hi"}, sink)
    assert await proc.start(10.0) is None
    try:
        assert proc.running
        assert proc.pid is not None
        environ = environ_of(proc.pid)
        for pair in (
            f"PORT={proc.port}",
            "K_SERVICE=chat",
            "K_REVISION=chat-00001-abc",
            "K_CONFIGURATION=chat",
            "GREETING=hi",
        ):
            assert pair.encode() in environ
        await eventually(lambda: "listening on" in sink.text())
        assert all(ref == REF for ref, _, _ in sink.lines)
    finally:
        await proc.stop()
    assert gone(proc.pid)


async def test_process_that_exits_fails_with_status_and_last_output(revision_app: Path) -> None:
    sink = RecordingSink()
    proc = RevisionProcess(
        REF, [sys.executable, str(revision_app)], {"APP_EXIT_AT_START": "7"}, sink
    )
    failure = await proc.start(10.0)
    assert failure is not None
    assert failure.reason == "ContainerFailed"
    assert "exited with status 7" in failure.message
    assert "fatal: cannot start revision chat-00001-abc: missing CONFIG" in failure.message
    assert "stderr" in {stream for _, stream, _ in sink.lines}
    assert not proc.running


async def test_process_that_never_listens_is_stopped_after_the_timeout(
    revision_app: Path,
) -> None:
    sink = RecordingSink()
    proc = RevisionProcess(
        REF, [sys.executable, str(revision_app)], {"APP_NEVER_LISTEN": "1"}, sink
    )
    started = time.monotonic()
    failure = await proc.start(0.8)
    assert failure is not None
    assert failure.reason == "HealthCheckFailed"
    assert "0.8 s" in failure.message
    assert "will never listen" in failure.message
    assert time.monotonic() - started < 8
    assert proc.pid is not None
    assert gone(proc.pid)


async def test_stop_also_stops_what_the_revision_spawned(revision_app: Path) -> None:
    sink = RecordingSink()
    script = f'sleep 300 & echo "child=$!"; exec "{sys.executable}" "{revision_app}"'
    proc = RevisionProcess(REF, ["sh", "-c", script], {}, sink)
    assert await proc.start(10.0) is None
    await eventually(lambda: "child=" in sink.text())
    child = int(sink.text().split("child=")[1].split()[0])
    assert not gone(child)
    await proc.stop()
    await eventually(lambda: gone(child), 5.0)


async def test_a_command_that_does_not_exist_fails_cleanly(tmp_path: Path) -> None:
    proc = RevisionProcess(REF, [str(tmp_path / "missing")], {}, RecordingSink())
    failure = await proc.start(1.0)
    assert failure is not None
    assert failure.reason == "ContainerFailed"
    assert "could not start" in failure.message
    await proc.stop()  # nothing to stop; must not raise


async def test_an_environment_no_process_can_have_fails_cleanly() -> None:
    proc = RevisionProcess(REF, [sys.executable, "-c", "pass"], {"A=B": "x"}, RecordingSink())
    failure = await proc.start(1.0)
    assert failure is not None
    assert failure.reason == "ContainerFailed"
    assert "could not start" in failure.message
    assert await proc.died() is None  # never started: nothing to watch


async def test_died_tells_a_crash_from_a_stop(revision_app: Path) -> None:
    crashing = RevisionProcess(
        REF,
        [sys.executable, "-c", "import socket,os,sys,time\n" + _LISTEN_THEN_EXIT],
        {},
        RecordingSink(),
    )
    assert await crashing.start(10.0) is None
    assert await asyncio.wait_for(crashing.died(), 10) == 7
    stopped = RevisionProcess(REF, [sys.executable, str(revision_app)], {}, RecordingSink())
    assert await stopped.start(10.0) is None
    waiter = asyncio.ensure_future(stopped.died())
    await stopped.stop()
    assert await asyncio.wait_for(waiter, 10) is None


_LISTEN_THEN_EXIT = (
    "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
    "s.accept()[0].close(); time.sleep(0.2); sys.exit(7)\n"
)


async def test_workdir_is_the_process_cwd(revision_app: Path, tmp_path: Path) -> None:
    proc = RevisionProcess(
        REF, [sys.executable, str(revision_app)], {}, RecordingSink(), cwd=str(tmp_path)
    )
    assert await proc.start(10.0) is None
    try:
        assert proc.pid is not None
        assert os.readlink(f"/proc/{proc.pid}/cwd") == str(tmp_path)
    finally:
        await proc.stop()


@pytest.mark.fault(
    "emulator",
    "container exits before it listens, or never listens",
    "Cloud Run's system log lines: exit at WARNING, STARTUP probe at ERROR",
)
async def test_a_start_that_fails_is_in_the_system_log_in_cloud_runs_words(
    revision_app: Path,
) -> None:
    sink = RecordingSink()
    crashed = RevisionProcess(
        REF,
        [sys.executable, str(revision_app)],
        {"APP_EXIT_AT_START": "127"},
        sink,
        container_name="chat",
    )
    assert await crashed.start(10.0) is not None
    assert sink.system_lines == [
        ("WARNING", "Container called exit(127)."),
        (
            "ERROR",
            'Default STARTUP TCP probe failed 1 time consecutively for container "chat" '
            f"on port {crashed.port}. The instance was not started.",
        ),
    ]
    sink = RecordingSink()
    silent = RevisionProcess(
        REF, [sys.executable, str(revision_app)], {"APP_NEVER_LISTEN": "1"}, sink
    )
    assert await silent.start(0.5) is not None
    assert sink.system_lines == [  # no exit of its own: the emulator stopped it
        (
            "ERROR",
            "Default STARTUP TCP probe failed 1 time consecutively "
            f"on port {silent.port}. The instance was not started.",
        )
    ]
