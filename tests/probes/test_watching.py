"""The watch's probes: the canary user and the probe rounds, against real local servers.

The servers are the example chat app (healthy, or turned bad by its hand-moved
clock as ``CHAT_BAD_AFTER`` does) and a small app here that counts the
WebSockets it has open, when each opened, and fails the sessions it is told to.
Nothing waits for luck: every wait is for a condition (``eventually``); the only
time figures asserted are lower bounds of the canary's own deliberate pauses.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from probe_helpers import ChatFactory, http_rule, load_chat_app, serve, ws_rule
from structlog.testing import capture_logs

from deploy_guard.errors import ConfigError
from deploy_guard.judge.probe import assess_probe
from deploy_guard.measurements import Attempt, ProbeMeasurement
from deploy_guard.policy.model import Rule
from deploy_guard.probes.target import Target
from deploy_guard.probes.watching import (
    UNREACHED,
    CanaryUser,
    ProbeRounds,
    backoff_delay,
    session_bound,
    without_unreached,
)
from deploy_guard.probes.ws_bounds import CLOSE_TIMEOUT
from waiting import eventually

Serve = Callable[[web.Application], Awaitable[str]]
#: Back-off for the tests that do not look at it: short, so failures repeat soon.
QUICK = (0.02, 0.05)


class Clock:
    """A clock the test moves (seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Tracker:
    """A WebSocket server that answers each message with ``agent_started`` and then holds.

    ``fail`` names the sessions (by their ``n`` query value) closed with 1011 at once;
    ``fail_all`` closes every session so. It counts the sockets open now, in all,
    the most open at once, and the loop time each one opened.
    """

    def __init__(self, *, fail: tuple[str, ...] = (), fail_all: bool = False) -> None:
        self.fail = fail
        self.fail_all = fail_all
        self.open = 0
        self.total = 0
        self.most = 0
        self.opened_at: list[float] = []

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.open += 1
            self.total += 1
            self.most = max(self.most, self.open)
            self.opened_at.append(asyncio.get_running_loop().time())
            try:
                if self.fail_all or request.query.get("n") in self.fail:
                    await ws.close(code=1011, message=b"internal error")
                async for frame in ws:
                    if frame.type == WSMsgType.TEXT:
                        msg = json.loads(frame.data)
                        await ws.send_json({"type": "agent_started", "user_id": msg["user_id"]})
            finally:
                self.open -= 1
            return ws

        app = web.Application()
        app.router.add_get("/ws/chat", chat)
        return app


def held(hold: str = "60s", **websocket: Any) -> Rule:
    """One message, ``agent_started`` back, then the connection held for ``hold``."""
    message = {"type": "message", "user_id": "{user}", "session_id": "{session}"}
    spec: dict[str, Any] = {
        "sessions": 1,
        "concurrency": 1,
        "hold": hold,
        "query": {"n": "{n}"},
        "scenario": [{"send": {"json": message}}, {"expect": ["agent_started"], "timeout": "2s"}],
    }
    spec.update(websocket)
    return ws_rule(**spec)


def client_tasks() -> list[asyncio.Task[object]]:
    """Tasks still running code of the probes or their client library (not the test server)."""
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        where = code.co_filename if code is not None else ""
        if "deploy_guard" in where or "/websockets/" in where:
            found.append(task)
    return found


@pytest.fixture
async def turning_bad() -> AsyncIterator[tuple[str, Clock, Any]]:
    """The chat app with ``bad_after=60`` on a hand-moved clock: (url, app clock, state)."""
    app_module = load_chat_app()
    clock = Clock()
    config = app_module.ChatConfig(event_delay=0.001, bad_after=60.0)
    app = app_module.make_app(config, clock=clock)
    runner, url = await serve(app)
    try:
        yield url, clock, app[app_module.STATE]
    finally:
        await runner.cleanup()


def outcome(rule: Rule, m: ProbeMeasurement) -> str:
    return assess_probe(rule, m, final=False).outcome


# ----------------------------------------------------------------------------- canary


async def test_the_canary_renews_its_session_and_passes(chat_server: ChatFactory) -> None:
    served = await chat_server()
    rule = ws_rule(sessions=1, concurrency=1, hold="0.2s")
    ended: list[Attempt] = []
    canary = CanaryUser(rule, Target(served.url), window=60, changed=ended.append)
    await canary.start()
    await eventually(lambda: canary.sessions >= 3, what="three sessions ended")
    m = canary.measurement()
    await canary.stop()

    assert (m.rule, m.kind, m.complete) == (rule.name, "websocket", True)
    assert m.done == m.planned == m.succeeded >= 3
    assert m.close_codes == {1000: m.done}
    assert m.failures_by_cause == {}
    assert set(m.latencies) >= {"handshake", "scenario", "total"}
    assert m.latencies["total"]["p50"] >= 0.2  # each session was held
    assert outcome(rule, m) == "pass"
    assert all(a.ok and a.user == "canary" for a in ended)  # changed heard of every session
    assert canary.first_failure_at is None
    # one at a time: the server saw the ended sessions and at most the one stop() cut
    assert served.state.connections_total - canary.sessions in (0, 1)


async def test_the_window_holds_at_most_max_kept_sessions(chat_server: ChatFactory) -> None:
    served = await chat_server()
    rule = ws_rule(sessions=1, concurrency=1, hold="0.01s")
    canary = CanaryUser(rule, Target(served.url), window=3600, max_kept=2)
    await canary.start()
    await eventually(lambda: canary.sessions >= 5)
    await canary.stop()
    m = canary.measurement()
    assert m.done == m.planned == 2
    assert canary.sessions >= 5


async def test_sessions_leave_the_window_by_the_clock(chat_server: ChatFactory) -> None:
    served = await chat_server()
    clock = Clock()
    rule = ws_rule(sessions=1, concurrency=1, hold="0.01s")
    canary = CanaryUser(rule, Target(served.url), window=30, clock=clock)
    assert outcome(rule, canary.measurement()) == "pending"  # nothing ended yet
    await canary.start()
    await eventually(lambda: canary.sessions >= 2)
    await canary.stop()
    assert canary.measurement().done == canary.sessions

    clock.now += 30  # the window's edge: still in
    assert canary.measurement().done == canary.sessions
    clock.now += 0.5
    m = canary.measurement()
    assert (m.done, m.planned, m.complete) == (0, 0, False)
    assert outcome(rule, m) == "pending"


async def test_a_server_turning_bad_is_reported_at_once_with_1011(
    turning_bad: tuple[str, Clock, Any],
) -> None:
    url, app_clock, state = turning_bad
    canary_clock = Clock(5000.0)
    failed: list[Attempt] = []
    heard = asyncio.Event()

    def changed(attempt: Attempt) -> None:
        if not attempt.ok:
            failed.append(attempt)
            heard.set()

    rule = ws_rule(sessions=1, concurrency=1, hold="0.2s")
    canary = CanaryUser(
        rule, Target(url), window=60, changed=changed, clock=canary_clock, backoff=QUICK
    )
    await canary.start()
    await eventually(lambda: canary.sessions >= 1)
    assert canary.first_failure_at is None
    assert outcome(rule, canary.measurement()) == "pass"

    canary_clock.now += 7.0
    app_clock.now += 60.0  # the process has lived bad_after seconds: new sessions die
    await asyncio.wait_for(heard.wait(), 10)
    await eventually(lambda: len(failed) >= 2, what="a second failed session")
    await canary.stop()

    assert failed[0].cause == "close_code"
    assert failed[0].close_code == 1011
    assert "close code 1011" in failed[0].detail
    assert canary.first_failure_at == 5007.0
    m = canary.measurement()
    k = len(failed)
    assert m.close_codes[1011] == k
    assert m.failures_by_cause == {"close_code": k}
    assert m.samples
    assert m.samples[0].close_code == 1011
    assert outcome(rule, m) == "fail"
    assert canary.failures_in_row == k
    assert state.bad_sessions >= k


async def test_back_off_doubles_between_failed_sessions_up_to_its_cap(
    aiohttp_server: Serve,
) -> None:
    dead = Tracker(fail_all=True)
    url = await aiohttp_server(dead.app())
    canary = CanaryUser(held("1s"), Target(url), window=60, backoff=(0.1, 0.4))
    await canary.start()
    await eventually(lambda: canary.sessions >= 5)
    await canary.stop()

    assert canary.failures_in_row == canary.sessions
    gaps = [b - a for a, b in zip(dead.opened_at, dead.opened_at[1:], strict=False)]
    # each wait is at least the back-off (a lower bound of a deliberate pause, never luck)
    for gap, wanted in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=False):
        assert gap >= wanted * 0.95


def test_the_default_back_off_is_1_s_doubling_to_30_s() -> None:
    assert [backoff_delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(10_000) == 30


async def test_a_success_ends_the_back_off(aiohttp_server: Serve) -> None:
    flaky = Tracker(fail=("1", "2"))  # the first two sessions fail, then all is well
    url = await aiohttp_server(flaky.app())
    clock = Clock()
    canary = CanaryUser(held("0.05s"), Target(url), window=60, clock=clock, backoff=QUICK)
    with capture_logs() as events:
        await canary.start()
        await eventually(lambda: canary.sessions >= 3)
        await canary.stop()
    assert canary.failures_in_row == 0
    assert canary.first_failure_at == 1000.0  # stays until retarget() or reset()
    m = canary.measurement()
    assert m.close_codes[1011] == 2
    assert m.first_failure_after == 0.0
    logged = [e for e in events if e["event"].startswith("canary_")]
    assert [e["event"] for e in logged] == [
        "canary_started",
        "canary_session_failed",  # once per run of failures, not per failed session
        "canary_recovered",
        "canary_stopped",
    ]
    failed = logged[1]
    assert (failed["log_level"], failed["cause"], failed["close_code"]) == (
        "warning",
        "close_code",
        1011,
    )
    assert logged[2]["after"] == 2


async def test_retarget_sends_the_next_session_elsewhere_and_forgets_the_window(
    aiohttp_server: Serve, chat_server: ChatFactory
) -> None:
    bad = Tracker(fail_all=True)
    bad_url = await aiohttp_server(bad.app())
    good = await chat_server()
    rule = ws_rule(sessions=1, concurrency=1, hold="0.05s")
    canary = CanaryUser(rule, Target(bad_url), window=60, backoff=(30.0, 30.0))
    await canary.start()
    await eventually(lambda: canary.first_failure_at is not None)
    before = bad.total
    canary.retarget(Target(good.url))  # during a 30 s back-off: the next session starts now
    assert canary.first_failure_at is None
    assert canary.measurement().done == 0
    await eventually(lambda: canary.measurement().done >= 2)
    await canary.stop()

    assert bad.total == before
    m = canary.measurement()
    assert m.close_codes == {1000: m.done}
    assert outcome(rule, m) == "pass"
    assert canary.first_failure_at is None


async def test_retarget_cuts_the_session_in_flight(aiohttp_server: Serve) -> None:
    first, second = Tracker(), Tracker()
    url1, url2 = await aiohttp_server(first.app()), await aiohttp_server(second.app())
    canary = CanaryUser(held("60s"), Target(url1), window=60)
    await canary.start()
    await eventually(lambda: first.open == 1)
    canary.retarget(Target(url2))
    await eventually(lambda: second.open == 1)
    await eventually(lambda: first.open == 0, within=5)
    assert canary.sessions == 0  # the cut session spoke to the old target: not counted
    assert canary.measurement().done == 0
    await canary.stop()
    await eventually(lambda: second.open == 0, within=5)
    assert (first.total, second.total) == (1, 1)


async def test_reset_forgets_the_failures_and_the_session_in_flight(
    aiohttp_server: Serve,
) -> None:
    server = Tracker(fail=("1",))  # the first session fails; the next ones hold
    url = await aiohttp_server(server.app())
    canary = CanaryUser(held("60s"), Target(url), window=60, backoff=QUICK)
    await canary.start()
    await eventually(lambda: canary.first_failure_at is not None and server.open == 1)
    canary.reset()
    assert canary.first_failure_at is None
    assert canary.measurement().done == 0
    await eventually(lambda: server.total == 3 and server.open == 1)  # a fresh one at once
    await canary.stop()
    assert canary.sessions == 1  # only the failed one ended; the one reset cut is dropped


async def test_stop_closes_the_socket_and_leaves_no_task(aiohttp_server: Serve) -> None:
    server = Tracker()
    url = await aiohttp_server(server.app())
    canary = CanaryUser(held("60s"), Target(url), window=60)
    await canary.stop()  # never started: nothing to do
    await canary.start()
    await canary.start()  # one canary, one task
    await eventually(lambda: server.open == 1)
    await canary.stop()
    assert client_tasks() == []
    await eventually(lambda: server.open == 0, within=5)
    await canary.stop()  # idempotent
    assert server.total == 1


async def test_a_listener_that_raises_does_not_stop_the_canary(chat_server: ChatFactory) -> None:
    served = await chat_server()

    def broken(_: Attempt) -> None:
        raise RuntimeError("listener bug")

    rule = ws_rule(sessions=1, concurrency=1, hold="0.01s")
    canary = CanaryUser(rule, Target(served.url), window=60, changed=broken)
    await canary.start()
    await eventually(lambda: canary.sessions >= 2)
    await canary.stop()


def test_the_canary_needs_a_websocket_rule() -> None:
    with pytest.raises(ConfigError, match="canary needs websocket"):
        CanaryUser(http_rule(), Target("http://127.0.0.1:9"), window=60)


def test_every_session_is_bounded_by_the_rules_timeouts_and_hold() -> None:
    rule = held("30s", connect_timeout="3s")  # one send, one expect step of one event (2 s)
    assert rule.websocket is not None
    bound = session_bound(rule.websocket)
    assert bound == 3 * 2 + 2 + 30 + 2 * CLOSE_TIMEOUT + 5


async def test_a_session_past_its_bound_is_ended_as_a_timeout(
    aiohttp_server: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The canary's own guard, for a session the engine's timeouts somehow failed to end."""
    from deploy_guard.probes import watching

    server = Tracker()
    url = await aiohttp_server(server.app())
    rule = held("60s")
    assert rule.websocket is not None
    slack = watching.SESSION_SLACK + 0.3 - session_bound(rule.websocket)
    monkeypatch.setattr(watching, "SESSION_SLACK", slack)  # the bound is now 0.3 s
    failed: list[Attempt] = []
    canary = CanaryUser(rule, Target(url), window=60, changed=failed.append, backoff=(30, 30))
    await canary.start()
    await eventually(lambda: failed)
    await canary.stop()
    assert failed[0].cause == "timeout"
    assert failed[0].detail.startswith("session still open after 0.3 s")
    await eventually(lambda: server.open == 0, within=5)


# ------------------------------------------------------------------ nothing reached


def nothing_listens() -> str:
    """A loopback URL whose port was just freed: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.fault(
    "probes",
    "watch: the canary cannot connect (nothing listens)",
    "an error (degraded), no failed session",
)
async def test_a_canary_that_cannot_connect_says_so_and_fails_no_session() -> None:
    """The watcher's network, not the revision: degraded, never a rollback."""
    heard: list[Attempt] = []
    canary = CanaryUser(
        held("0s"), Target(nothing_listens()), window=60, backoff=QUICK, changed=heard.append
    )
    with capture_logs() as logs:
        await canary.start()
        await eventually(lambda: canary.sessions >= 3)
        await canary.stop()
    m = canary.measurement()
    assert (m.done, m.failed, m.complete) == (0, 0, False)
    assert m.error is not None
    assert "could not reach the service" in m.error
    assert canary.first_failure_at is None  # nothing bad was seen of the service
    assert all(a.cause == UNREACHED for a in heard)  # told, so the watch judges at once
    assert [e["event"] for e in logs].count("canary_unreached") == 1
    assert "canary_session_failed" not in [e["event"] for e in logs]


async def test_a_canary_that_reaches_the_service_again_is_judged_again(
    chat_server: ChatFactory,
) -> None:
    served = await chat_server()
    rule = ws_rule(sessions=1, concurrency=1, hold="0.05s")
    canary = CanaryUser(rule, Target(nothing_listens()), window=60, backoff=QUICK)
    await canary.start()
    await eventually(lambda: canary.unreached is not None)
    canary.use(Target(served.url))  # the network is back (same revision, window kept)
    await eventually(lambda: canary.measurement().done >= 1)
    await canary.stop()
    m = canary.measurement()
    assert (m.error, m.failed) == (None, 0)
    assert outcome(rule, m) == "pass"


async def test_sessions_that_reached_the_service_and_failed_still_count(
    aiohttp_server: Serve,
) -> None:
    server = Tracker(fail_all=True)
    url = await aiohttp_server(server.app())
    canary = CanaryUser(held("0s"), Target(url), window=60, backoff=QUICK)
    await canary.start()
    await eventually(lambda: canary.measurement().failed >= 1)
    canary.use(Target(nothing_listens()))
    await eventually(lambda: canary.unreached is not None)
    await canary.stop()
    m = canary.measurement()
    assert m.error is None  # a 1011 the service sent is evidence, whatever came after
    assert m.close_codes == {1011: m.done}
    assert outcome(held("0s"), m) == "fail"


async def test_rounds_that_cannot_connect_say_so_and_fail_nothing() -> None:
    rules = [held("0s", sessions=2), http_rule(requests=2, concurrency=1)]
    rounds = ProbeRounds(rules, Target(nothing_listens()), interval=3600)
    await rounds.start()
    await eventually(lambda: rounds.rounds == 1)
    await rounds.stop()
    for m in rounds.measurements().values():
        assert (m.done, m.failed) == (0, 0), m
        assert m.error is not None
        assert "2 of 2 attempts could not reach the service" in m.error


def test_attempts_that_reached_the_service_are_judged_without_those_that_did_not() -> None:
    unreached = Attempt(ok=False, cause=UNREACHED, detail="could not connect: refused")
    closed = Attempt(ok=False, cause="close_code", close_code=1011, detail="1011")
    m = ProbeMeasurement(
        rule="chat",
        kind="websocket",
        planned=4,
        done=4,
        succeeded=1,
        failures_by_cause={UNREACHED: 2, "close_code": 1},
        close_codes={1011: 1},
        samples=(unreached, closed, unreached),
        complete=True,
    )
    kept = without_unreached(m)
    assert (kept.planned, kept.done, kept.succeeded, kept.failed) == (2, 2, 1, 1)
    assert kept.failures_by_cause == {"close_code": 1}
    assert kept.samples == (closed,)
    assert kept.error is None
    alone = without_unreached(
        ProbeMeasurement(
            rule="chat",
            kind="websocket",
            planned=2,
            done=2,
            succeeded=1,
            failures_by_cause={UNREACHED: 1},
            samples=(unreached,),
            complete=True,
        )
    )
    assert (alone.done, alone.failed) == (1, 0)
    assert alone.error == "1 of 2 attempts could not reach the service: could not connect: refused"
    assert without_unreached(kept) is kept


# ----------------------------------------------------------------------------- rounds


async def test_rounds_repeat_at_the_interval(aiohttp_server: Serve) -> None:
    server = Tracker()
    url = await aiohttp_server(server.app())
    rounds = ProbeRounds([held("0s")], Target(url), interval=0.3)
    assert rounds.measurements() == {}
    await rounds.start()
    await eventually(lambda: rounds.rounds >= 3)
    await rounds.stop()
    m = rounds.measurements()["chat"]
    assert (m.complete, m.succeeded) == (True, 1)
    # one session per round; a round starts `interval` after the previous one started
    gaps = [b - a for a, b in zip(server.opened_at, server.opened_at[1:], strict=False)]
    assert len(gaps) >= 2
    assert all(gap >= 0.3 * 0.95 for gap in gaps)


async def test_a_round_longer_than_the_interval_delays_the_next(aiohttp_server: Serve) -> None:
    server = Tracker()
    url = await aiohttp_server(server.app())
    rule = held("0.2s", sessions=2, concurrency=2)
    rounds = ProbeRounds([rule], Target(url), interval=0.01)
    await rounds.start()
    await eventually(lambda: rounds.rounds >= 3)
    await rounds.stop()
    assert server.most == 2  # never two rounds' sessions at once
    assert rounds.measurements()["chat"].succeeded == 2


async def test_a_failing_round_shows_its_failure_before_it_ends(aiohttp_server: Serve) -> None:
    server = Tracker(fail=("1",))  # chat's session 1 closes with 1011; the others hold
    url = await aiohttp_server(server.app())
    heard: list[ProbeMeasurement] = []
    rule = held("60s", sessions=3, concurrency=1)
    quick = held("0s", query={"n": "quick-{n}"}).model_copy(update={"name": "quick"})
    rounds = ProbeRounds([rule, quick], Target(url), interval=3600, changed=heard.append)
    await rounds.start()
    await eventually(lambda: "chat" in rounds.measurements())
    m = rounds.measurements()["chat"]
    assert (m.failed, m.complete, m.close_codes) == (1, False, {1011: 1})
    assert [h.failed for h in heard if h.rule == "chat"] == [1]  # told at once
    assert outcome(rule, m) == "fail"
    await eventually(lambda: "quick" in rounds.measurements())  # its final snapshot
    assert rounds.measurements()["quick"].complete
    assert any(h.rule == "quick" and h.complete for h in heard)
    assert rounds.rounds == 0  # the round still runs: chat holds its second session
    await rounds.stop()
    assert client_tasks() == []
    await eventually(lambda: server.open == 0, within=5)


async def test_retarget_cuts_the_running_round_and_starts_another(aiohttp_server: Serve) -> None:
    slow, dead = Tracker(), Tracker(fail_all=True)
    slow_url, dead_url = await aiohttp_server(slow.app()), await aiohttp_server(dead.app())
    rounds = ProbeRounds([held("60s", sessions=2, concurrency=2)], Target(slow_url), interval=3600)
    await rounds.start()
    await eventually(lambda: slow.open == 2)
    rounds.retarget(Target(dead_url))
    await eventually(lambda: slow.open == 0, within=5)
    await eventually(lambda: rounds.rounds == 1)  # the new round, on the new target
    await rounds.stop()
    m = rounds.measurements()["chat"]
    assert (m.complete, m.done, m.close_codes) == (True, 2, {1011: 2})
    assert (slow.total, dead.total) == (2, 2)


async def test_retarget_between_rounds_starts_one_at_once(chat_server: ChatFactory) -> None:
    first, second = await chat_server(), await chat_server()
    rounds = ProbeRounds([ws_rule(sessions=2)], Target(first.url), interval=3600)
    await rounds.start()
    await eventually(lambda: rounds.rounds == 1)
    rounds.retarget(Target(second.url))
    assert rounds.measurements() == {}  # the old target's results are not the new one's
    await eventually(lambda: rounds.rounds == 2)
    await rounds.stop()
    assert (first.state.connections_total, second.state.connections_total) == (2, 2)


def test_rounds_refuse_a_rule_that_is_not_a_probe() -> None:
    rule = Rule.model_validate(
        {"name": "logs", "kind": "logs", "logs": {"patterns": ["close code 1011"]}}
    )
    with pytest.raises(ConfigError, match="not a probe"):
        ProbeRounds([rule], Target("http://127.0.0.1:9"), interval=60)
