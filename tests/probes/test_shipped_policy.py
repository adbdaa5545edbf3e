"""The shipped policies/chat-agent.yaml against the example service, mode by mode.

Healthy passes; each failure switch fails the policy's probe rules for the
right reason (rule and cause). The 60 s hold rule runs only where the service
closes early (the 1011 mode), where fail_fast stops it at the close. The log-only mode
(CHAT_ERROR_LOGS) needs Cloud Logging: tests/gate/test_shipped_chat_policy_e2e.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from probe_helpers import ChatFactory

from deploy_guard.judge import Judge
from deploy_guard.policy.load import load_file
from deploy_guard.probes.runner import run_rules
from deploy_guard.probes.target import Target

POLICY = Path(__file__).resolve().parents[2] / "policies" / "chat-agent.yaml"
FAST_RULES = ("health", "chat-golden-path", "chat-cycles")


async def judge(url: str, names: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    policy = load_file(POLICY)
    rules = [policy.rule(n) for n in names]
    j = Judge(policy.model_copy(update={"rules": rules}))
    last: dict[str, Any] = {}
    async with contextlib.aclosing(run_rules(rules, Target(url))) as stream:
        async for m in stream:
            last[m.rule] = m
            j.observe(m)
            if j.early_verdict() is not None:
                break
    return j.verdict(), last


async def test_healthy_mode_passes(chat_server: ChatFactory) -> None:
    served = await chat_server()
    verdict, last = await judge(served.url, FAST_RULES)
    assert verdict.status == "pass", verdict.reasons
    assert last["chat-cycles"].succeeded == 100


@pytest.mark.parametrize(
    ("config", "names", "rule", "cause"),
    [
        ({"drop_event": "tool_completed"}, FAST_RULES, "chat-golden-path", "missing_event"),
        ({"swap_events": True}, FAST_RULES, "chat-golden-path", "wrong_order"),
        ({"leak_users": True}, ("chat-cycles",), "chat-cycles", "isolation_breach"),
        ({"fail_1011_ratio": 0.1}, ("chat-cycles",), "chat-cycles", "close_code"),
        ({"health_status": 500}, FAST_RULES, "health", "status"),
        ({"slow_ms": 1100}, ("health",), "health", "latency"),
        ({"fail_1011_after": 0.3}, ("chat-hold",), "chat-hold", "close_code"),
    ],
)
async def test_each_failure_mode_fails_for_the_right_reason(
    chat_server: ChatFactory,
    config: dict[str, Any],
    names: tuple[str, ...],
    rule: str,
    cause: str,
) -> None:
    served = await chat_server(**config)
    verdict, last = await judge(served.url, names)
    assert verdict.status == "fail", verdict.reasons
    assert rule in verdict.deciding
    assert cause in last[rule].failures_by_cause, last[rule].failures_by_cause
