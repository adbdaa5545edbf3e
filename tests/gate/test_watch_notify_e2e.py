"""A watch tells its rollbacks as they happen and each degraded episode once.

The chat agent is promoted and watched as in ``test_watch_e2e.py``; a real
local receiver records what the watch posts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, SERVED_BEFORE, encode_split
from receivers import Receiver

WATCH = Path(__file__).parent / "policies" / "chat-watch.yaml"
EVENTS = "webhook:HOOK_URL:rollback,rollback_failed,watch_degraded,error"


def promote(chat: Any, base: str, cand: str) -> None:
    """``cand`` serves 100 %, recorded as a passing check records it."""
    from google.cloud import run_v2

    svc = chat.get()
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc.traffic = [run_v2.TrafficTarget(type_=kind, revision=cand, percent=100)]
    svc.annotations[LAST_KNOWN_GOOD] = cand
    svc.annotations[SERVED_BEFORE] = encode_split({base: 100})
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)


def run_watch(tmp_path: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "watch.json"
    args = ["watch", "--service", "chat", "--policy", str(WATCH), "--report", str(report)]
    args += ["--log-interval", "0.5s", "--service-interval", "0.5s", "--notify", EVENTS, *flags]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result.exit_code, json.loads(report.read_text())


@pytest.mark.fault("notify", "a watched revision turns bad", "its rollback told once, with timing")
def test_a_watch_tells_its_rollback_when_traffic_is_back(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_BAD_AFTER": "4"}, tag=None, percent=0)
    promote(chat, base, cand)
    with Receiver() as hook:
        monkeypatch.setenv("HOOK_URL", hook.url)
        code, doc = run_watch(tmp_path, "--for", "60s")
    assert code == 1, doc.get("message")
    assert doc["action"] == "rolled_back"
    kinds = [r.json()["kind"] for r in hook.requests]
    assert kinds == ["rollback"], kinds  # the watch's ending is not told again
    payload = hook.requests[0].json()
    assert (payload["command"], payload["revision"], payload["exit_code"]) == ("watch", cand, None)
    assert payload["traffic_after"] == {base: 100}
    assert payload["detail"]["revision"] == cand
    assert payload["detail"]["first_bad_to_verified_s"] >= 0
    assert [n["status"] for n in doc["notifications"]] == ["delivered"]


@pytest.mark.fault("notify", "watch: Cloud Logging outage", "watch_degraded told once")
def test_a_degraded_watch_is_told_once_per_episode(
    chat: Any,
    emulator: Any,
    emulator_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None, percent=0)
    promote(chat, base, cand)
    emulator.faults.fail("ListLogEntries", grpc.StatusCode.UNAVAILABLE)
    emulator.faults.fail("TailLogEntries", grpc.StatusCode.UNAVAILABLE)
    with Receiver() as hook:
        monkeypatch.setenv("HOOK_URL", hook.url)
        code, doc = run_watch(tmp_path, "--for", "8s", "--api-retry", "1s")
    assert code == 3, doc.get("message")
    assert [r.json()["kind"] for r in hook.requests] == ["watch_degraded"]
    assert hook.requests[0].json()["detail"]["why"].startswith("Cloud Logging: ")
