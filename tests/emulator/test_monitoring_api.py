"""Cloud Monitoring v3 over gRPC: the official MetricServiceClient against the emulator.

The store's clock is pinned, so windows and the reporting delay are exact;
requests are fed as the router would (RequestRecords, counted at their end).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.api import metric_pb2
from google.api_core import exceptions as gexc

from deploy_guard.emulator import monitoring_api
from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.emulator.metricstore import (
    REQUEST_COUNT,
    REQUEST_LATENCIES,
    MetricStore,
    Query,
    distribution,
    percentile,
)
from deploy_guard.gcp.clients import Clients

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OLD = RevisionRef("proj", "europe-west1", "chat", "chat-00001-aaa", "chat")
NEW = RevisionRef("proj", "europe-west1", "chat", "chat-00002-bbb", "chat")
COUNT = 'metric.type = "run.googleapis.com/request_count"'
LATENCY = 'metric.type = "run.googleapis.com/request_latencies"'
ON_NEW = 'resource.type = "cloud_run_revision" AND resource.labels.revision_name = "chat-00002-bbb"'


def record(ref: RevisionRef, status: int, end: datetime, latency_s: float = 0.01) -> RequestRecord:
    return RequestRecord(
        ref=ref,
        method="GET",
        url="http://x/",
        protocol="HTTP/1.1",
        status=status,
        latency_s=latency_s,
        start_time=end - timedelta(seconds=latency_s),
        end_time=end,
    )


def feed(store: MetricStore) -> None:
    """NEW: 90 x 200 and 10 x 503 in the last 5 minutes, latencies 1..100 ms; OLD: 50 x 200."""
    for i in range(100):
        status = 503 if i % 10 == 0 else 200
        store.request(record(NEW, status, NOW - timedelta(seconds=3 * i + 1), (i + 1) / 1000))
    for i in range(50):
        store.request(record(OLD, 200, NOW - timedelta(seconds=2 * i + 1)))


@pytest.fixture
async def served(serve_handlers: Any) -> tuple[MetricStore, Clients]:
    store = MetricStore(clock=lambda: NOW)
    feed(store)
    return store, await serve_handlers(monitoring_api.handlers(store))


def interval(minutes: int = 10) -> dict[str, Any]:
    return {
        "start_time": {"seconds": int((NOW - timedelta(minutes=minutes)).timestamp())},
        "end_time": {"seconds": int(NOW.timestamp())},
    }


async def series(clients: Clients, filter_: str, **extra: Any) -> list[Any]:
    def run() -> list[Any]:
        request = {"name": "projects/proj", "filter": filter_, "interval": interval(), **extra}
        return list(clients.metrics().list_time_series(request=request))

    return await asyncio.to_thread(run)


async def test_request_count_by_class_with_delta_and_sum(served: Any) -> None:
    _store, clients = served
    found = await series(
        clients,
        f"{COUNT} AND {ON_NEW}",
        aggregation={
            "alignment_period": {"seconds": 600},
            "per_series_aligner": "ALIGN_DELTA",
            "cross_series_reducer": "REDUCE_SUM",
            "group_by_fields": ["metric.labels.response_code_class"],
        },
    )
    by_class = {s.metric.labels["response_code_class"]: s for s in found}
    assert set(by_class) == {"2xx", "5xx"}
    total = {k: sum(p.value.int64_value for p in s.points) for k, s in by_class.items()}
    assert total == {"2xx": 90, "5xx": 10}
    assert total["5xx"] / sum(total.values()) == pytest.approx(0.10)
    assert dict(by_class["5xx"].resource.labels) == {}  # reduced away: not grouped by


async def test_filter_by_class_and_rate(served: Any) -> None:
    _store, clients = served
    found = await series(
        clients,
        f'{COUNT} AND {ON_NEW} AND metric.labels.response_code_class = "5xx"',
        aggregation={"alignment_period": {"seconds": 600}, "per_series_aligner": "ALIGN_RATE"},
    )
    assert len(found) == 1
    [point] = found[0].points
    assert point.value.double_value == pytest.approx(10 / 600)
    assert found[0].metric.labels["response_code"] == "503"


async def test_p99_latency_with_percentile_aligner(served: Any) -> None:
    _store, clients = served
    found = await series(
        clients,
        f"{LATENCY} AND {ON_NEW}",
        aggregation={
            "alignment_period": {"seconds": 600},
            "per_series_aligner": "ALIGN_PERCENTILE_99",
            "cross_series_reducer": "REDUCE_PERCENTILE_99",
            "group_by_fields": ["resource.labels.revision_name"],
        },
    )
    assert len(found) == 1
    assert found[0].resource.labels["revision_name"] == "chat-00002-bbb"
    # per-series p99 of 2xx (90 values up to 100 ms) and 5xx; the reducer takes the top
    assert found[0].points[0].value.double_value == pytest.approx(100.0, abs=1.0)


async def test_raw_distribution_points_are_per_minute_and_newest_first(served: Any) -> None:
    _store, clients = served
    found = await series(
        clients, f'{LATENCY} AND {ON_NEW} AND metric.labels.response_code = one_of("200")'
    )
    [only] = found
    ends = [p.interval.end_time for p in only.points]
    assert ends == sorted(ends, reverse=True)
    assert all(
        (p.interval.end_time - p.interval.start_time) == timedelta(seconds=60) for p in only.points
    )
    dists = [p.value.distribution_value for p in only.points]
    assert sum(d.count for d in dists) == 90
    assert all(sum(d.bucket_counts) == d.count for d in dists)
    assert dists[0].bucket_options.exponential_buckets.growth_factor == pytest.approx(1.4)
    assert only.value_type == metric_pb2.MetricDescriptor.DISTRIBUTION


async def test_metrics_delay_hides_recent_points() -> None:
    store = MetricStore(delay_s=120, clock=lambda: NOW)
    store.request(record(NEW, 200, NOW - timedelta(seconds=30)))
    store.request(record(NEW, 200, NOW - timedelta(seconds=300)))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((monitoring_api.handlers(store),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clients = Clients(host=f"127.0.0.1:{port}")
    try:
        found = await series(clients, f"{COUNT} AND {ON_NEW}")
    finally:
        clients.close()
        await server.stop(None)
    assert sum(p.value.int64_value for s in found for p in s.points) == 1


async def test_headers_view_and_paging(served: Any) -> None:
    _store, clients = served

    def pages() -> list[list[Any]]:
        pager = clients.metrics().list_time_series(
            request={
                "name": "projects/proj",
                "filter": f'{COUNT} AND resource.labels.service_name = starts_with("ch")',
                "interval": interval(),
                "view": "HEADERS",
                "page_size": 1,
            }
        )
        return [list(page.time_series) for page in pager.pages]

    result = await asyncio.to_thread(pages)
    assert [len(p) for p in result] == [1, 1, 1]  # OLD 200, NEW 200, NEW 503
    assert all(not s.points for p in result for s in p)


@pytest.mark.parametrize(
    ("filter_", "aggregation", "message"),
    [
        ('resource.type = "cloud_run_revision"', {}, "metric.type"),
        (f"{COUNT} AND bogus.field = 1", {}, "bogus.field"),
        (f"{COUNT} AND (", {}, "filter"),
        (
            COUNT,
            {"alignment_period": {"seconds": 60}, "per_series_aligner": "ALIGN_PERCENTILE_99"},
            "DISTRIBUTION",
        ),
        (COUNT, {"cross_series_reducer": "REDUCE_SUM"}, "per_series_aligner"),
        (COUNT, {"per_series_aligner": "ALIGN_DELTA"}, "alignment_period"),
        pytest.param(
            COUNT,
            {"alignment_period": {"seconds": 60}, "per_series_aligner": 999},
            "ALIGN_#999 is not supported",
            # proto-plus warns about the number on the client side; that is the point.
            marks=pytest.mark.filterwarnings("ignore:Unrecognized Aligner enum value"),
        ),
        (
            COUNT,
            {
                "alignment_period": {"seconds": 60},
                "per_series_aligner": "ALIGN_DELTA",
                "cross_series_reducer": "REDUCE_SUM",
                "group_by_fields": ["response_code"],
            },
            "group_by_fields",
        ),
    ],
)
async def test_unsupported_requests_are_invalid_argument(
    served: Any, filter_: str, aggregation: dict[str, Any], message: str
) -> None:
    _store, clients = served
    with pytest.raises(gexc.InvalidArgument, match=message):
        await series(clients, filter_, aggregation=aggregation)


@pytest.mark.parametrize(
    ("aligner", "seconds"),
    [("ALIGN_DELTA", 59), ("ALIGN_RATE", 1), ("ALIGN_PERCENTILE_99", 30)],
)
async def test_an_alignment_period_under_60_seconds_is_invalid_argument(
    served: Any, aligner: str, seconds: int
) -> None:
    _store, clients = served
    metric = LATENCY if "PERCENTILE" in aligner else COUNT
    aggregation = {"alignment_period": {"seconds": seconds}, "per_series_aligner": aligner}
    with pytest.raises(gexc.InvalidArgument, match="at least 60 seconds"):
        await series(clients, metric, aggregation=aggregation)
    # 60 s is allowed, and without an aligner the period is ignored, as on the real API
    aggregation["alignment_period"] = {"seconds": 60}
    assert await series(clients, metric, aggregation=aggregation)
    assert await series(clients, metric, aggregation={"alignment_period": {"seconds": 1}})


async def test_a_request_ending_on_a_window_boundary_counts_in_the_earlier_window(
    serve_handlers: Any,
) -> None:
    # TimeIntervals are half-open, (start, end]: a request that ends exactly at
    # 11:59:00 belongs to (11:58:00, 11:59:00], in aligned windows as in raw points.
    store = MetricStore(clock=lambda: NOW)
    for seconds_before in (0, 60, 90, 120, 180):  # 180 is the interval's start: outside
        store.request(record(NEW, 200, NOW - timedelta(seconds=seconds_before)))
    clients = await serve_handlers(monitoring_api.handlers(store))

    def windows(aggregation: dict[str, Any]) -> list[tuple[str, str, int]]:
        request = {
            "name": "projects/proj",
            "filter": f"{COUNT} AND {ON_NEW}",
            "interval": interval(minutes=3),
            "aggregation": aggregation,
        }
        [only] = clients.metrics().list_time_series(request=request)
        return [
            (
                f"{p.interval.start_time:%H:%M:%S}",
                f"{p.interval.end_time:%H:%M:%S}",
                p.value.int64_value,
            )
            for p in only.points
        ]

    expected = [
        ("11:59:00", "12:00:00", 1),
        ("11:58:00", "11:59:00", 2),
        ("11:57:00", "11:58:00", 1),
    ]
    aligned = await asyncio.to_thread(
        windows, {"alignment_period": {"seconds": 60}, "per_series_aligner": "ALIGN_DELTA"}
    )
    assert aligned == expected
    assert await asyncio.to_thread(windows, {}) == expected  # raw points agree


async def test_the_project_selector_matches_the_requested_project_only(served: Any) -> None:
    _store, clients = served
    everything = await series(clients, COUNT)
    assert len(everything) == 3  # OLD 200, NEW 200, NEW 503
    assert len(await series(clients, f'{COUNT} AND project = "proj"')) == 3
    assert await series(clients, f'{COUNT} AND project = "another-project"') == []
    assert len(await series(clients, f'{COUNT} AND project != "another-project"')) == 3
    assert len(await series(clients, f'project="proj" {ON_NEW} AND {COUNT}')) == 2


def test_percentile_and_distribution_arithmetic() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([7.0], 95) == 7.0
    d = distribution([0.5, 1.0, 1.3, 1.5, 1000.0])
    assert d["count"] == 5
    assert d["mean"] == pytest.approx(200.86)
    # underflow (<1 ms), [1, 1.4), [1.4, 1.96), ..., 1000 ms in bucket 1 + floor(log1.4 1000)
    assert d["bucket_counts"][:3] == [1, 2, 1]
    assert len(d["bucket_counts"]) == 22
    assert d["bucket_counts"][-1] == 1


def _query(metric: str, aligner: str, reducer: str = "REDUCE_NONE", **kw: Any) -> Query:
    return Query(
        metric,
        lambda m, r: r["revision_name"] == NEW.revision,
        NOW - timedelta(minutes=10),
        NOW,
        aligner,
        600,
        reducer,
        **kw,
    )


@pytest.mark.parametrize(
    ("metric", "aligner", "reducer", "expected"),
    [
        (REQUEST_COUNT, "ALIGN_SUM", "REDUCE_SUM", 100),
        (REQUEST_COUNT, "ALIGN_DELTA", "REDUCE_COUNT", 2),  # two series: 200 and 503
        (REQUEST_COUNT, "ALIGN_DELTA", "REDUCE_MAX", 90),
        (REQUEST_COUNT, "ALIGN_COUNT", "REDUCE_SUM", 5 + 5),  # sampling periods with data
        (REQUEST_LATENCIES, "ALIGN_MEAN", "REDUCE_MEAN", pytest.approx(50.5, abs=5)),
        (REQUEST_LATENCIES, "ALIGN_PERCENTILE_50", "REDUCE_MIN", pytest.approx(46, abs=5)),
        (REQUEST_LATENCIES, "ALIGN_DELTA", "REDUCE_PERCENTILE_99", 99.0),
    ],
)
def test_aligner_and_reducer_values(
    metric: str, aligner: str, reducer: str, expected: object
) -> None:
    store = MetricStore(clock=lambda: NOW)
    feed(store)
    [only] = store.query(_query(metric, aligner, reducer))
    [point] = only.points
    assert point.value == expected


def test_instant_interval_and_unknown_metric() -> None:
    store = MetricStore(clock=lambda: NOW, sample_period_s=60)
    feed(store)
    instant = Query(REQUEST_COUNT, lambda m, r: True, None, NOW)
    # only the sampling period holding NOW: (11:59:00, 12:00:00]
    assert sum(int(p.value) for s in store.query(instant) for p in s.points) == 20 + 30
    assert store.query(Query("run.googleapis.com/nope", lambda m, r: True, None, NOW)) == []


@pytest.mark.fault(
    "metrics",
    "503 from the front end for a revision whose container died",
    "logged, not in request_count",
)
def test_requests_that_never_reach_a_container_are_logged_but_not_counted(
    deploy: Any, emulator: Any, gcp_clients: Clients
) -> None:
    """request_count "Excludes requests that are not reaching your container instances":
    the front end's own 503 for a revision with no instance is a request log, not a point."""
    import httpx

    from waiting import wait_until

    svc = deploy("chat")
    rev = svc.latest_ready_revision.rsplit("/", 1)[-1]
    assert httpx.get(svc.uri + "/status", params={"code": "503"}, timeout=10).status_code == 503
    assert httpx.get(svc.uri + "/exit", params={"code": "1"}, timeout=10).status_code == 200
    wait_until(lambda: emulator.pids() == [])
    for _ in range(3):  # answered by the front end: no container is left to take them
        assert httpx.get(svc.uri, headers={"Connection": "close"}, timeout=10).status_code == 503

    def requests_logged() -> list[int]:
        return sorted(
            e["httpRequest"]["status"]
            for e in emulator.logs.entries(
                f'log_id("run.googleapis.com/requests") resource.labels.revision_name="{rev}"'
            )
        )

    assert wait_until(lambda: len(logged := requests_logged()) == 5 and logged) == [
        200,
        503,
        503,
        503,
        503,
    ]
    now = datetime.now(UTC)
    request = {
        "name": f"projects/{emulator.project}",
        "filter": f'{COUNT} AND resource.labels.revision_name = "{rev}"',
        "interval": {"start_time": now - timedelta(minutes=5), "end_time": now},
        "aggregation": {
            "alignment_period": {"seconds": 600},
            "per_series_aligner": "ALIGN_DELTA",
            "cross_series_reducer": "REDUCE_SUM",
            "group_by_fields": ["metric.labels.response_code"],
        },
    }
    counted = {
        s.metric.labels["response_code"]: sum(p.value.int64_value for p in s.points)
        for s in gcp_clients.metrics().list_time_series(request=request)
    }
    # the app's own 503 and the /exit answer reached the container; the three did not
    assert counted == {"200": 1, "503": 1}


@pytest.mark.fault(
    "metrics",
    "points sampled per 60 s and visible up to 180 s late (realistic)",
    "nothing before its period closes plus a seeded lag",
)
def test_realistic_points_appear_per_sampling_period_after_a_seeded_lag() -> None:
    """request_count: "Sampled every 60 seconds. After sampling, data is not visible for
    up to 180 seconds." Every request of one period appears at once, after the lag."""
    now = [NOW]

    def store(seed: int) -> MetricStore:
        return MetricStore(
            clock=lambda: now[0],
            sample_period_s=60,
            report_lag_s=180,
            min_report_lag_s=30,
            seed=seed,
        )

    metrics = store(7)
    metrics.request(record(NEW, 200, NOW + timedelta(seconds=10)))
    metrics.request(record(NEW, 503, NOW + timedelta(seconds=50)))
    query = Query(
        REQUEST_COUNT,
        lambda _m, _r: True,
        NOW - timedelta(minutes=5),
        NOW + timedelta(minutes=10),
        "ALIGN_DELTA",
        900,
        "REDUCE_SUM",
    )

    def counted() -> int:
        return sum(int(str(p.value)) for s in metrics.query(query) for p in s.points)

    resource = tuple(
        sorted(
            {
                "configuration_name": NEW.configuration,
                "location": NEW.location,
                "project_id": NEW.project,
                "revision_name": NEW.revision,
                "service_name": NEW.service,
            }.items()
        )
    )
    lag = metrics.lag_s(int(NOW.timestamp()) // 60, resource)
    assert 30 <= lag <= 180
    closes = NOW + timedelta(seconds=60)
    for at, expected in [
        (NOW + timedelta(seconds=55), 0),  # both ended, the period is still open
        (closes + timedelta(seconds=lag - 0.01), 0),  # closed, not reported yet
        (closes + timedelta(seconds=lag), 2),  # the whole period at once
    ]:
        now[0] = at
        assert counted() == expected, at
    assert store(7).lag_s(int(NOW.timestamp()) // 60, resource) == lag  # same seed, same lag
    lags = {store(s).lag_s(int(NOW.timestamp()) // 60, resource) for s in range(5)}
    assert len(lags) == 5
