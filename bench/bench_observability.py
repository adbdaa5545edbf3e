"""What the emulator's Logging and Monitoring parts cost, at the store's full size.

- ingest: revision output lines into the LogStore (lines/s), half JSON;
- ListLogEntries' work (filter + page + protos, no gRPC) on 200k entries,
  for the guard's filter bounded to the last minute (a bisection, then a
  short scan) against the same filter with no ``timestamp`` bound (a full
  scan): the ratio is what the time index buys;
- raw filter evaluation rate (entries/s) for that filter;
- ListTimeSeries' work (ALIGN_DELTA + REDUCE_SUM by class, and
  ALIGN_PERCENTILE_99) over 100k request events.

Everything runs in one process in the same run; compare ratios, not absolute
figures, across machines.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.emulator.logging_api import list_page
from deploy_guard.emulator.logstore import LogStore
from deploy_guard.emulator.metricstore import REQUEST_COUNT, REQUEST_LATENCIES, MetricStore, Query
from deploy_guard.logfilter import parse

ENTRIES = 200_000
EVENTS = 100_000
REF = RevisionRef("proj", "europe-west1", "chat", "chat-00002-bbb", "chat")
GUARD_FILTER = (
    'resource.type="cloud_run_revision" resource.labels.revision_name="chat-00002-bbb" '
    '(severity>=ERROR OR textPayload:"orchestrator" OR jsonPayload.message=~"close code 1011")'
)


def _timed(fn: object, *args: object, **kwargs: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - start, result


def bench_logs() -> None:
    store = LogStore(max_entries=ENTRIES)
    now = datetime.now(UTC)
    first = now - timedelta(hours=2)
    step = timedelta(hours=2) / ENTRIES
    start = time.perf_counter()
    for i in range(ENTRIES):
        when = first + step * i
        if i % 2:
            line = json.dumps({"severity": "INFO", "message": f"event {i}", "user": i % 7})
        else:
            line = "orchestrator is None" if i % 5000 == 0 else f"plain line {i}"
        store.revision_output(REF, "stdout", line, when)
    ingest = time.perf_counter() - start
    print(f"ingest: {ENTRIES} lines in {ingest:.2f}s = {ENTRIES / ingest:,.0f} lines/s")

    since = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bounded = f'timestamp>="{since}" {GUARD_FILTER}'
    names = ["projects/proj"]
    t_bounded, (found_b, _) = _timed(  # type: ignore[misc]
        list_page, store, resource_names=names, filter_text=bounded, page_size=1000
    )
    t_full, (found_f, _) = _timed(  # type: ignore[misc]
        list_page, store, resource_names=names, filter_text=GUARD_FILTER, page_size=1000
    )
    print(
        f"list, last minute ({len(found_b)} hits): {t_bounded * 1000:.1f} ms; "
        f"unbounded ({len(found_f)} hits): {t_full * 1000:.1f} ms; "
        f"ratio {t_full / max(t_bounded, 1e-9):.0f}x"
    )
    store.snapshot()[-1].proto()  # warm-up: the first call imports the proto modules
    page = store.snapshot()[:1000]
    t_proto, _ = _timed(lambda: [s.proto() for s in page])
    print(f"protos for a 1000-entry page: {t_proto * 1000:.1f} ms")

    flt = parse(GUARD_FILTER)
    data = [s.data for s in store.snapshot()]
    t_eval, hits = _timed(lambda: sum(1 for d in data if flt.matches(d)))
    print(f"filter evaluation: {len(data) / t_eval:,.0f} entries/s ({hits} matches)")


def bench_metrics() -> None:
    now = datetime.now(UTC)
    store = MetricStore(clock=lambda: now)
    for i in range(EVENTS):
        end = now - timedelta(seconds=(i % 3600))
        status = 503 if i % 50 == 0 else 200
        store.request(
            RequestRecord(REF, "GET", "/", "HTTP/1.1", status, (i % 300) / 1000, end, end)
        )
    everything = lambda metric, resource: True  # noqa: E731
    delta = Query(
        REQUEST_COUNT,
        everything,
        now - timedelta(hours=1),
        now,
        "ALIGN_DELTA",
        300,
        "REDUCE_SUM",
        ("metric.labels.response_code_class",),
    )
    p99 = Query(
        REQUEST_LATENCIES, everything, now - timedelta(hours=1), now, "ALIGN_PERCENTILE_99", 300
    )
    t_delta, series = _timed(store.query, delta)
    t_p99, _ = _timed(store.query, p99)
    print(
        f"time series over {EVENTS} events: delta+sum {t_delta * 1000:.0f} ms "
        f"({len(series)} series), p99 {t_p99 * 1000:.0f} ms"  # type: ignore[arg-type]
    )


def main() -> None:
    bench_logs()
    bench_metrics()


if __name__ == "__main__":
    main()
