"""How a rule's attempts are shared out: every session once, users never split, K/N parsed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from probe_helpers import http_rule, ws_rule

from deploy_guard.errors import ConfigError
from deploy_guard.probes.runner import planned_attempts, run_rule
from deploy_guard.probes.shard import WHOLE, Shard, idle_note, parse_shard
from deploy_guard.probes.target import Target


@given(st.integers(1, 300), st.integers(1, 40), st.integers(1, 12))
def test_the_shards_run_every_session_once_with_the_users_of_one_run(
    sessions: int, concurrency: int, count: int
) -> None:
    workers = min(concurrency, sessions)
    ran: list[tuple[int, int]] = []  # (session n, its worker) over every shard
    for index in range(count):
        shard = Shard(index, count)
        mine = [(n, k) for k in shard.workers(workers) for n in range(k, sessions + 1, workers)]
        assert len(mine) == shard.attempts(sessions, workers)
        ran += mine
    # each session once, run by the worker (user-<k>) that runs it in an unsharded run
    assert sorted(ran) == [(n, (n - 1) % workers + 1) for n in range(1, sessions + 1)]
    users_per_shard = [set(Shard(i, count).workers(workers)) for i in range(count)]
    assert sum(len(u) for u in users_per_shard) == workers  # no user in two shards


def test_a_rules_share_is_planned_per_shard() -> None:
    rule = ws_rule(sessions=10, concurrency=4)
    shares = [planned_attempts(rule, Shard(i, 3)) for i in range(3)]
    assert shares == [5, 3, 2]  # workers 1+4 | 2 | 3: sessions 1,5,9,4,8 | 2,6,10 | 3,7
    assert planned_attempts(rule) == planned_attempts(rule, WHOLE) == 10
    health = http_rule(requests=7, concurrency=2)
    assert [planned_attempts(health, Shard(i, 2)) for i in range(2)] == [4, 3]


def test_a_shard_past_the_workers_runs_nothing_and_says_so() -> None:
    assert planned_attempts(ws_rule(sessions=10, concurrency=2), Shard(3, 4)) == 0
    note = idle_note("chat", 2, Shard(3, 4))
    assert note is not None
    assert "2 workers (concurrency) for 4 shards" in note
    assert idle_note("chat", 2, Shard(1, 4)) is None


async def test_a_shard_runs_only_its_session_numbers(
    served: Callable[[web.Application], Awaitable[str]],
) -> None:
    """Against a real server: shard 1/3 of 10 sessions at concurrency 4 sends n = 2, 6, 10."""

    seen: list[tuple[str, str]] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        message = await sock.receive_json()
        seen.append((message["n"], message["user"]))
        await sock.send_json({"type": "done"})
        async for _ in sock:
            pass
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    url = await served(app)
    scenario = [{"send": {"json": {"n": "{n}", "user": "{user}"}}}, {"expect": ["done"]}]
    rule = ws_rule(path="/ws", scenario=scenario, sessions=10, concurrency=4, isolation=None)
    snapshots = [m async for m in run_rule(rule, Target(url), shard=Shard(1, 3))]
    last = snapshots[-1]
    assert (last.planned, last.done, last.succeeded, last.complete) == (3, 3, 3, True)
    assert sorted(seen) == [("10", "user-2"), ("2", "user-2"), ("6", "user-2")]


@pytest.mark.parametrize(
    ("text", "env", "shard"),
    [
        ("0/1", {}, Shard(0, 1)),
        ("2/3", {}, Shard(2, 3)),
        (" 1 / 4 ", {}, Shard(1, 4)),
        ("auto", {"CLOUD_RUN_TASK_INDEX": "4", "CLOUD_RUN_TASK_COUNT": "10"}, Shard(4, 10)),
    ],
)
def test_shards_are_read_from_the_flag_or_cloud_run(
    text: str, env: dict[str, str], shard: Shard
) -> None:
    assert parse_shard(text, env) == shard


@pytest.mark.parametrize(
    ("text", "env", "words"),
    [
        ("3/3", {}, "K counts from 0, as CLOUD_RUN_TASK_INDEX does: 0/3 .. 2/3"),
        ("1", {}, "expected K/N"),
        ("a/b", {}, "whole numbers"),
        ("0/0", {}, "N must be between 1 and 10000"),
        ("auto", {}, "outside a job pass --shard K/N"),
        ("auto", {"CLOUD_RUN_TASK_INDEX": "9", "CLOUD_RUN_TASK_COUNT": "3"}, "K counts from 0"),
    ],
)
def test_a_wrong_shard_is_a_usage_error(text: str, env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_shard(text, env)
