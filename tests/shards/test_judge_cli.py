"""End to end: three shards of the real CLI, merged by ``deploy-guard judge``, judge as one run.

One server whose failures depend only on the session number (numbered_server.py) is probed
once unsharded and once as three shards run at the same time, each a process of the real
CLI; ``judge`` then merges the shards. The same sessions fail for the same causes in both
runs, so the verdicts must agree in exit code, reasons and every rule's counts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.judge import evaluate
from deploy_guard.policy.load import load_file
from deploy_guard.shards import combine, read

HERE = Path(__file__).resolve().parent

POLICY = """\
version: 1
name: shards
services: ["svc"]
fail_fast: false
rules:
  - name: chat
    kind: websocket
    websocket:
      path: /ws
      query: {close: "3,7,11", short: "20,29"}
      event_field: type
      ping_interval: null
      scenario:
        - send: {json: {n: "{n}"}}
        - expect: [hello, done]
          timeout: 5s
      sessions: 30
      concurrency: 6
      success_ratio: 80%
  - name: strict
    kind: websocket
    websocket:
      path: /ws
      query: {close: "2,5"}
      event_field: type
      ping_interval: null
      scenario:
        - send: {json: {n: "{n}"}}
        - expect: [hello, done]
          timeout: 5s
      sessions: 12
      concurrency: 4
  - name: health
    kind: http
    http: {path: /health, requests: 9, concurrency: 3}
"""
ENV = {
    **os.environ,
    "DEPLOY_GUARD_LOG_FORMAT": "json",
    "DEPLOY_GUARD_LOG_LEVEL": "warning",
    "NO_COLOR": "1",
}


def guard(*args: str) -> list[str]:
    return [sys.executable, "-m", "deploy_guard", *args]


@dataclass
class Runs:
    url: str
    policy: Path
    folder: Path
    whole: subprocess.CompletedProcess[str]
    shards: list[subprocess.CompletedProcess[str]]

    def judge(self, *files: Path | str, policy: Path | None = None) -> tuple[int, str]:
        done = subprocess.run(
            guard("judge", "--policy", str(policy or self.policy), *map(str, files)),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    def shard_file(self, k: int) -> Path:
        return self.folder / f"shard-{k}-of-3.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """The unsharded run and the three shards, all at once against one server."""
    folder = tmp_path_factory.mktemp("shards")
    policy = folder / "policy.yaml"
    policy.write_text(POLICY)
    server = subprocess.Popen(
        [sys.executable, str(HERE / "numbered_server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        common = ["probe", "--policy", str(policy), "--url", url]
        whole = folder / "whole" / "whole.json"
        procs = [
            subprocess.Popen(
                guard(*common, "--measurements", str(whole)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=ENV,
            ),
            *(
                subprocess.Popen(
                    guard(
                        *common,
                        "--shard",
                        f"{k}/3",
                        "--measurements",
                        str(folder / "run" / "shard-{shard}-of-{shards}.json"),
                    ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=ENV,
                )
                for k in range(3)
            ),
        ]
        done = []
        for proc in procs:
            out, _ = proc.communicate(timeout=90)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
        yield Runs(url, policy, folder / "run", done[0], done[1:])
    finally:
        server.terminate()
        server.wait(10)


def verdict_lines(output: str) -> list[str]:
    """The verdict line and its reasons."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("verdict: "))
    return [line for line in lines[start:] if line.startswith(("verdict: ", "  - "))]


def table_counts(output: str) -> list[list[str]]:
    """Each rule's row of the results table without its latency column (times differ)."""
    rows = []
    for line in output.splitlines():
        cells = [c for c in line.strip().split("   ") if c.strip()]
        if cells and cells[0].strip() in ("chat", "strict", "health"):
            rows.append([c.strip() for c in cells[:-1]])
    return rows


def test_shards_write_their_files_and_give_no_verdict(runs: Runs) -> None:
    for k, shard in enumerate(runs.shards):
        assert shard.returncode == 0, shard.stdout
        assert f"shard {k}/3 gives no verdict" in shard.stdout
        assert not any(line.startswith("verdict: ") for line in shard.stdout.splitlines())
        assert runs.shard_file(k).is_file()
    assert "shard 1/3: this share of the attempts: chat 10, strict 3, health 3" in (
        runs.shards[1].stdout
    )


def test_merged_shards_give_the_verdict_of_one_run(runs: Runs) -> None:
    whole_file = runs.folder.parent / "whole" / "whole.json"
    code_one, one = runs.judge(whole_file)
    code_many, many = runs.judge(runs.folder)  # a folder: its .json files
    assert code_one == code_many == runs.whole.returncode == 1, many
    assert (
        verdict_lines(many)
        == verdict_lines(one)
        == [
            "verdict: FAIL (exit 1: a fail rule failed)",
            "  - strict: 2 of 12 sessions closed with 1011; limit 0",
        ]
    )
    assert table_counts(many) == table_counts(one) == table_counts(runs.whole.stdout) == [
        ["chat", "30/30", "25", "close_code: 3, missing_event: 2", "1000: 27, 1011: 3"],
        ["strict", "12/12", "10", "close_code: 2", "1000: 10, 1011: 2"],
        ["health", "9/9", "9", "-", "-"],
    ]  # fmt: skip
    # every rule, not only the deciding one: the same status and counts
    policy = load_file(runs.policy)
    merged = combine([read(runs.shard_file(k)) for k in range(3)], policy).measurements
    single = read(whole_file).measurements
    results = [
        [(r.rule, r.status, r.counts) for r in evaluate(policy, m.values()).rules]
        for m in (merged, single)
    ]
    assert results[0] == results[1]
    assert ("chat", "pass", "5 of 30 sessions failed: 3 closed with 1011, 2 missed an expected "
            "event; limit 6") in results[0]  # fmt: skip


@pytest.mark.fault(
    "cli",
    "judge given a shard twice, or shards of another policy than --policy",
    "exit 2 before judging, naming the files; nothing counted twice",
)
def test_a_shard_given_twice_or_another_policy_is_refused(runs: Runs, tmp_path: Path) -> None:
    code, out = runs.judge(runs.shard_file(0), runs.shard_file(1), runs.shard_file(1))
    assert code == 2
    assert "shard 1/3 given twice" in out
    other = tmp_path / "other.yaml"
    other.write_text(POLICY.replace("success_ratio: 80%", "success_ratio: 90%"))
    code, out = runs.judge(*(runs.shard_file(k) for k in range(3)), policy=other)
    assert code == 2
    assert "judge shards with the policy file they ran" in out


@pytest.mark.fault(
    "cli",
    "judge given 1 of 3 shards (two tasks of the job never wrote their files)",
    "inconclusive, exit 3, the missing shards named: missing evidence is never a pass",
)
def test_missing_shards_are_never_a_pass(runs: Runs) -> None:
    code, out = runs.judge(runs.shard_file(2))  # its share of strict passed
    assert code == 3, out
    assert "  - shards 0/3, 1/3 missing: their attempts count as not run" in out
    assert "verdict: INCONCLUSIVE" in out


def test_shard_flags_are_checked_before_anything_runs(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    base = ["probe", "--policy", str(policy), "--url", "http://127.0.0.1:9"]
    for extra, words in [
        (["--shard", "0/2"], "--shard needs --measurements FILE"),
        (["--shard", "2/2", "--measurements", "x.json"], "K counts from 0"),
        (["--measurements", "gs://b/x.json"], "mount the bucket as a Cloud Storage volume"),
        (["--shard", "auto", "--measurements", "x.json"], "outside a job pass --shard K/N"),
    ]:
        env = {"CLOUD_RUN_TASK_INDEX": "", "CLOUD_RUN_TASK_COUNT": ""}
        result = CliRunner().invoke(cli, [*base, *extra], env={k: None for k in env})
        assert result.exit_code == 2, result.output
        assert words in result.output


@pytest.mark.fault(
    "signals",
    "SIGTERM to a probe shard mid-hold (a Cloud Run task past its timeout)",
    "its partial measurements written, exit 3; judge names the shard and never passes",
)
def test_a_shard_stopped_by_sigterm_writes_what_it_had(runs: Runs, tmp_path: Path) -> None:
    """Cloud Run stops a task past its timeout with SIGTERM: the file is still written."""
    held = tmp_path / "held.yaml"
    held.write_text(
        POLICY.replace("          timeout: 5s\n", "          timeout: 5s\n      hold: 60s\n")
    )
    out = tmp_path / "cut" / "shard-{shard}.json"
    args = ["probe", "--policy", str(held), "--url", runs.url, "--rule", "strict"]
    proc = subprocess.Popen(
        guard(*args, "--shard", "1/3", "--measurements", str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**ENV, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines = []
    while not (line := proc.stdout.readline()).startswith("probing "):  # signals handled now
        assert line, "".join(lines)
        lines.append(line)
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3, rest
    written = tmp_path / "cut" / "shard-1.json"
    data = json.loads(written.read_text())
    assert data["interrupted"] == "SIGTERM"
    assert data["measurements"][0]["complete"] is False
    code, judged = runs.judge(written, policy=held)
    assert code == 3, judged
    assert "shard 1/3 (SIGTERM) stopped before their attempts finished" in judged
    assert "shards 0/3, 2/3 missing" in judged
