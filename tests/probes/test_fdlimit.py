"""The open-files limit: raised first, and a probe that would exceed it is exit 2 before it starts.

The real CLI runs in a subprocess whose ``RLIMIT_NOFILE`` is set low before it
starts (``preexec_fn``), as a shell's ``ulimit -n`` would; the server it probes
runs in the test process, so what the probe opened is counted where it arrives.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pacing_helpers import Starts
from probe_helpers import ThreadServer

from deploy_guard.policy import parse_policy
from deploy_guard.probes.fdlimit import (
    HEADROOM,
    FdLimit,
    command_rules,
    connections,
    fd_problem,
    open_fds,
)
from deploy_guard.probes.shard import Shard

POLICY = """\
version: 1
name: demo
services: [chat]
rules:
  - name: load
    kind: websocket
    websocket: {path: /ws, sessions: 300, concurrency: 300}
  - name: health
    kind: http
    http: {path: /health, requests: 10, concurrency: 4}
  - name: errors
    kind: logs
    logs: {patterns: [boom]}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Starts, str]]:
    starts = Starts()
    with ThreadServer(starts.app()) as served:
        yield starts, served.url


def run_limited(soft: int, hard: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``deploy-guard ARGS`` with RLIMIT_NOFILE (soft, hard), as after ``ulimit -n``."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-m", "deploy_guard", *args],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )


@pytest.mark.fault("cli", "more sessions than the open-files limit allows", "exit 2 up front")
def test_a_probe_over_the_limit_is_refused_before_it_starts(
    policy_file: Path, server: tuple[Starts, str]
) -> None:
    starts, url = server
    seen = len(starts.starts)
    done = run_limited(256, 256, "probe", "--policy", str(policy_file), "--url", url)
    assert done.returncode == 2, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "error: rule load may hold 300 connections open at once (its concurrency), each a file "
        "descriptor, and the rules run beside it 4 more (health 4); with this process's own ("
    )
    assert "the limit on open files (RLIMIT_NOFILE) is 256; its hard limit, 256, is as far" in error
    assert "`ulimit -n 3" in error  # 300 + 4 + what the process holds + the headroom
    assert len(starts.starts) == seen  # nothing was probed


def test_the_soft_limit_is_raised_to_the_hard_one_and_the_probe_runs(
    policy_file: Path, server: tuple[Starts, str]
) -> None:
    """The same 300 sessions with a soft limit of 256 but a hard one of 1,024: they all run."""
    starts, url = server
    seen = len(starts.starts)
    done = run_limited(
        256, 1024, "probe", "--policy", str(policy_file), "--url", url, "--rule", "load"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "load: 300 of 300 sessions done, 300 ok, finished" in done.stdout
    assert len(starts.starts) == seen + 300


def test_a_shard_needs_only_its_share_of_the_descriptors(
    policy_file: Path, server: tuple[Starts, str], tmp_path: Path
) -> None:
    """300 sessions at concurrency 300 over two shards: 150 each fits a limit of 256."""
    starts, url = server
    seen = len(starts.starts)
    out = tmp_path / "shard-1.json"
    done = run_limited(
        256,
        256,
        *("probe", "--policy", str(policy_file), "--url", url, "--rule", "load"),
        *("--shard", "1/2", "--measurements", str(out)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "load: 150 of 150 sessions done, 150 ok, finished" in done.stdout
    assert len(starts.starts) == seen + 150
    assert out.is_file()


def test_a_shards_need_is_its_workers() -> None:
    load, health, _ = parse_policy(POLICY).rules
    assert [connections(load, Shard(k, 3)) for k in range(3)] == [100, 100, 100]
    assert [connections(health, Shard(k, 3)) for k in range(3)] == [2, 1, 1]
    assert connections(health, Shard(5, 6)) == 0  # 4 workers: shard 5 of 6 runs none
    limit = FdLimit(soft=200, hard=200)
    assert fd_problem([load, health], limit, in_use=0, shard=Shard(0, 3)) is None
    found = fd_problem([load, health], limit, in_use=0, shard=Shard(0, 2))
    assert found is not None
    assert "may hold 150 connections open at once (shard 0/2's share of its concurrency)" in found


def test_check_refuses_before_any_api_call(policy_file: Path) -> None:
    """No emulator and no credentials are needed: the refusal comes first."""
    done = run_limited(
        128,
        128,
        *("check", "--revision", "chat-00002-abc", "--project", "p", "--region", "r"),
        *("--policy", str(policy_file)),
    )
    assert done.returncode == 2, done.stderr
    assert "the check's probes need 3" in done.stderr
    assert "RLIMIT_NOFILE) is 128" in done.stderr
    assert "credentials" not in done.stderr


def test_the_need_counts_one_descriptor_per_worker() -> None:
    policy = parse_policy(POLICY)
    load, health, errors = policy.rules
    assert (connections(load), connections(health), connections(errors)) == (300, 4, 0)
    assert fd_problem([load, health], FdLimit(soft=368, hard=None), in_use=0) is None
    found = fd_problem([load, health], FdLimit(soft=367, hard=None), in_use=0)
    assert found is not None
    assert f"need {300 + 4 + HEADROOM}" in found
    assert "`ulimit -n 368` in the shell that runs deploy-guard, or lower concurrency" in found
    assert "root" not in found  # an unlimited hard limit: no one needs root


def test_a_watch_counts_its_scaled_rounds_and_its_canary() -> None:
    policy = parse_policy(POLICY)
    rules, extra = command_rules([policy], "watch")
    assert [connections(r) for r in rules] == [5, 4]  # watch.sessions: 5 by default
    assert extra == 1  # the canary's session
    rules, extra = command_rules([policy], "check")
    assert ([r.name for r in rules], extra) == (["load", "health"], 0)


def test_open_fds_sees_a_new_descriptor() -> None:
    before = open_fds()
    with open(os.devnull) as _:
        assert open_fds() == before + 1
