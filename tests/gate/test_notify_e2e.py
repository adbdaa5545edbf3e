"""Notifications from real checks and rollouts on the emulator, to real local receivers.

A notification is fired after the decision and its action and delivered in the
background: these tests show it with events, never with timings. The receiver
notes what the guard had done when each request arrived (its ``on_request``
hook reads the report's timeline), and a receiver that never answers is still
holding its request while the run goes on.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.events.delivery import Bounds
from deploy_guard.events.fanout import Channel, Notifiers
from deploy_guard.events.webhook import SIGNATURE_HEADER, WebhookNotifier, verify
from deploy_guard.exitcodes import ExitCode
from deploy_guard.policy.model import RolloutStep
from deploy_guard.runtime.rollout import RolloutGate, RolloutOptions
from gates import POLICIES, build_gate, run_guard
from receivers import SECRET_PATH, Receiver
from waiting import eventually

KEY = "0123456789abcdef-signing-key-for-tests"
#: The pieces of the receiver's URL that are its credential (a Slack-shaped path).
TOKENS = [p for p in SECRET_PATH.split("/") if len(p) > 8]
FAST = Bounds(attempt_timeout=0.5, attempts=2, backoff=0.01, backoff_max=0.02, total=5.0)


def timeline(doc: dict[str, Any]) -> list[str]:
    return [e["event"] for e in doc["timeline"]]


@pytest.mark.fault(
    "notify", "a check fails and rolls back; webhook and Slack notified", "one event each, signed"
)
def test_a_failing_check_tells_its_rollback_once_verified(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    with Receiver() as hook, Receiver() as slack:
        monkeypatch.setenv("HOOK_URL", hook.url)
        monkeypatch.setenv("HOOK_KEY", KEY)
        monkeypatch.setenv("SLACK_URL", slack.url)
        code, doc, _ = run_guard(
            "check",
            tmp_path,
            cand,
            "--notify",
            "webhook:HOOK_URL+HOOK_KEY:fail,rollback,rollback_failed",
            "--notify",
            "slack:SLACK_URL",
            "--report-url",
            "https://storage.example/reports/1/report.json",
            policy="chat-fast.yaml",
        )
        assert code == ExitCode.FAIL, doc
        assert doc["action"] == "rolled_back"
        assert chat.serving() == {base: 100}
        (request,) = hook.requests  # one event for the whole run
        assert verify(request.body, request.headers[SIGNATURE_HEADER], KEY)
        payload = request.json()
        assert (payload["kind"], payload["service"], payload["revision"]) == (
            "rollback",
            "chat",
            cand,
        )
        assert payload["exit_code"] == ExitCode.FAIL
        assert payload["traffic_after"] == {base: 100}
        assert payload["report_url"] == "https://storage.example/reports/1/report.json"
        assert any("1011" in reason for reason in payload["reasons"]), payload["reasons"]
        (message,) = slack.requests
        assert message.json()["blocks"][0]["text"]["text"] == "\u23ea Rolled back: chat"
    # the report says who was told, and the timeline when: after the rollback was verified
    assert sorted((n["notifier"], n["event"], n["status"]) for n in doc["notifications"]) == [
        ("slack (SLACK_URL)", "rollback", "delivered"),
        ("webhook (HOOK_URL)", "rollback", "delivered"),
    ]
    events = timeline(doc)
    assert events.index("rollback_verified") < events.index("notification_sent")
    assert events[-1] == "check_finished"


@pytest.mark.fault(
    "secrets", "webhook URL, token and HMAC key; the receiver echoes them", "no channel shows one"
)
def test_no_output_channel_shows_a_notifier_secret(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver refuses with its own URL in the answer: the failure is told, not the URL."""
    chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    policy = tmp_path / "notify.yaml"
    policy.write_text(
        (POLICIES / "chat-fast.yaml").read_text()
        + "notify:\n  - kind: webhook\n    url_env: HOOK_URL\n    secret_env: HOOK_KEY\n"
    )
    with Receiver([500], body="") as hook:
        hook.body = f"no_service at {hook.url} (key {KEY})"
        monkeypatch.setenv("HOOK_URL", hook.url)
        monkeypatch.setenv("HOOK_KEY", KEY)
        report, summary = tmp_path / "r.json", tmp_path / "s.md"
        args = ["--log-level", "debug", "check", "--revision", cand, "--policy", str(policy)]
        args += ["--report", str(report), "--summary", str(summary), "--log-interval", "0.5s"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert len(hook.requests) == 3  # Bounds().attempts: the default policy of retries
    assert result.exit_code == ExitCode.FAIL, result.output  # a failed delivery changes nothing
    doc = json.loads(report.read_text())
    (delivery,) = doc["notifications"]
    assert (delivery["event"], delivery["status"], delivery["attempts"]) == (
        "rollback",
        "failed",
        3,
    )
    assert delivery["error"].startswith("HTTP 500: no_service at [redacted]")
    assert '"notification_failed"' in result.stderr  # logged, as a warning
    channels = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "report": report.read_text(),
        "summary": summary.read_text(),
    }
    # the URL whole, and any 12 characters of its path (the credential) or of the key
    slices = {s[i : i + 12] for s in (KEY, SECRET_PATH) for i in range(len(s) - 11)}
    for name, text in channels.items():
        assert hook.url not in text, name
        assert [s for s in slices if s in text] == [], name
        assert [t for t in TOKENS if t[:8] in text] == [], name


@pytest.mark.fault("notify", "the receiver hangs during a check's rollback", "rollback unaffected")
async def test_a_receiver_that_hangs_does_not_hold_up_the_rollback(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    gate = build_gate(gcp_clients, emulator, cand, policy=POLICIES / "chat-fast.yaml")
    seen: list[list[str]] = []
    with Receiver(
        ["hang"], on_request=lambda: seen.append([e.event for e in gate.report.timeline.events])
    ) as hook:
        notifier = WebhookNotifier("webhook (HOOK)", hook.url, bounds=FAST)
        gate.notifier = Notifiers([Channel(notifier, frozenset({"rollback"}))], bounds=FAST)
        report = await gate.run()
    assert (report.verdict, report.action, report.exit_code) == ("fail", "rolled_back", 1)
    assert chat.serving() == {base: 100}
    # when the first notification arrived, traffic had already been put back and verified
    assert "rollback_verified" in seen[0]
    assert len(seen) == FAST.attempts
    (delivery,) = report.notifications
    assert (delivery["status"], delivery["error"]) == ("failed", "no answer within 0.5s")
    events = [e.event for e in report.timeline.events]
    assert events.index("rollback_verified") < events.index("notification_failed")


@pytest.mark.fault("notify", "the receiver hangs on a rollout's step event", "the rollout goes on")
async def test_a_rollout_tells_each_step_and_goes_on_while_a_receiver_hangs(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    steps = (RolloutStep(percent=10, duration=1.0), RolloutStep(percent=50, duration=1.0))
    gate = build_gate(
        gcp_clients,
        emulator,
        cand,
        policy=POLICIES / "chat-rollout.yaml",
        gate_class=RolloutGate,
        options_class=RolloutOptions,
        steps=steps,
    )
    with Receiver(["hang"]) as stuck, Receiver() as hook:
        slow = Bounds(attempt_timeout=60.0, attempts=1, total=60.0)
        gate.notifier = Notifiers(
            [
                Channel(WebhookNotifier("stuck", stuck.url, bounds=slow), frozenset({"step"})),
                Channel(
                    WebhookNotifier("hook", hook.url, bounds=FAST),
                    frozenset({"step", "promote"}),
                ),
            ],
            bounds=slow,
        )
        run = asyncio.ensure_future(gate.run())
        await eventually(lambda: stuck.arrived.is_set(), within=60, what="step 1's event")
        # step 1's notification is held open by its receiver; the rollout walks on to 100 %
        await eventually(
            lambda: any(e.event == "promote_verified" for e in gate.report.timeline.events),
            within=60,
            what="the promotion",
        )
        assert len(stuck.requests) == 2  # both steps told, neither answered yet
        stuck.release()
        report = await run
    assert (report.action, report.exit_code) == ("promoted", 0)
    told = [(r.json()["kind"], r.json()["detail"]) for r in hook.requests]
    assert told == [
        ("step", {"step": 1, "percent": 10, "steps": 2}),
        ("step", {"step": 2, "percent": 50, "steps": 2}),
        ("promote", {}),
    ]
    assert hook.requests[-1].json()["exit_code"] == 0


@pytest.mark.fault("cli", "notify's variable is not set", "exit 2 before any API call")
def test_a_notifier_whose_variable_is_not_set_is_exit_2_before_any_api_call(
    chat: Any, emulator: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate()
    before = emulator.faults.counts()
    code, doc, output = run_guard(
        "check", tmp_path, cand, "--notify", "slack:NOBODY_SET_THIS", policy="chat-fast.yaml"
    )
    assert code == ExitCode.USAGE
    assert "the environment variable NOBODY_SET_THIS is not set" in output
    assert doc["api_calls_total"] == 0
    assert emulator.faults.counts() == before
    assert doc["notifications"] == []
