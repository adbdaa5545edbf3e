"""The watch's live logs source through its own seams: a stream and a reader fed by hand.

:class:`LiveLogs` takes the stream (``tail``) and the ``ListLogEntries`` pass
(``lister``) as plain callables, the seam production fills with the official
client (:mod:`deploy_guard.gcp.tailstream`). Here they are small fakes driven by
the test, so every transition (refused, broken, resumed, suppressed, a failing
read) happens on cue; ``test_tail_source_emulator.py`` runs the same source over
real gRPC against the emulator. The gRPC errors are google-api-core's real
exception types.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from structlog.testing import capture_logs

from deploy_guard.errors import ApiError
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.livecount import LiveCounts
from deploy_guard.gcp.logs import Entry
from deploy_guard.gcp.tail import Backoff, LiveLogs
from deploy_guard.gcp.tailstream import Listed, TailBatch
from deploy_guard.policy.model import Rule
from waiting import eventually

CAND, BASE = "chat-00002-new", "chat-00001-old"
NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.0, stable=3600)


def logs_rule(name: str = "no-1011", **logs: Any) -> Rule:
    spec: dict[str, Any] = {
        "filter": "severity>=ERROR",
        "patterns": ["close code 1011", "orchestrator.*NoneType"],
    }
    spec.update(logs)
    return Rule.model_validate({"name": name, "kind": "logs", "logs": spec})


def entry(key: str, at: datetime, text: str, revision: str = CAND) -> Entry:
    return Entry(key=key, revision=revision, timestamp=at, severity="ERROR", text=text)


BAD = "orchestrator is None: 'NoneType' object has no attribute 'run'; close code 1011"


class FakeTail:
    """Each open is one stream: it fails at once if a failure is queued, else it streams
    what the test puts (an exception put ends it as a break)."""

    def __init__(self) -> None:
        self.filters: list[str] = []
        self.refusals: list[BaseException] = []
        self.feed: asyncio.Queue[TailBatch | BaseException] = asyncio.Queue()
        self.open = 0

    async def __call__(self, flt: str, keep_doc: bool) -> AsyncIterator[TailBatch]:
        self.filters.append(flt)
        if self.refusals:
            raise self.refusals.pop(0)
        self.open += 1
        try:
            while True:
                item = await self.feed.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.open -= 1


class FakeLister:
    """A log store read by ``timestamp>=``: what ListLogEntries would answer."""

    def __init__(self) -> None:
        self.store: list[Entry] = []
        self.failures: list[Exception] = []
        self.filters: list[str] = []
        self.times: list[float] = []

    async def __call__(self, flt: str, keep_doc: bool, deadline: float) -> Listed:
        self.filters.append(flt)
        self.times.append(asyncio.get_running_loop().time())
        if self.failures:
            raise self.failures.pop(0)
        found = re.search(r'timestamp>="([^"]+)"', flt)
        assert found, flt
        since = datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        revisions = set(re.findall(r'revision_name="([^"]+)"', flt))
        return Listed([e for e in self.store if e.timestamp >= since and e.revision in revisions])


@pytest.fixture
async def live() -> AsyncIterator[Any]:
    """``make(**kwargs)`` -> (LiveLogs, FakeTail, FakeLister); every source is stopped."""
    made: list[LiveLogs] = []

    def make(rules: list[Rule] | None = None, **kwargs: Any) -> tuple[LiveLogs, Any, Any]:
        tail, lister = FakeTail(), FakeLister()
        options: dict[str, Any] = {
            "project": "proj",
            "service": "chat",
            "revision": CAND,
            "rules": rules or [logs_rule()],
            "since": NOW - timedelta(minutes=30),
            "window": 120.0,
            "interval": 0.05,
            "backoff": FAST,
            "confirm_after": 3600.0,  # tailing is confirmed by a batch, never by the clock
            "tail": tail,
            "lister": lister,
            "now": lambda: NOW,  # the source's clock, whenever the test runs
            **kwargs,
        }
        source = LiveLogs(Clients(), **options)
        made.append(source)
        return source, tail, lister

    yield make
    for source in made:
        await source.stop()


async def test_streamed_entries_are_judged_over_a_sliding_window(live: Any) -> None:
    rate = logs_rule("rate", max_rate=1)
    source, tail, _ = live([logs_rule(), rate])
    await source.start()
    await eventually(lambda: tail.open == 1, what="the stream opened")
    old, recent = NOW - timedelta(seconds=200), NOW - timedelta(seconds=30)
    await tail.feed.put(
        TailBatch([entry("a", old, BAD), entry("b", recent, BAD), entry("c", recent, "fine")])
    )
    await eventually(lambda: source.counts.counter.ids == 3, what="the batch counted")
    m = source.measure(logs_rule(), NOW)
    assert source.mode == "tail"
    assert m.error is None
    assert m.matches == {"close code 1011": 1, "orchestrator.*NoneType": 1}  # "a" is too old
    assert m.entries_scanned == 2
    assert 120 <= m.window_seconds < 121  # the window, on a bucket boundary
    assert [s["text"] for s in m.samples] == [BAD]
    wide = source.measure(rate, NOW + timedelta(seconds=1000), window=60)
    assert wide.total == 0  # it slides: nothing in the last minute
    assert len(tail.filters) == 1  # ONE stream for both rules, one filter naming both
    assert 'revision_name="chat-00002-new"' in tail.filters[0]
    assert tail.filters[0].count('textPayload=~"close code 1011"') == 2  # once per rule


async def test_baseline_revisions_are_counted_in_the_same_window(live: Any) -> None:
    rule = logs_rule(relative_to_baseline=2.0)
    source, tail, _ = live([rule], baseline=[BASE])
    await source.start()
    await eventually(lambda: tail.open == 1)
    at = NOW - timedelta(seconds=10)
    batch = [entry(f"c{i}", at, BAD) for i in range(3)]
    batch.append(entry("b0", at, BAD, revision=BASE))
    await tail.feed.put(TailBatch(batch))
    await eventually(lambda: source.counts.counter.ids == 4)
    m = source.measure(rule, NOW)
    assert m.total == 6  # three entries, each matching both patterns
    assert m.baseline_matches == {"close code 1011": 1, "orchestrator.*NoneType": 1}
    assert m.baseline_window_seconds == m.window_seconds
    assert BASE in tail.filters[0]


async def test_the_window_s_past_is_read_once_at_start_and_a_re_read_counts_once(
    live: Any,
) -> None:
    source, tail, lister = live()
    earlier = entry("e1", NOW - timedelta(seconds=50), BAD)
    lister.store.append(earlier)
    await source.start()
    await eventually(lambda: source.status().reads == 1, what="the start-up read")
    await eventually(lambda: tail.open == 1)
    await tail.feed.put(TailBatch([earlier]))  # the stream brings it again
    await tail.feed.put(TailBatch([entry("e2", NOW, BAD)]))
    await eventually(lambda: source.counts.counter.ids == 2)
    assert source.measure(logs_rule(), NOW + timedelta(seconds=1)).total == 4  # 2 entries x 2
    assert source.status().reads == 1  # tailing: no polling


@pytest.mark.fault(
    "logs",
    "TailLogEntries refused with RESOURCE_EXHAUSTED (10 live sessions per project)",
    "the watch's logs fall back to ListLogEntries polling, says so, and tails again later",
)
async def test_a_refused_tail_falls_back_to_polling_and_tails_again_later(live: Any) -> None:
    source, tail, lister = live()
    tail.refusals = [gexc.ResourceExhausted("Quota exceeded for live tail sessions")] * 3
    with capture_logs() as events:
        await source.start()
        await eventually(lambda: source.mode == "poll", what="the fallback")
        reason = source.fallback_reason
        assert reason is not None
        assert "RESOURCE_EXHAUSTED" in reason
        assert "10 live-tailing sessions" in reason
        lister.store.append(entry("p1", NOW - timedelta(seconds=5), BAD))
        await eventually(lambda: source.counts.counter.ids == 1, what="a poll counted it")
        # Three refusals, then a stream that answers: tailing again.
        await eventually(lambda: tail.open == 1, what="the retry opened a stream")
        await tail.feed.put(TailBatch([entry("t1", NOW, BAD)]))
        await eventually(lambda: source.mode == "tail", what="tailing again")
    status = source.status()
    assert status.fallbacks == 1  # one fallback, however many refused retries
    assert status.fallback_reason is None
    assert len(tail.filters) == 4
    names = [e["event"] for e in events if e["event"].startswith("live_logs")]
    assert names.count("live_logs_fallback") == 1
    assert names.count("live_logs_tail_retry_failed") == 2  # each says when it tries again
    assert "live_logs_tail_resumed" in names
    fallback = next(e for e in events if e["event"] == "live_logs_fallback")
    assert fallback["log_level"] == "warning"
    assert fallback["mode"] == "poll"
    assert fallback["retry_tail_in_s"] >= 0
    # The read quota: never two passes less than ``interval`` apart.
    gaps = [b - a for a, b in zip(lister.times, lister.times[1:], strict=False)]
    assert all(g >= source.interval * 0.999 for g in gaps), gaps


@pytest.mark.fault(
    "logs",
    "the live tail breaks mid-stream (UNAVAILABLE)",
    "polling covers the gap (entries counted once), the tail is reopened with back-off",
)
async def test_a_broken_stream_falls_back_and_nothing_falls_into_the_gap(live: Any) -> None:
    source, tail, lister = live()
    await source.start()
    await eventually(lambda: tail.open == 1)
    await tail.feed.put(TailBatch([entry("s1", NOW - timedelta(seconds=20), BAD)]))
    gap = entry("gap", NOW - timedelta(seconds=10), BAD)  # arrives while no stream is open
    tail.refusals = [gexc.ServiceUnavailable("connection reset")]
    await tail.feed.put(gexc.ServiceUnavailable("stream reset by peer"))
    await eventually(lambda: source.mode == "poll")
    assert "UNAVAILABLE" in (source.fallback_reason or "")
    lister.store.append(gap)
    await eventually(lambda: tail.open == 1, what="the stream reopened")
    await eventually(lambda: source.counts.counter.ids == 2, what="the gap read")
    await tail.feed.put(TailBatch([gap]))  # the stream sends it too: still counted once
    await eventually(lambda: source.mode == "tail")
    assert source.measure(logs_rule(), NOW).total == 4


@pytest.mark.fault(
    "logs",
    "the live tail is down and ListLogEntries fails too (a Logging outage)",
    "the logs rules' measurements carry an error (degraded), never a pass or a fail",
)
async def test_a_failing_read_while_polling_is_an_error_until_a_read_succeeds(
    live: Any,
) -> None:
    source, tail, lister = live()
    tail.refusals = [gexc.ServiceUnavailable("down")] * 100
    lister.failures = [ApiError("reading logs: Google answered UNAVAILABLE")] * 2
    await source.start()
    await eventually(lambda: source.measure(logs_rule(), NOW).error is not None)
    error = source.measure(logs_rule(), NOW).error
    assert error is not None
    assert "live tail is down" in error
    assert "UNAVAILABLE" in error
    await eventually(lambda: source.measure(logs_rule(), NOW).error is None, what="a good read")
    assert source.mode == "poll"
    assert source.status().read_error is None


async def test_entries_the_server_left_out_are_read_back(live: Any) -> None:
    source, tail, lister = live()
    await source.start()
    await eventually(lambda: source.status().reads == 1 and tail.open == 1)
    lost = entry("lost", NOW - timedelta(seconds=3), BAD)
    lister.store.append(lost)
    with capture_logs() as events:
        await tail.feed.put(TailBatch([], suppressed=1, reasons=("RATE_LIMIT",)))
        await eventually(lambda: source.counts.counter.ids == 1, what="the catch-up read")
    assert source.mode == "tail"
    assert source.status().suppressed == 1
    suppressed = [e for e in events if e["event"] == "live_logs_suppressed"]
    assert suppressed
    assert suppressed[0]["reasons"] == ["RATE_LIMIT"]


async def test_a_new_revision_is_watched_on_a_new_stream(live: Any) -> None:
    source, tail, _ = live(baseline=[BASE])
    await source.start()
    await eventually(lambda: tail.open == 1)
    newer = "chat-00003-newer"
    source.retarget(newer, [CAND], since=NOW - timedelta(seconds=60))
    await eventually(lambda: len(tail.filters) == 2 and tail.open == 1, what="reopened")
    assert newer in tail.filters[1]
    assert BASE not in tail.filters[1]
    await tail.feed.put(TailBatch([entry("n1", NOW, BAD, revision=newer)]))
    await eventually(lambda: source.counts.counter.ids == 1)
    m = source.measure(logs_rule(), NOW + timedelta(seconds=1))
    assert m.total == 2
    assert m.baseline_matches == {"close code 1011": 0, "orchestrator.*NoneType": 0}
    assert m.window_seconds <= 62  # the new revision's own window
    source.retarget(newer, [CAND])  # the same revisions: the stream stays
    assert len(tail.filters) == 2


def test_counting_stays_bounded_however_long_the_stream_runs() -> None:
    rule = logs_rule()
    origin = NOW.timestamp()
    counts = LiveCounts([rule], origin=origin, window=300.0, max_ids=1_000)
    for i in range(40_000):  # 11 hours of one matching entry a second
        at = NOW + timedelta(seconds=i)
        counts.add(entry(f"id-{i}", at, BAD))
    c = counts.counter
    assert c.buckets <= c.horizon / c.bucket + 2
    assert c.ids <= 1_000
    end = (NOW + timedelta(seconds=40_000)).timestamp()
    start = counts.window_start(origin, end, 300.0)
    m = counts.measurement(
        rule, revision=CAND, baseline=[], start=start, until=end, complete=True, error=None
    )
    assert m.matches["close code 1011"] == 300
    assert len(m.samples) == 3
