"""The watch's live logs source over real gRPC: the official client against the emulator.

The same :class:`~deploy_guard.gcp.tail.LiveLogs` as ``test_tail_source.py``,
with its production seams (:mod:`deploy_guard.gcp.tailstream`): entries a
revision logs reach it through the emulator's ``TailLogEntries``; faults come
from the emulator's injector. The 10-sessions-per-project limit is the
emulator's to enforce: the test for it skips, saying so, on an emulator that
does not refuse the 11th stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from deploy_guard.emulator.contracts import RevisionRef
from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.tail import Backoff, LiveLogs
from deploy_guard.gcp.tailstream import TAIL_SESSIONS_PER_PROJECT, GrpcTail
from deploy_guard.policy.model import Rule
from waiting import eventually

CAND = "chat-00002-new"
FAST = Backoff(initial=0.1, maximum=0.3, jitter=0.0, stable=3600)
RULE = Rule.model_validate(
    {
        "name": "no-1011",
        "kind": "logs",
        "logs": {
            "filter": "severity>=ERROR",
            "patterns": ["close code 1011", "orchestrator.*NoneType"],
        },
    }
)
BAD = "orchestrator is None: 'NoneType' object has no attribute 'run'; closing with close code 1011"
_serial = itertools.count()


def say(emulator: EmulatorThread, severity: str, message: str, revision: str = CAND) -> None:
    """One JSON line on the revision's stdout, as the chat app logs it."""
    ref = RevisionRef(emulator.project, emulator.region, "chat", revision, "chat")
    line = json.dumps({"severity": severity, "message": message, "n": next(_serial)})
    emulator.logs.revision_output(ref, "stdout", line, datetime.now(UTC))


@pytest.fixture
async def live(emulator: EmulatorThread, gcp_clients: Clients) -> AsyncIterator[Any]:
    made: list[LiveLogs] = []

    def make(**kwargs: Any) -> LiveLogs:
        options: dict[str, Any] = {
            "project": emulator.project,
            "service": "chat",
            "revision": CAND,
            "rules": [RULE],
            "since": datetime.now(UTC) - timedelta(minutes=5),
            "interval": 0.2,
            "backoff": FAST,
            "confirm_after": 0.5,
            **kwargs,
        }
        source = LiveLogs(gcp_clients, **options)
        made.append(source)
        return source

    yield make
    for source in made:
        await source.stop()


async def bad_lines_until(emulator: EmulatorThread, source: LiveLogs, n: int) -> None:
    """Log bad lines (and noise) until ``n`` bad ones are counted: the stream connects lazily."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while source.measure(RULE, datetime.now(UTC)).matches["close code 1011"] < n:
        say(emulator, "ERROR", BAD)
        say(emulator, "INFO", "close code 1011 at INFO: not an error")  # the filter drops it
        assert loop.time() < deadline, f"{n} bad lines never counted ({source.status()})"
        await asyncio.sleep(0.05)


async def test_a_revision_s_log_lines_stream_in_and_count_with_no_polling(
    live: Any, emulator: EmulatorThread
) -> None:
    say(emulator, "ERROR", BAD)  # before the watch: the start-up read finds it
    source = live()
    await source.start()
    await eventually(lambda: source.status().reads == 1, what="the start-up read")
    await bad_lines_until(emulator, source, 5)
    m = source.measure(RULE, datetime.now(UTC))
    assert m.error is None
    assert m.entries_scanned == m.matches["close code 1011"]  # the INFO lines never came
    assert source.mode == "tail"
    assert source.status().reads == 1  # tailing: the read quota is left alone
    assert emulator.faults.count("TailLogEntries") == 1
    assert emulator.faults.count("ListLogEntries") == 1
    assert source.calls.get("logging", "TailLogEntries") == 1


@pytest.mark.fault(
    "logs",
    "the emulator's TailLogEntries answers RESOURCE_EXHAUSTED twice",
    "the watch's logs poll ListLogEntries meanwhile (nothing missed) and tail again",
)
async def test_refused_tailing_polls_the_emulator_then_tails_again(
    live: Any, emulator: EmulatorThread
) -> None:
    emulator.faults.fail("TailLogEntries", grpc.StatusCode.RESOURCE_EXHAUSTED, times=2)
    source = live()
    await source.start()
    await eventually(lambda: source.status().fallbacks == 1, what="the fallback")
    assert "RESOURCE_EXHAUSTED" in (source.fallback_reason or "")
    await bad_lines_until(emulator, source, 3)
    await eventually(lambda: source.mode == "tail", within=15, what="tailing again")
    reads = emulator.faults.count("ListLogEntries")
    assert reads >= 2  # polled while refused
    counted = source.measure(RULE, datetime.now(UTC)).matches["close code 1011"]
    await bad_lines_until(emulator, source, counted + 2)  # and the stream brings new lines
    assert emulator.faults.count("TailLogEntries") == 3


@pytest.mark.fault(
    "logs",
    "a live tail stream ends under the watch (its deadline passes)",
    "falls back to polling, reopens the stream, counts every line once",
)
async def test_a_stream_that_breaks_is_reopened(
    live: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    short = GrpcTail(gcp_clients, emulator.project, session_seconds=0.5)
    source = live(tail=short)
    await source.start()
    await eventually(lambda: source.status().fallbacks >= 1, what="the break")
    assert "DEADLINE_EXCEEDED" in (source.fallback_reason or "")
    await eventually(lambda: source.status().tail_opens >= 2, what="reopened")
    await bad_lines_until(emulator, source, 4)
    lines = emulator.logs.entries('severity>=ERROR AND jsonPayload.message:"close code 1011"')
    counted = source.measure(RULE, datetime.now(UTC)).matches["close code 1011"]
    assert 4 <= counted <= len(lines)  # each line once, however many streams and reads


@pytest.mark.fault(
    "logs",
    "the emulator breaks the live tail after its first response (break:1)",
    "falls back to polling with the break named, reopens, and the counts go on",
)
async def test_a_stream_the_server_breaks_falls_back_and_is_reopened(
    live: Any, emulator: EmulatorThread
) -> None:
    emulator.faults.apply("TailLogEntries=break:1x1")
    source = live()
    await source.start()
    await bad_lines_until(emulator, source, 3)  # the break comes as the 2nd response would
    await eventually(lambda: source.status().fallbacks == 1, what="the break")
    assert "UNAVAILABLE" in (source.status().last_fallback_reason or "")
    await eventually(lambda: source.mode == "tail", within=15, what="reopened")
    counted = source.measure(RULE, datetime.now(UTC)).matches["close code 1011"]
    await bad_lines_until(emulator, source, counted + 2)
    assert emulator.faults.count("TailLogEntries") == 2


@contextlib.asynccontextmanager
async def streams_open(
    clients: Clients, project: str, n: int
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """``n`` other live tails on the project, consumed in the background, closed at the end."""

    async def consume() -> None:
        async for _batch in GrpcTail(clients, project)("severity>=ERROR", False):
            pass

    tasks = [asyncio.ensure_future(consume()) for _ in range(n)]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.fault(
    "logs",
    "an 11th live tail on one project (Cloud Logging allows 10)",
    "the watch's logs fall back to polling with RESOURCE_EXHAUSTED named, and still count",
)
async def test_the_eleventh_live_session_on_a_project_polls_instead(
    live: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    async with streams_open(gcp_clients, emulator.project, TAIL_SESSIONS_PER_PROJECT) as others:
        await eventually(
            lambda: emulator.faults.count("TailLogEntries") >= TAIL_SESSIONS_PER_PROJECT
        )
        source = live()
        await source.start()
        await bad_lines_until(emulator, source, 2)
        if source.status().fallbacks == 0:
            pytest.skip(
                "this emulator does not limit live-tailing sessions per project "
                "(TailLogEntries' session limit comes with the watch-tail work)"
            )
        assert source.mode == "poll"
        assert "RESOURCE_EXHAUSTED" in (source.fallback_reason or "")
        assert not any(t.done() for t in others)
