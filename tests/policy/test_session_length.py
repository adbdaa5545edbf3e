"""How long a WebSocket session may last, as the check and ``policy explain`` count it.

Cloud Run cuts a session at the service's request timeout, so the guard compares
this length (every expect step's timeout, then the hold) with the candidate's.
"""

from __future__ import annotations

from pathlib import Path

from deploy_guard.policy.explain import explain
from deploy_guard.policy.load import load_file

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_the_longest_session_is_the_expect_timeouts_plus_the_hold() -> None:
    policy = load_file(POLICIES / "chat-agent.yaml")
    held = next(r for r in policy.rules if r.name == "chat-hold")
    assert held.websocket is not None
    ws = held.websocket
    expects = [s.timeout for s in ws.scenario if hasattr(s, "events")]
    assert ws.longest_session == sum(expects) + ws.hold == 75


def test_explain_says_the_request_timeout_must_be_longer() -> None:
    text = explain(load_file(POLICIES / "chat-agent.yaml"))
    assert "A session may last 75s (expect timeouts + hold): the candidate's request " in text
    assert "check refuses such a revision with exit 2" in text
