"""Ramp and rate in the runner, against real local WebSocket and HTTP servers.

No assertion here reads how fast the machine is: the pacer's own start times
are spaced by the rule (it computes and waits for each), and what the server
saw is checked against lower bounds that a loaded machine can only satisfy
more easily (a start seen at ``t`` was made before ``t``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from pacing_helpers import Starts, no_faster_than
from probe_helpers import http_rule, ws_rule

from deploy_guard.policy.pacing import Pacing
from deploy_guard.probes.pacer import JITTER, Pacer, allowance_for_jitter
from deploy_guard.probes.runner import pacer_for, planned_attempts, run_rule
from deploy_guard.probes.shard import Shard
from deploy_guard.probes.target import Target
from waiting import eventually

Serve = Callable[[web.Application], Awaitable[str]]
USER_QUERY = {"user": "{user}", "n": "{n}"}


@pytest.fixture
def admitted(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The start times every :meth:`Pacer.admit` hands out, in order."""
    stamps: list[float] = []
    admit = Pacer.admit

    async def noting(self: Pacer) -> float:
        at = await admit(self)
        stamps.append(at)
        return at

    monkeypatch.setattr(Pacer, "admit", noting)
    return stamps


async def test_sessions_start_at_the_rate_and_never_in_a_burst(
    aiohttp_server: Serve, admitted: list[float]
) -> None:
    server = Starts()
    url = await aiohttp_server(server.app())
    rule = ws_rule(
        path="/ws", sessions=12, concurrency=4, rate="50/s", scenario=[], query=USER_QUERY
    )
    before = time.monotonic()
    final = [m async for m in run_rule(rule, Target(url))][-1]
    assert (final.done, final.succeeded) == (12, 12)
    assert len(server.starts) == 12  # every planned session ran, exactly once
    assert len(admitted) == 12
    gaps = [b - a for a, b in itertools.pairwise(admitted)]
    assert min(gaps) >= 1 / 50 - allowance_for_jitter(50) - 1e-9, gaps  # never a burst
    assert no_faster_than(server.times(), 50, before) == []
    # the rate only delays starts: user k still runs sessions k, k+4, k+8
    runs = {(s.user, s.n) for s in server.starts}
    assert runs == {(f"user-{k}", n) for k in range(1, 5) for n in range(k, 13, 4)}


async def test_http_requests_start_at_the_rate(aiohttp_server: Serve) -> None:
    server = Starts()
    url = await aiohttp_server(server.app())
    rule = http_rule(path="/health", requests=10, concurrency=3, rate="60/s")
    before = time.monotonic()
    final = [m async for m in run_rule(rule, Target(url))][-1]
    assert (final.done, final.succeeded) == (10, 10)
    assert len(server.starts) == 10
    assert no_faster_than(server.times(), 60, before) == []


async def test_users_join_along_the_ramp(aiohttp_server: Serve) -> None:
    """At every start, the users with a session open never exceed the ramp's allowance."""
    server = Starts()
    url = await aiohttp_server(server.app())
    rule = ws_rule(
        path="/ws",
        sessions=10,
        concurrency=5,
        ramp="400ms",
        hold="150ms",
        scenario=[],
        query=USER_QUERY,
    )
    assert rule.websocket is not None
    pacing = Pacing.of(rule.websocket)
    before = time.monotonic()
    final = [m async for m in run_rule(rule, Target(url))][-1]
    assert (final.done, final.succeeded) == (10, 10)
    assert len(server.starts) == 10
    seen: set[str] = set()
    for start in sorted(server.starts, key=lambda s: s.at):
        seen.add(start.user)
        allowed = pacing.allowance(start.at - before)  # the run began after `before`
        assert start.open_users <= len(seen) <= allowed, (start, allowed)
    first = {}
    for start in server.starts:
        first.setdefault(start.user, start.at)
    for k in range(1, 6):  # user k's first session no sooner than its place on the ramp
        assert first[f"user-{k}"] >= before + pacing.user_start(k) - 1e-6
    runs = {(s.user, s.n) for s in server.starts}
    assert runs == {(f"user-{k}", n) for k in range(1, 6) for n in (k, k + 5)}


async def test_ramp_and_rate_together(aiohttp_server: Serve, admitted: list[float]) -> None:
    server = Starts()
    url = await aiohttp_server(server.app())
    rule = ws_rule(
        path="/ws",
        sessions=8,
        concurrency=4,
        ramp="150ms",
        rate="40/s",
        scenario=[],
        query=USER_QUERY,
    )
    assert rule.websocket is not None
    pacing = Pacing.of(rule.websocket)
    before = time.monotonic()
    final = [m async for m in run_rule(rule, Target(url))][-1]
    assert final.succeeded == 8
    assert no_faster_than(server.times(), 40, before) == []
    seen: set[str] = set()
    for start in sorted(server.starts, key=lambda s: s.at):
        seen.add(start.user)
        assert len(seen) <= pacing.allowance(start.at - before)
    assert min(b - a for a, b in itertools.pairwise(admitted)) >= 1 / 40 - JITTER - 1e-9


async def test_a_stalled_loop_is_not_followed_by_a_burst() -> None:
    """Starts that fall behind the rate stay behind it: the opener never catches up."""
    pacer = Pacer(Pacing(count=10, concurrency=10, rate=100.0))
    stamps = [await pacer.admit()]
    time.sleep(0.05)  # noqa: ASYNC251 - the loop stuck for five intervals: a busy machine
    stamps += [await pacer.admit() for _ in range(4)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[0] >= 0.05  # the late start is late...
    assert min(gaps[1:]) >= 0.01 - JITTER - 1e-9  # ...and the ones after it do not catch up
    # by any moment, no more starts than the rate allows since the first
    assert all(at >= stamps[0] + j * 0.01 - 1e-9 for j, at in enumerate(stamps))


async def test_waiting_starts_take_their_turns_in_order() -> None:
    pacer = Pacer(Pacing(count=6, concurrency=6, rate=200.0))
    order: list[int] = []

    async def start(k: int) -> float:
        at = await pacer.admit()
        order.append(k)
        return at

    stamps = await asyncio.gather(*(start(k) for k in range(6)))
    assert order == list(range(6))
    assert list(stamps) == sorted(stamps)
    assert min(b - a for a, b in itertools.pairwise(stamps)) >= 1 / 200 - 1 / 400 - 1e-9
    assert all(at >= stamps[0] + j / 200 - 1e-9 for j, at in enumerate(stamps))


async def test_an_unpaced_rule_has_no_pacer() -> None:
    rule = ws_rule(sessions=4, concurrency=2)
    assert rule.websocket is not None
    assert Pacer.for_spec(rule.websocket) is None
    one_user = ws_rule(sessions=4, concurrency=1, ramp="1s")  # nothing to raise
    assert one_user.websocket is not None
    assert Pacer.for_spec(one_user.websocket) is None


async def test_each_of_n_shards_takes_its_share_of_the_rate() -> None:
    """N shards of one rule start sessions at the rule's rate together, not N times it."""
    rule = ws_rule(sessions=30, concurrency=6, rate="300/s", ramp="1s")
    assert rule.websocket is not None
    whole = Pacer.for_spec(rule.websocket)
    third = Pacer.for_spec(rule.websocket, share=1 / 3)
    assert whole is not None
    assert third is not None
    assert whole.pacing.rate == 300
    assert third.pacing.rate == pytest.approx(100)
    assert third.pacing.ramp == whole.pacing.ramp  # the ramp's schedule is per user: unchanged


@pytest.mark.parametrize(
    ("sessions", "concurrency", "count"),
    [(10, 4, 3), (20, 2, 4), (9, 3, 2), (30, 6, 3)],
)
async def test_shards_start_at_the_rules_rate_together_and_end_with_one_run(
    sessions: int, concurrency: int, count: int
) -> None:
    """Each shard's rate is its share of the attempts: uneven workers (4 over 3 shards) or
    shards with none (2 workers, 4 shards) neither slow the run nor leave rate unused."""
    rule = ws_rule(sessions=sessions, concurrency=concurrency, rate="100/s")
    rates, ends = [], []
    for index in range(count):
        shard = Shard(index, count)
        pacer = pacer_for(rule, shard)
        if planned_attempts(rule, shard) == 0:
            assert pacer is None  # no attempts, no rate taken
            continue
        assert pacer is not None
        assert pacer.pacing.rate is not None
        rates.append(pacer.pacing.rate)
        ends.append(planned_attempts(rule, shard) / pacer.pacing.rate)
    assert sum(rates) == pytest.approx(100)
    assert ends == pytest.approx([sessions / 100] * len(ends))


async def test_closing_the_stream_does_not_wait_for_the_rate(aiohttp_server: Serve) -> None:
    """Workers waiting for their turn (one a minute) are cancelled at once, sockets closed."""
    server = Starts()
    url = await aiohttp_server(server.app())
    rule = ws_rule(path="/ws", sessions=5, concurrency=5, rate="1/m", scenario=[], query=USER_QUERY)
    async with asyncio.timeout(30):  # a hang, not a speed: the turn after the first is 60 s away
        async with contextlib.aclosing(run_rule(rule, Target(url))) as stream:
            async for m in stream:
                if m.done:
                    break
    assert len(server.starts) == 1
    await eventually(lambda: not any(server._open.values()), what="the session closed")
