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

import pytest

from deploy_guard.exitcodes import ExitCode
from waiting import wait_until

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


def _short_hold(tmp_path: Path) -> str:
    """The shipped policy as it is, but for its 60 s hold (2 s here, as the demo does)."""
    text = SHIPPED.read_text()
    assert text.count("hold: 60s") == 1
    policy = tmp_path / "chat-agent.yaml"
    policy.write_text(text.replace("hold: 60s", "hold: 2s"))
    return str(policy)


@pytest.mark.fault(
    "logs",
    "uncaught traceback on stderr (DEFAULT lines), events still arrive",
    "fail on no-crashes-in-logs",
)
def test_an_escaped_traceback_fails_the_shipped_policy_though_it_is_no_error_entry(
    chat: Any, check: Any, tmp_path: Path
) -> None:
    """uvicorn prints an exception that escapes the app as plain stderr lines, which
    Cloud Run logs at severity DEFAULT: ``severity>=ERROR`` never sees them."""
    chat.service = "chat-agent"
    base = chat.first()
    cand = chat.candidate({"CHAT_TRACEBACKS": "1"})
    code, report = check(cand, policy=_short_hold(tmp_path))
    assert code == ExitCode.FAIL, report
    assert report["deciding_rules"] == ["no-crashes-in-logs"]
    rules = _rules(report)
    evidence = " ".join(rules["no-crashes-in-logs"]["evidence"])
    assert "Traceback (most recent call last)" in evidence
    assert "DEFAULT" in evidence
    # the probes saw nothing wrong, and there is no ERROR entry to count
    for other in ("health", "chat-golden-path", "chat-cycles", "no-error-logs"):
        assert rules[other]["status"] != "fail", rules[other]
    assert chat.serving() == {base: 100}


@pytest.mark.fault(
    "logs",
    "container exits mid-session (Container called exit(1). at WARNING)",
    "fail (sessions cut); exit line at WARNING, matched by pattern",
)
def test_a_revision_that_crashes_mid_session_fails_the_shipped_policy(
    chat: Any, check: Any, emulator: Any, tmp_path: Path
) -> None:
    chat.service = "chat-agent"
    base = chat.first()
    cand = chat.candidate({"CHAT_CRASH_AFTER": "1"})
    code, report = check(cand, policy=_short_hold(tmp_path))
    assert code == ExitCode.FAIL, report
    rules = _rules(report)
    # the sessions that were open end without a close frame, later ones are refused
    # (whichever session rule sees it first decides: fail_fast stops the others)
    probes = ("chat-golden-path", "chat-cycles", "chat-hold")
    assert any(rules[r]["status"] == "fail" for r in probes), rules

    # Cloud Run's own words, at WARNING: no ERROR entry says the container died
    def exit_lines() -> list[dict[str, Any]]:
        return [
            e
            for e in emulator.logs.entries('log_id("run.googleapis.com/varlog/system")')
            if e["resource"]["labels"]["revision_name"] == cand
        ]

    [exit_line] = wait_until(exit_lines, what="the candidate's exit line")
    assert (exit_line["textPayload"], exit_line["severity"]) == (
        "Container called exit(1).",
        "WARNING",
    )
    # counted by its pattern, though WARNING, by a pass while probing or the one that
    # follows a fail-fast decision (bounded to 5 s: on a loaded machine it may not
    # finish; test_sources_e2e.py shows the rule counting the line on its own)
    crash = rules["no-crashes-in-logs"]
    if crash["status"] == "fail":
        assert "WARNING Container called exit(1)." in " ".join(crash["evidence"])
    assert chat.serving() == {base: 100}
