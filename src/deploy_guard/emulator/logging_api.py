"""Cloud Logging v2 (``google.logging.v2.LoggingServiceV2``) over gRPC, on a :class:`LogStore`.

Served with a generic handler (no generated servicer): the official
``LoggingServiceV2Client`` talks to it unchanged. Methods:

- ``ListLogEntries``: ``resource_names`` (``projects/P``, or a log view under
  it) required; ``filter`` in the subset of :mod:`logfilter`; ``order_by``
  ``timestamp asc`` (default) or ``timestamp desc``; ``page_size`` 0 -> 50, at
  most 1000; ``page_token`` opaque. A token remembers the last entry returned
  (not an offset), so entries that arrive between pages neither repeat nor
  shift the next page, and it is bound to the query it came from: replaying it
  with another filter, order or resource list is INVALID_ARGUMENT. With the
  store's ``empty_page_ratio`` (``--realistic``) some pages come back empty
  with a token that resumes where they started, as Cloud Logging answers when
  its search ran out of time; the page after such a token is never empty too.
- ``WriteLogEntries``: request ``log_name`` / ``resource`` / ``labels`` fill
  each entry's gaps; ``dry_run`` validates only. An entry is invalid without a
  ``log_name`` or ``resource``, or with a ``timestamp`` more than 24 hours in
  the future or older than the store's retention period (30 days). Without
  ``partial_success`` an invalid entry fails the whole call and writes nothing;
  with it the valid entries are written and the call still answers
  INVALID_ARGUMENT naming the bad ones (the real API does the same, with
  details in the status).
- ``TailLogEntries``: the first request's ``resource_names``, ``filter`` and
  ``buffer_window`` select and order entries that arrive after the call
  starts, at most 10 sessions per project, memory bounded per session with
  ``suppression_info`` for what is dropped: see :mod:`tail`.
- ``ListLogs``: the log names a project has entries in.

Scans run in a worker thread: a filter over 200k entries must not stall the
event loop that also carries the router's traffic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from deploy_guard.emulator import tail
from deploy_guard.emulator.logstore import DEFAULT_RETENTION, Entry, LogStore, StoredEntry
from deploy_guard.emulator.quota import ReadQuota
from deploy_guard.emulator.rpc import ServiceHandler, generic_handler
from deploy_guard.emulator.tail import TailHub
from deploy_guard.errors import EmulatorError
from deploy_guard.logfilter import Filter, parse, parse_time

SERVICE = "google.logging.v2.LoggingServiceV2"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: How far ahead of now a written entry's timestamp may be.
MAX_FUTURE = timedelta(days=1)


def _invalid(message: str) -> EmulatorError:
    return EmulatorError("INVALID_ARGUMENT", message)


def projects_of(resource_names: list[str]) -> set[str]:
    """``projects/P`` (or ``projects/P/locations/L/buckets/B/views/V``) -> {P}."""
    if not resource_names:
        raise _invalid("resource_names is required: name at least one project, e.g. projects/P")
    projects = set()
    for name in resource_names:
        parts = name.split("/")
        ok = len(parts) in (2, 8) and parts[0] == "projects" and bool(parts[1])
        if len(parts) == 8:
            ok = ok and parts[2::2] == ["locations", "buckets", "views"]
        if not ok:
            raise _invalid(
                f"resource name {name!r} is not supported: use projects/P "
                "or projects/P/locations/L/buckets/B/views/V"
            )
        projects.add(parts[1])
    return projects


def _order(order_by: str) -> bool:
    """True for descending; only ``timestamp asc|desc`` exist, as in the real API."""
    words = order_by.lower().split()
    if not words or words == ["timestamp"] or words == ["timestamp", "asc"]:
        return False
    if words == ["timestamp", "desc"]:
        return True
    raise _invalid(f"order_by {order_by!r} is invalid: use 'timestamp asc' or 'timestamp desc'")


def _query_hash(resource_names: list[str], filter_text: str, desc: bool) -> str:
    raw = json.dumps([sorted(resource_names), filter_text, desc]).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


#: Where a query starts: before every key (ascending) or after every key (descending).
_BEFORE_ALL = (-1, -1)
_AFTER_ALL = (1 << 62, 1 << 62)


def _encode_token(key: tuple[int, int], query: str, *, stalled: bool = False) -> str:
    data: dict[str, Any] = {"k": list(key), "q": query}
    if stalled:
        data["s"] = 1  # this token came with an empty page: the next page is real
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _stalled(token: str) -> bool:
    try:
        return bool(json.loads(base64.urlsafe_b64decode(token.encode())).get("s"))
    except (binascii.Error, ValueError, TypeError, AttributeError):
        return False


def _decode_token(token: str, query: str) -> tuple[int, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        key = data["k"]
        if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, int) for k in key)):
            raise ValueError(key)
    except (binascii.Error, ValueError, TypeError, KeyError) as exc:
        raise _invalid(f"page_token {token!r} is invalid") from exc
    if data.get("q") != query:
        raise _invalid("page_token does not belong to this query (filter, order or resources)")
    return key[0], key[1]


def list_page(
    store: LogStore,
    *,
    resource_names: list[str],
    filter_text: str = "",
    order_by: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> tuple[list[StoredEntry], str]:
    """One page of matching entries and the next token ('' on the last page)."""
    projects = projects_of(list(resource_names))
    desc = _order(order_by)
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise _invalid(f"page_size {page_size} is out of range: use 1 to {MAX_PAGE_SIZE}")
    size = page_size or DEFAULT_PAGE_SIZE
    flt: Filter = parse(filter_text)
    query = _query_hash(list(resource_names), filter_text, desc)
    after = _decode_token(page_token, query) if page_token else None
    if not (page_token and _stalled(page_token)) and store.search_runs_out_of_time():
        start = after if after is not None else (_AFTER_ALL if desc else _BEFORE_ALL)
        return [], _encode_token(start, query, stalled=True)
    lower, _, upper, _ = flt.time_bounds
    items = store.snapshot(lower, upper)
    ordered = reversed(items) if desc else iter(items)
    found: list[StoredEntry] = []
    for item in ordered:
        if after is not None and (item.key >= after if desc else item.key <= after):
            continue
        if item.project in projects and flt.matches(item.data):
            found.append(item)
            if len(found) > size:
                break
    if len(found) > size:
        found = found[:size]
        return found, _encode_token(found[-1].key, query)
    return found, ""


def _entry_dict(entry: Any) -> Entry:
    from google.cloud.audit import audit_log_pb2  # noqa: F401  (AuditLog in protoPayload)
    from google.cloud.logging_v2.types import LogEntry
    from google.protobuf import json_format

    try:
        return dict(json_format.MessageToDict(LogEntry.pb(entry)))
    except (TypeError, KeyError) as exc:  # an Any payload of a type the emulator lacks
        raise _invalid(f"entry cannot be stored: {exc}") from exc


def prepare_writes(
    request: Any, *, now: datetime | None = None, retention: timedelta = DEFAULT_RETENTION
) -> tuple[list[Entry], list[str]]:
    """Entries of a WriteLogEntriesRequest with defaults applied, and problems by index.

    As on Cloud Logging, an entry whose ``timestamp`` is more than a day after
    ``now`` or older than the retention period (30 days, the _Default bucket's)
    is refused.
    """
    from google.cloud.logging_v2.types import LogEntry

    now = now or datetime.now(UTC)

    default_resource: Entry | None = None
    if request.resource and request.resource.type:
        default_resource = _entry_dict(LogEntry(resource=request.resource))["resource"]
    good: list[Entry] = []
    problems: list[str] = []
    for index, entry in enumerate(request.entries):
        data = _entry_dict(entry)
        if request.log_name:
            data.setdefault("logName", request.log_name)
        if "resource" not in data and default_resource is not None:
            data["resource"] = default_resource
        if request.labels:
            data["labels"] = {**dict(request.labels), **data.get("labels", {})}
        name = str(data.get("logName", ""))
        parts = name.split("/")
        if not name:
            problems.append(f"entries[{index}]: log_name is required")
        elif len(parts) != 4 or parts[0] != "projects" or parts[2] != "logs" or not parts[3]:
            problems.append(
                f"entries[{index}]: log_name {name!r} must be projects/P/logs/LOG_ID "
                "with LOG_ID URL-encoded"
            )
        elif "resource" not in data:
            problems.append(f"entries[{index}]: resource is required")
        elif (late := _timestamp_problem(data.get("timestamp"), now, retention)) is not None:
            problems.append(f"entries[{index}]: {late}")
        else:
            good.append(data)
    return good, problems


def _timestamp_problem(stamp: Any, now: datetime, retention: timedelta) -> str | None:
    """Why Cloud Logging would refuse an entry's ``timestamp`` (None: it would not)."""
    when = parse_time(str(stamp)) if stamp else None
    if when is None:  # no timestamp: Logging assigns the current time
        return None
    if when > now + MAX_FUTURE:
        return f"timestamp {stamp} is over a day in the future"
    if when < now - retention:
        days = retention / timedelta(days=1)
        return f"timestamp {stamp} is older than the logs retention period ({days:g} days)"
    return None


def handlers(
    store: LogStore, tails: TailHub | None = None, quota: ReadQuota | None = None
) -> ServiceHandler:
    """The generic handler serving ``google.logging.v2.LoggingServiceV2`` from ``store``.

    ``tails`` holds the live-tailing sessions (a new :class:`TailHub` on ``store``
    when not given; pass one to reach its sessions or lower its limits). ``quota``:
    the per-project read quota ``ListLogEntries`` is charged to (None: no quota).
    """
    from google.cloud.logging_v2 import types

    if tails is None:
        tails = TailHub(store)

    async def list_log_entries(request: Any, _ctx: grpc.aio.ServicerContext) -> Any:
        if quota is not None:
            await quota.charge(projects_of(list(request.resource_names)), _ctx)

        def work() -> Any:
            found, token = list_page(
                store,
                resource_names=list(request.resource_names),
                filter_text=request.filter,
                order_by=request.order_by,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return types.ListLogEntriesResponse(
                entries=[item.proto() for item in found], next_page_token=token
            )

        return await asyncio.to_thread(work)

    async def write_log_entries(request: Any, _ctx: grpc.aio.ServicerContext) -> Any:
        good, problems = prepare_writes(request, now=store.now(), retention=store.retention)
        if problems and not request.partial_success:
            raise _invalid("; ".join(problems) + " (nothing was written)")
        if not request.dry_run and good:
            store.append(good)
        if problems:
            raise _invalid("; ".join(problems) + f" ({len(good)} valid entries were written)")
        return types.WriteLogEntriesResponse()

    async def list_logs(request: Any, _ctx: grpc.aio.ServicerContext) -> Any:
        from deploy_guard.emulator.paging import page

        projects = projects_of([request.parent])
        names = sorted({s.data["logName"] for s in store.snapshot() if s.project in projects})
        chunk, token = page(names, request.page_size, request.page_token)
        return types.ListLogsResponse(log_names=chunk, next_page_token=token)

    return generic_handler(
        SERVICE,
        [
            (
                "ListLogEntries",
                list_log_entries,
                types.ListLogEntriesRequest,
                types.ListLogEntriesResponse,
            ),
            (
                "WriteLogEntries",
                write_log_entries,
                types.WriteLogEntriesRequest,
                types.WriteLogEntriesResponse,
            ),
            ("ListLogs", list_logs, types.ListLogsRequest, types.ListLogsResponse),
        ],
        streams=[
            (
                "TailLogEntries",
                tail.stream_handler(tails, projects_of),
                types.TailLogEntriesRequest,
                types.TailLogEntriesResponse,
            )
        ],
    )
