"""SIGTERM during a check, with the CLI run as a subprocess the way Cloud Build runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy_guard.exitcodes import ExitCode
from waiting import wait_until

POLICY = Path(__file__).parent / "policies" / "chat-hold.yaml"


def _when(proc: subprocess.Popen[str], condition: Any, within: float = 30.0) -> None:
    """Wait until ``condition()`` holds while the check still runs (its output if it ended)."""
    wait_until(lambda: condition() or proc.poll() is not None, within=within)
    assert proc.poll() is None, proc.communicate()


def _start_check(
    env: dict[str, str], revision: str, policy: Path, *flags: str
) -> subprocess.Popen[str]:
    """``deploy-guard check`` as a subprocess, the way Cloud Build runs it."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "deploy_guard", "check", "--revision", revision),
            *("--policy", str(policy), *flags),
        ],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigterm_removes_the_temporary_tag_and_writes_the_report(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None)  # untagged: the guard adds a temporary tag
    report = tmp_path / "report.json"
    summary = tmp_path / "summary.md"
    proc = _start_check(
        emulator_env, cand, POLICY, "--report", str(report), "--summary", str(summary)
    )
    try:
        _when(proc, lambda: any(t.startswith("dg-") for t in chat.tags()))
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INCONCLUSIVE, err
    assert chat.tags() == set()
    assert chat.serving() == {base: 100}
    doc = json.loads(report.read_text())
    assert doc["error"] == "interrupted by SIGTERM"
    events = [e["event"] for e in doc["timeline"]]
    assert "tag_removed" in events
    assert summary.read_text().startswith("## deploy-guard")


@pytest.mark.slow
def test_sigterm_during_a_rollback_lets_it_finish_and_verify(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    update = "/google.cloud.run.v2.Services/UpdateService"
    writes = emulator.faults.count(update)
    emulator.faults.delay("UpdateService", 2.0)  # the rollback's write is slow to answer
    report = tmp_path / "report.json"
    proc = _start_check(emulator_env, cand, POLICY, "--report", str(report))
    try:
        # the rollback has been sent: its UpdateService is in flight
        _when(proc, lambda: emulator.faults.count(update) > writes)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.FAIL, err
    assert chat.serving() == {base: 100}
    doc = json.loads(report.read_text())
    assert doc["action"] == "rolled_back"
    assert doc["traffic_after"] == {base: 100}
    events = [e["event"] for e in doc["timeline"]]
    assert events.index("signal_while_acting") < events.index("rollback_verified")
    assert "the action was finished first" in doc["error"]


def test_a_signal_before_the_check_starts_stops_it_before_any_api_call(
    emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C while the policies are still being read: exit 3, a report, nothing touched.

    The policy is a FIFO, so the check is provably still loading it when the signal
    lands (the process holds the FIFO open for reading), whatever the machine's speed.
    """
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    report = tmp_path / "report.json"
    proc = _start_check(emulator_env, "chat-00002-abc", fifo, "--report", str(report))
    writer = -1
    try:

        def reader_is_waiting() -> bool:
            nonlocal writer
            with contextlib.suppress(OSError):  # ENXIO until the check opens the FIFO
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            return writer >= 0

        _when(proc, reader_is_waiting)
        calls_before = emulator.faults.counts()
        proc.send_signal(signal.SIGINT)
        os.write(writer, POLICY.read_bytes())
        os.close(writer)
        writer = -1
        _out, err = proc.communicate(timeout=30)
    finally:
        if writer >= 0:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INCONCLUSIVE, err
    assert "Traceback" not in err
    assert "interrupted by SIGINT before the check started" in err
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["action"], doc["exit_code"]) == ("inconclusive", "none", 3)
    assert doc["api_calls"] == {}
    assert emulator.faults.counts() == calls_before


def test_a_second_sigint_stops_at_once_with_130() -> None:
    code = (
        "import os, signal\n"
        "from deploy_guard import signals\n"
        "signals.defer()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print(signals.pending(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.splitlines() == ["SIGINT"]
    assert done.returncode == 130
    assert "SIGINT: a second stop signal; stopping at once" in done.stderr


@pytest.mark.slow
def test_the_report_is_written_before_waiting_for_a_stuck_api_read(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    """A cancelled Logging read may hold the process until its timeout; the report is out first."""
    chat.first()
    cand = chat.candidate()
    emulator.faults.delay("ListLogEntries", 20.0)  # every log read hangs for 20 s
    report = tmp_path / "report.json"
    proc = _start_check(
        emulator_env, cand, POLICY, "--report", str(report), "--log-interval", "0.5s"
    )
    try:
        _when(proc, lambda: emulator.faults.count("ListLogEntries") >= 1)
        proc.send_signal(signal.SIGTERM)
        wait_until(report.exists, within=10)  # long before the stuck read gives up
        assert proc.poll() is None  # still waiting for that read: the report did not wait
        doc = json.loads(report.read_text())
        assert (doc["verdict"], doc["exit_code"]) == ("inconclusive", 3)
        assert doc["error"] == "interrupted by SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_a_second_signal_during_the_clean_up_stops_the_check_at_once(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)  # untagged: the guard writes a temporary tag first
    emulator.faults.delay("UpdateService", 5.0)  # that write hangs for a while
    emulator.faults.reset_counts()  # from here on, only the check's own calls
    proc = _start_check(emulator_env, cand, POLICY, "--report", str(tmp_path / "report.json"))
    try:
        _when(proc, lambda: emulator.faults.count("UpdateService") >= 1)
        # (two different signals: two of one kind sent at once may arrive as one)
        proc.send_signal(signal.SIGINT)  # the check waits for its tag write to land ...
        proc.send_signal(signal.SIGTERM)  # ... unless someone insists
        _out, err = proc.communicate(timeout=4)  # well before the 5 s write returns
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # whichever the process handled second ends it: 130 for SIGINT, SIGTERM's default death
    assert proc.returncode in (130, -signal.SIGTERM), err
    assert "a second stop signal; stopping at once, without clean-up" in err
