"""WebSocket probe sessions against the example chat-agent service, healthy and broken."""

from __future__ import annotations

import re
from typing import Any

import pytest
from probe_helpers import ChatFactory, collect, golden_scenario, ws_rule

from deploy_guard.probes.target import Target


async def test_healthy_service_passes_every_session_with_timings(chat_server: ChatFactory) -> None:
    served = await chat_server()
    snaps = await collect(ws_rule(sessions=6, concurrency=3), Target(served.url))
    last = snaps[-1]
    assert last.complete
    assert last.done == last.planned == 6
    assert last.succeeded == 6
    assert last.failures_by_cause == {}
    assert last.close_codes == {1000: 6}
    assert set(last.latencies) == {"handshake", "first_event", "scenario", "total"}
    assert last.latencies["total"]["p50"] <= last.latencies["total"]["p99"]
    assert last.samples == ()
    assert all(not s.complete for s in snaps[:-1])


@pytest.mark.parametrize(
    ("config", "rule_kw", "cause", "words"),
    [
        ({"drop_event": "tool_completed"}, {}, "missing_event", "tool_completed never arrived"),
        ({"swap_events": True}, {}, "wrong_order", "got tool_executing after tool_completed"),
        (
            {"leak_users": True},
            {"concurrency": 3, "sessions": 6, "hold": "300ms"},  # the hold makes users overlap
            "isolation_breach",
            "user_id=",
        ),
        (
            {"slow_ms": 400},
            {"scenario_timeout": "100ms"},
            "timeout",
            "timeout at step 2 waiting for agent_started after 0.1 s",
        ),
        ({"fail_1011_ratio": 1.0}, {}, "close_code", "close code 1011 (internal error)"),
    ],
)
async def test_each_failure_mode_is_detected_and_named(
    chat_server: ChatFactory,
    config: dict[str, Any],
    rule_kw: dict[str, Any],
    cause: str,
    words: str,
) -> None:
    served = await chat_server(**config)
    timeout = rule_kw.pop("scenario_timeout", "2s")
    rule = ws_rule(scenario=golden_scenario(timeout), **rule_kw)
    last = (await collect(rule, Target(served.url)))[-1]
    assert last.complete
    assert last.failures_by_cause.get(cause, 0) >= 1, last.failures_by_cause
    assert set(last.failures_by_cause) == {cause}
    sample = last.samples[0]
    assert sample.cause == cause
    assert words in sample.detail, sample.detail
    assert sample.transcript
    assert sample.transcript[0]["dir"] == "send"
    assert sample.user is not None
    assert sample.user.startswith("user-")


async def test_share_of_sessions_failing_with_1011_is_counted(chat_server: ChatFactory) -> None:
    served = await chat_server(fail_1011_ratio=0.25)
    last = (await collect(ws_rule(sessions=8, concurrency=4), Target(served.url)))[-1]
    assert last.done == 8
    assert last.failures_by_cause == {"close_code": 2}
    assert last.close_codes == {1000: 6, 1011: 2}


async def test_1011_during_a_60s_hold_fails_at_the_close_not_at_the_end(
    chat_server: ChatFactory,
) -> None:
    """The background bug, scaled down: 1011 at 0.5 s must fail a 60 s hold at ~0.5 s."""
    served = await chat_server(fail_1011_after=0.5)
    rule = ws_rule(sessions=3, concurrency=3, hold="60s")
    snaps = await collect(rule, Target(served.url))
    last = snaps[-1]
    assert last.complete
    assert last.done == 3
    assert last.failures_by_cause == {"close_code": 3}
    assert last.close_codes == {1011: 3}
    # seen when it happened: each session lasted about the server's 0.5 s, far below the hold
    assert last.latencies["total"]["max"] < 5.0
    assert last.first_failure_after is not None
    assert last.first_failure_after < 5.0
    detail = last.samples[0].detail
    assert re.fullmatch(
        r"close code 1011 \(internal error\) after \d+\.\d+ s during the hold, hold wanted 60 s",
        detail,
    ), detail
    # the first failure is reported on its own snapshot, before the rule completes
    assert snaps[0].failed >= 1
    assert not snaps[0].complete


async def test_a_hold_the_server_respects_succeeds(chat_server: ChatFactory) -> None:
    served = await chat_server()
    last = (await collect(ws_rule(sessions=2, concurrency=2, hold="300ms"), Target(served.url)))[-1]
    assert last.succeeded == 2
    assert last.latencies["total"]["p50"] >= 0.3


@pytest.mark.slow
async def test_real_shape_1011_at_7s_fails_a_60s_hold_at_7s(chat_server: ChatFactory) -> None:
    served = await chat_server(fail_1011_after=7.0)
    snaps = await collect(ws_rule(sessions=2, concurrency=2, hold="60s"), Target(served.url))
    last = snaps[-1]
    assert last.failures_by_cause == {"close_code": 2}
    assert 6.5 < last.latencies["total"]["max"] < 20.0
    assert re.match(r"close code 1011 \(internal error\) after [6-9]\.\d s", last.samples[0].detail)


async def test_isolation_is_per_user_with_concurrent_users(chat_server: ChatFactory) -> None:
    """Healthy service, 5 concurrent users: nobody sees another's events."""
    served = await chat_server()
    last = (await collect(ws_rule(sessions=10, concurrency=5), Target(served.url)))[-1]
    assert last.succeeded == 10
