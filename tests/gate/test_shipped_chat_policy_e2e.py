"""The shipped ``policies/chat-agent.yaml`` through ``deploy-guard check`` on the emulator.

Issue 4 asks that the shipped chat policy fail, for the right reason, against
each failure mode of the example service, and pass its healthy mode. The probe
modes are covered in ``tests/probes/test_shipped_policy.py``; the log-only
mode (``CHAT_ERROR_LOGS``: every agent run logs an ERROR "tool call failed:
upstream returned 503" while the five events still arrive) needs Cloud
Logging, so it is checked here, end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_guard.exitcodes import ExitCode

SHIPPED = Path(__file__).resolve().parents[2] / "policies" / "chat-agent.yaml"


def _rules(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in report["rules"]}


def test_error_log_lines_fail_the_shipped_policy_on_its_error_log_rule(
    chat: Any, check: Any
) -> None:
    chat.service = "chat-agent"  # the service the shipped policy names
    base = chat.first()
    cand = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    code, report = check(cand, policy=str(SHIPPED))
    assert code == ExitCode.FAIL, report
    assert report["verdict"] == "fail"
    assert "no-error-logs" in report["deciding_rules"]
    # the right reason: ERROR entries, not a 1011 or a broken golden path
    assert "no-1011-in-logs" not in report["deciding_rules"]
    rules = _rules(report)
    assert rules["no-error-logs"]["status"] == "fail"
    assert "tool call failed: upstream returned 503" in " ".join(rules["no-error-logs"]["evidence"])
    for probe in ("health", "chat-golden-path"):
        assert rules[probe]["status"] != "fail", rules[probe]
    assert report["action"] == "none"  # the candidate held no traffic
    assert chat.serving() == {base: 100}


def test_a_healthy_revision_passes_the_shipped_policy(
    chat: Any, check: Any, tmp_path: Path
) -> None:
    """The new log rule finds nothing to count in a healthy revision's logs.

    The shipped policy as it is, but for its 60 s hold (2 s here, as ``make demo``
    shortens it): every other rule, limit and filter is the file's own.
    """
    text = SHIPPED.read_text()
    assert text.count("hold: 60s") == 1
    policy = tmp_path / "chat-agent.yaml"
    policy.write_text(text.replace("hold: 60s", "hold: 2s"))
    chat.service = "chat-agent"
    base = chat.first()
    cand = chat.candidate()
    code, report = check(cand, policy=str(policy))
    assert code == ExitCode.PASS, report
    assert report["verdict"] == "pass"
    rules = _rules(report)
    assert rules["no-error-logs"]["status"] == "pass", rules["no-error-logs"]
    assert rules["no-1011-in-logs"]["status"] == "pass"
    assert chat.serving() == {base: 100}  # on_pass: none
