"""``deploy-guard probe --sessions --concurrency --rate --ramp``: a policy as a load test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pacing_helpers import Starts, no_faster_than
from probe_helpers import ThreadServer

from deploy_guard.cli import cli

POLICY = """\
version: 1
name: demo
services: [demo]
rules:
  - name: chat
    kind: websocket
    websocket:
      path: /ws
      query: {user: "{user}", n: "{n}"}
      sessions: 2
      concurrency: 1
      rate: 1/m
  - name: health
    kind: http
    http: {path: /health, requests: 2, concurrency: 2}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def server() -> Iterator[tuple[Starts, str]]:
    starts = Starts()
    with ThreadServer(starts.app()) as served:
        yield starts, served.url


def probe(policy: Path, url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["--log-format", "json", "probe", "--policy", str(policy), "--url", url, *args]
    )
    return result.exit_code, result.output


def test_the_flags_override_the_rule_for_one_run(
    policy_file: Path, server: tuple[Starts, str]
) -> None:
    starts, url = server
    before = time.monotonic()
    code, out = probe(
        policy_file,
        url,
        *("--rule", "chat", "--sessions", "9", "--concurrency", "3", "--rate", "100/s"),
        *("--ramp", "100ms"),
    )
    assert code == 0, out
    assert "for this run: sessions 9, concurrency 3, rate 100/s, ramp 100ms (every rule" in out
    assert "chat: 9 of 9 sessions done, 9 ok, finished" in out
    assert len(starts.starts) == 9  # not the policy's 2
    assert {s.user for s in starts.starts} == {"user-1", "user-2", "user-3"}
    assert no_faster_than(starts.times(), 100, before) == []  # the flag's rate, not 1/m


def test_off_drops_the_policys_rate_and_sessions_caps_concurrency(
    policy_file: Path, server: tuple[Starts, str]
) -> None:
    """At the policy's 1/m the second session would start a minute in; off runs both now."""
    starts, url = server
    code, out = probe(policy_file, url, "--rate", "off", "--sessions", "1")
    assert code == 0, out
    assert "chat: 1 of 1 session done, 1 ok" in out
    # --sessions is an http rule's requests too; its concurrency 2 is capped to 1
    assert "health: 1 of 1 request done, 1 ok" in out
    code, out = probe(policy_file, url, "--rule", "chat", "--rate", "off", "--sessions", "3")
    assert code == 0, out
    assert len(starts.starts) == 2 + 3


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("--rule", "chat", "--concurrency", "5"),
            "error: rule chat with concurrency 5: concurrency 5 is more than sessions 2: each "
            "concurrent user needs at least one session",
        ),
        (
            ("--rule", "health", "--concurrency", "5000"),
            "error: rule health with concurrency 5000: concurrency: Input should be less than "
            "or equal to 1000",
        ),
        (("--rate", "200"), "Invalid value for '--rate': \"200\" is not a rate (use 200/s or 30/m"),
        (("--rate", "0/s"), "Invalid value for '--rate': \"0/s\" would never start a session"),
        (("--ramp", "0s"), "Invalid value for '--ramp': 0s cannot work"),
        (("--sessions", "0"), "Invalid value for '--sessions'"),
    ],
)
def test_flags_that_cannot_work_are_exit_2_before_anything_runs(
    policy_file: Path, server: tuple[Starts, str], args: tuple[str, ...], says: str
) -> None:
    starts, url = server
    code, out = probe(policy_file, url, *args)
    assert code == 2
    assert says in out
    assert starts.starts == []


def test_check_refuses_a_timeout_shorter_than_the_pacing(tmp_path: Path) -> None:
    """The policy's 10m fits 299 starts at 1/s; a --timeout of 2m cannot: exit 2 up front."""
    policy = tmp_path / "paced.yaml"
    policy.write_text(
        "version: 1\nname: paced\nservices: [chat]\nrules:\n  - name: load\n"
        "    kind: websocket\n    websocket: {sessions: 300, concurrency: 30, rate: 1/s}\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            *("check", "--revision", "chat-00002-abc", "--project", "p", "--region", "r"),
            *("--policy", str(policy), "--timeout", "2m"),
        ],
    )
    assert result.exit_code == 2
    assert (
        "error: rule load (policy paced): at 1/s the last of 300 sessions starts 4m59s in, "
        "more than --timeout 2m: the check would end first" in result.output
    )
