"""``deploy-guard watch`` as a new user met it by hand, against the emulator.

Each test is something that tripped a person who had read only the README and
docs/watch.md: a crash with a traceback when ``--health-port`` was taken; an exit 4
that said only "error: listing revisions ..." when the Run API went away as the watch
decided to roll back (which revision failed? where is traffic?); rules missing from
the summary (or showing the previous revision's result) while they had no evidence yet.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, SERVED_BEFORE, encode_split

POLICIES = Path(__file__).parent / "policies"
WATCH = POLICIES / "chat-watch.yaml"
WATCH_LOGS = POLICIES / "chat-watch-logs.yaml"


def promote(chat: Any, base: str, cand: str) -> None:
    """``cand`` serves 100 %, recorded as a passing ``check --promote`` records it."""
    from google.cloud import run_v2

    svc = chat.get()
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc.traffic = [run_v2.TrafficTarget(type_=kind, revision=cand, percent=100)]
    svc.annotations[LAST_KNOWN_GOOD] = cand
    svc.annotations[SERVED_BEFORE] = encode_split({base: 100})
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)


def watch(
    tmp_path: Path, *flags: str, policy: Path = WATCH, service: str = "chat"
) -> tuple[int, dict[str, Any], str]:
    """Run the command in-process: (exit code, JSON report, the Markdown summary)."""
    report, summary = tmp_path / "watch.json", tmp_path / "watch.md"
    args = ["watch", "--service", service, "--policy", str(policy), "--report", str(report)]
    args += ["--summary", str(summary), "--log-interval", "0.5s", "--service-interval", "0.5s"]
    result = CliRunner().invoke(cli, [*args, *flags], catch_exceptions=False)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return result.exit_code, doc, summary.read_text() if summary.exists() else ""


@pytest.mark.fault("cli", "watch: --health-port taken by another process", "exit 2, said")
def test_a_health_port_in_use_is_a_usage_error_not_a_crash(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, doc, _ = watch(tmp_path, "--for", "30s", "--health-port", str(port))
    assert code == 2, doc.get("message")
    assert doc["verdict"] == "error"
    assert f"--health-port {port}: cannot listen on it" in doc["error"]
    assert "internal error" not in doc["error"]


@pytest.mark.fault(
    "traffic",
    "watch: a window fails while ListRevisions is UNAVAILABLE (no rollback target)",
    "exit 4, says what failed and where traffic is",
)
def test_a_rollback_that_cannot_choose_its_target_says_what_failed_and_where_traffic_is(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_BAD_AFTER": "2"}, tag=None, percent=0)
    promote(chat, base, cand)
    emulator.faults.fail("ListRevisions", grpc.StatusCode.UNAVAILABLE)
    code, doc, summary = watch(tmp_path, "--for", "60s", "--api-retry", "0.5s")
    assert code == 4, doc.get("message")
    assert (doc["verdict"], doc["action"]) == ("fail", "failed")
    failed, _, acted = doc["message"].partition(f"(watching {cand}); ")  # what failed, first
    assert failed.split(":", 1)[0] in doc["deciding_rules"]
    assert acted.startswith("cannot roll back: the revisions of chat could not be read")
    assert f"{cand} still serves" in doc["message"]
    assert chat.serving() == {cand: 100}
    assert doc["watch"]["watched_s"] > 0  # the summary's facts, though the watch ended in error
    assert "### Watch" in summary


def test_rules_without_evidence_yet_are_shown_pending_and_named_when_a_pass_ends(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    """A 3 s bake cannot finish a probe round that holds its sessions: it says so."""
    base = chat.first()
    cand = chat.candidate(tag=None, percent=0)
    promote(chat, base, cand)
    code, doc, summary = watch(tmp_path, "--for", "3s", policy=POLICIES / "chat-watch-slow.yaml")
    assert code == 0, doc.get("message")
    rows = {r["rule"]: r for r in doc["rules"]}
    assert rows["chat-hold"]["status"] == "pending"
    assert rows["chat-hold"]["message"].startswith(f"the first probe round on {cand}")
    assert rows["no-1011-in-logs"]["status"] == "pass"
    assert any(
        n.startswith(f"not judged on {cand} before the watch ended") and "chat-hold" in n
        for n in doc["notes"]
    )
    assert "| ⏳ | `chat-hold` | websocket | pending |" in summary


def test_an_unknown_service_is_named_in_the_watch_s_own_words(
    emulator_env: dict[str, str], tmp_path: Path
) -> None:
    """A watch has no revision to take the service from: the hint is --service alone."""
    code, doc, summary = watch(tmp_path, "--for", "30s", service="chat-agnet")
    assert (code, doc["verdict"]) == (2, "error")
    assert doc["error"].endswith(
        "does not exist in project local-project region us-central1; "
        "check --service, --project and --region"
    )
    assert summary.startswith("## deploy-guard watch: ⛔ ERROR — `chat-agnet` (no traffic change)")
