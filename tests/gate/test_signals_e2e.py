"""SIGTERM during a check, with the CLI run as a subprocess the way Cloud Build runs it.

A second signal stops the check promptly, without clean-up, but never without its
reports: they say what was decided (its exit code stands) or that nothing was (exit
130 for SIGINT, 143 for SIGTERM), and name what may be left behind. The tests hold
the check at a known point (its policy loading held on a FIFO, a Cloud Run write or a
Logging read the emulator holds, an event in the check's own log) before each signal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
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


#: ``deploy-guard check`` whose policy loading first reads a FIFO: the test holds the
#: CLI there, after its entry point deferred signals and before any API call. (Policy
#: files themselves must be regular files, so the hold sits at the loader's seam.)
#: The wait is a loop of short ``select`` calls, not one blocking ``read``: Python runs
#: a signal's handler only between bytecodes, so a signal that lands after the FIFO's
#: ``open`` returned and before ``read`` blocked would otherwise wait for a handler
#: that never runs (the hold's own artefact: a check never blocks on a read).
_HELD_LOAD = """
import select
import sys
from deploy_guard.policy import load

hold = sys.argv.pop(1)
real = load.load_paths


def held(paths):
    with open(hold, encoding="utf-8") as fifo:
        while not select.select([fifo], [], [], 0.05)[0]:
            pass
        fifo.read()
    return real(paths)


load.load_paths = held
from deploy_guard.cli import main

main(sys.argv[1:])
"""


class HeldLoad:
    """A check held inside its policy loading until :meth:`release`."""

    def __init__(self, env: dict[str, str], tmp_path: Path, *flags: str) -> None:
        self.fifo = tmp_path / "hold"
        os.mkfifo(self.fifo)
        self.writer = -1
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-c", _HELD_LOAD, str(self.fifo), "check"),
                *("--revision", "chat-00002-abc", "--policy", str(POLICY), *flags),
            ],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _when(self.proc, self._loading)

    def _loading(self) -> bool:
        with contextlib.suppress(OSError):  # ENXIO until the check opens the FIFO
            self.writer = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        return self.writer >= 0

    def release(self) -> None:
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1

    def finish(self, within: float = 30) -> tuple[int, str]:
        try:
            _out, err = self.proc.communicate(timeout=within)
        finally:
            self.release()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, err


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
    """Ctrl-C while the policies are still being read: exit 3, a report, nothing touched."""
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    held = HeldLoad(emulator_env, tmp_path, "--report", str(report), "--html", str(page))
    calls_before = emulator.faults.counts()
    held.proc.send_signal(signal.SIGINT)
    held.release()
    code, err = held.finish()
    assert code == ExitCode.INCONCLUSIVE, err
    assert "Traceback" not in err
    assert "interrupted by SIGINT before the check started" in err
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["action"], doc["exit_code"]) == ("inconclusive", "none", 3)
    assert doc["api_calls"] == {}
    assert emulator.faults.counts() == calls_before


@pytest.mark.fault(
    "signals",
    "the last word hangs after a second signal (a stalled disk or stderr pipe)",
    "the process still ends within the bound, with the code the report was given",
)
def test_a_last_word_that_hangs_cannot_hold_the_process_or_change_its_code() -> None:
    script = (
        "import os, signal, threading\n"
        "from deploy_guard import signals\n"
        "signals.LAST_WORD_BOUND = 0.2\n"
        "def last_word(name, settled):\n"
        "    signals.exit_with(1)\n"  # the report says 1; then a write never returns
        "    print('writing', flush=True)\n"
        "    threading.Event().wait()\n"
        "signals.defer()\n"
        "signals.on_second_signal(last_word)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout) == (1, "writing\n"), done.stderr


def test_the_help_and_the_guide_say_what_a_second_signal_does() -> None:
    from click.testing import CliRunner

    from deploy_guard.commands.check import check

    shown = " ".join(CliRunner().invoke(check, ["--help"]).output.split())
    assert "A second one stops at once, without clean-up, after writing the reports" in shown
    assert "130 (SIGINT) or 143 (SIGTERM)" in shown
    root = Path(__file__).resolve().parents[2]
    guide = (root / "docs" / "cloud-build.md").read_text(encoding="utf-8")
    assert "**130** for SIGINT, **143** for SIGTERM" in guide
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    assert "else **130** (SIGINT) or **143** (SIGTERM)" in readme


class StderrLog:
    """The check's stderr, read line by line as it comes (its JSON log events)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append(line)

    def events(self) -> list[str]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                found.append(str(json.loads(line).get("message", "")))
        return found

    def text(self) -> str:
        return "".join(self.lines)

    def stdout(self) -> str:
        """What the ended process printed on stdout (its outcome line)."""
        assert self.proc.stdout is not None
        return self.proc.stdout.read()

    def wait_exit(self, within: float) -> int:
        """The exit code, once the process ended (its stderr all read)."""
        code = self.proc.wait(timeout=within)
        self._reader.join(timeout=10)
        return code


@pytest.mark.fault(
    "signals",
    "two stop signals with nothing registered",
    "exit 128 + the second signal: 130 SIGINT, 143 SIGTERM",
)
@pytest.mark.parametrize(("second", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_second_signal_stops_at_once_with_128_plus_its_number(second: str, code: int) -> None:
    script = (
        "import os, signal\n"
        "from deploy_guard import signals\n"
        "signals.defer()\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print(signals.pending(), flush=True)\n"
        f"os.kill(os.getpid(), signal.{second})\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.splitlines() == ["SIGINT"]
    assert done.returncode == code
    assert f"{second}: a second stop signal; stopped without clean-up (exit {code})" in (
        done.stderr
    )


@pytest.mark.fault(
    "signals",
    "stop signals after the outcome is decided, up to the interpreter's teardown",
    "the decided exit code, never a death by signal",
)
def test_once_the_outcome_is_settled_no_signal_changes_the_exit_code() -> None:
    script = (
        "import atexit, os, signal, sys\n"
        "def late():\n"  # registered first, so it runs after the CLI's own atexit handlers
        "    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "    print('teardown ignores stop signals:', ignored, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "atexit.register(late)\n"
        "from deploy_guard import signals\n"
        "signals.defer()\n"
        "signals.settle(1)\n"
        "sys.exit(1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == ["teardown ignores stop signals: True"]
    # Before the teardown, a signal ends the wait at once, with the settled code.
    script = (
        "import os, signal\n"
        "from deploy_guard import signals\n"
        "signals.defer()\n"
        "signals.settle(4)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout) == (4, ""), done.stderr


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


@pytest.mark.fault(
    "signals",
    "second signal while the temporary tag's write is in flight, nothing decided",
    "stops at once; report and summary say interrupted, exit 143, and name the tag",
)
def test_a_second_signal_before_a_decision_writes_the_report_and_exits_143(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)  # untagged: the guard writes a temporary tag first
    emulator.faults.reset_counts()  # from here on, only the check's own calls
    emulator.faults.delay("UpdateService", 60.0, nth=1)  # that write hangs
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    proc = _start_check(
        emulator_env, cand, POLICY, "--report", str(report), "--summary", str(summary)
    )
    err = StderrLog(proc)
    try:
        _when(proc, lambda: emulator.faults.count("UpdateService") >= 1)
        proc.send_signal(signal.SIGINT)  # the check waits for its tag write to land ...
        _when(proc, lambda: "check_signalled" in err.events())
        proc.send_signal(signal.SIGTERM)  # ... unless someone insists
        code = err.wait_exit(within=30)  # long before the held write is answered
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143, err.text()
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["action"], doc["exit_code"]) == ("inconclusive", "none", 143)
    tag = doc["temporary_tag"]
    assert tag.startswith("dg-")
    assert "a second stop signal (SIGTERM after SIGINT)" in doc["error"]
    assert f"the temporary tag {tag} may still be on chat; remove it" in doc["error"]
    assert f"--remove-tags {tag}" in doc["error"]
    # the tag's record holds it for this check a while: say when status may remove it
    until = next(e for e in doc["timeline"] if e["event"] == "tag_requested")["detail"]["until"]
    assert (
        "`deploy-guard status --service chat --remove-stale-tags` once its hold ends at "
        f"{until}, or at once with: gcloud run services update-traffic chat --remove-tags {tag}"
    ) in doc["error"]
    second = [e for e in doc["timeline"] if e["event"] == "second_signal"]
    assert [e["detail"] for e in second] == [{"signal": "SIGTERM", "exit_code": 143}]
    assert "**Exit code**: 143" in summary.read_text()
    assert "stopped without clean-up (exit 143)" in err.text()
    assert err.stdout().startswith("inconclusive: stopped by a second stop signal (SIGTERM")


@pytest.mark.fault(
    "signals",
    "second signal while the rollback's traffic write is in flight",
    "stops at once; report: verdict fail, action unverified, how to look; exit 143",
)
def test_a_second_signal_during_a_rollback_says_the_write_is_unverified(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    emulator.faults.reset_counts()
    emulator.faults.delay("UpdateService", 60.0, nth=1)  # the rollback's write hangs
    report = tmp_path / "report.json"
    proc = _start_check(emulator_env, cand, POLICY, "--report", str(report))
    err = StderrLog(proc)
    try:
        _when(proc, lambda: emulator.faults.count("UpdateService") >= 1)
        proc.send_signal(signal.SIGINT)  # the check waits for the rollback to land ...
        _when(proc, lambda: "signal_while_acting" in err.events())
        proc.send_signal(signal.SIGTERM)  # ... unless someone insists
        code = err.wait_exit(within=30)  # long before the held write is answered
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 143, err.text()
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["action"], doc["exit_code"]) == ("fail", "unverified", 143)
    assert "the rollback traffic write was sent and not verified" in doc["error"]
    assert "gcloud run services describe chat" in doc["error"]
    events = [e["event"] for e in doc["timeline"]]
    assert events.index("rollback_requested") < events.index("second_signal")
    assert "rollback_verified" not in events


@pytest.mark.fault(
    "signals",
    "second signal while a decided check removes its temporary tag",
    "the decision's exit 1 stands; report says so and names the tag",
)
def test_a_second_signal_during_a_decided_checks_clean_up_keeps_its_exit_code(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, tag=None)
    emulator.faults.reset_counts()
    # the second write is the tag's removal, after the (dry-run) verdict: it hangs
    emulator.faults.delay("UpdateService", 60.0, nth=2)
    report, summary = tmp_path / "report.json", tmp_path / "summary.md"
    proc = _start_check(
        emulator_env,
        cand,
        POLICY,
        *("--dry-run", "--report", str(report), "--summary", str(summary)),
    )
    err = StderrLog(proc)
    try:
        _when(proc, lambda: emulator.faults.count("UpdateService") >= 2)
        assert "decision" in err.events()
        proc.send_signal(signal.SIGINT)  # decided: the check finishes removing its tag ...
        _when(proc, lambda: "check_signalled" in err.events())
        proc.send_signal(signal.SIGTERM)  # ... unless someone insists
        code = err.wait_exit(within=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == ExitCode.FAIL, err.text()
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["exit_code"]) == ("fail", 1)
    tag = doc["temporary_tag"]
    assert (
        "a second stop signal (SIGTERM) cut the clean-up short; the decision stands"
        in (doc["error"])
    )
    assert f"the temporary tag {tag} may still be on chat" in doc["error"]
    events = [e["event"] for e in doc["timeline"]]
    assert events.index("decision") < events.index("second_signal")
    assert "**Exit code**: 1" in summary.read_text()


@pytest.mark.fault(
    "signals",
    "second Ctrl-C after the report said exit 1, while a cancelled Logging read holds the exit",
    "exits 1 at once, as the report says",
)
def test_a_second_signal_after_the_report_is_written_exits_with_the_reports_code(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    emulator.faults.reset_counts()
    emulator.faults.delay("UpdateService", 2.0)  # the rollback's write is slow to answer
    emulator.faults.delay("ListLogEntries", 60.0)  # every log read hangs
    report = tmp_path / "report.json"
    proc = _start_check(
        emulator_env,
        cand,
        POLICY,
        *("--report", str(report), "--log-interval", "0.5s", "--api-retry", "60s"),
    )
    err = StderrLog(proc)
    try:
        _when(proc, lambda: emulator.faults.count("UpdateService") >= 1)  # rolling back
        proc.send_signal(signal.SIGINT)  # the rollback is finished and verified first
        _when(proc, report.exists)  # the outcome is written: exit 1 ...
        doc = json.loads(report.read_text())
        assert (doc["action"], doc["exit_code"]) == ("rolled_back", 1)
        # ... and the process waits for the Logging read it cancelled (up to 60 s)
        assert emulator.faults.count("ListLogEntries") >= 1
        proc.send_signal(signal.SIGINT)
        code = err.wait_exit(within=30)  # long before that read gives up
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == ExitCode.FAIL, err.text()
    assert chat.serving() == {base: 100}
    assert err.stdout().startswith("fail: ")  # the outcome line, though the wait was cut
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["action"], doc["exit_code"]) == ("fail", "rolled_back", 1)
    assert [e["detail"] for e in doc["timeline"] if e["event"] == "second_signal"] == [
        {"signal": "SIGINT", "exit_code": 1}
    ]


@pytest.mark.fault(
    "signals",
    "SIGINT then SIGTERM while the policies are still being read",
    "report written (the check did not start), exit 143, no API call",
)
def test_a_second_signal_before_the_check_starts_still_writes_the_report(
    emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    held = HeldLoad(emulator_env, tmp_path, "--report", str(report), "--html", str(page))
    calls_before = emulator.faults.counts()
    # Both pending at once are handled in signal-number order: SIGINT, then SIGTERM.
    held.proc.send_signal(signal.SIGINT)
    held.proc.send_signal(signal.SIGTERM)
    code, err = held.finish()  # never released: the second signal ends it
    assert code == 143, err
    assert "Traceback" not in err
    doc = json.loads(report.read_text())
    assert (doc["verdict"], doc["action"], doc["exit_code"]) == ("inconclusive", "none", 143)
    assert "before the check started; nothing was checked or changed" in doc["error"]
    assert doc["api_calls"] == {}
    assert emulator.faults.counts() == calls_before
    # the HTML page too: a second signal writes every report asked for
    assert "before the check started; nothing was checked or changed" in page.read_text()
