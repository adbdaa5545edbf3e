"""The emulator's log storage: what Cloud Logging would hold for the project.

Entries are kept as the camelCase JSON dicts of ``google.logging.v2.LogEntry``
(the form the Logging filter language addresses: ``textPayload``,
``httpRequest.status``), sorted by (timestamp, arrival), so a filter runs on
plain dicts and a ``timestamp>=`` bound becomes a bisection instead of a scan.
The proto form is built only for entries a query returns, and cached.

How entries look (Cloud Run's shapes for output lines, request logs, platform
messages and audit entries) is :mod:`deploy_guard.emulator.log_entries`; this
module stores them, pages them out late when asked, and builds their protos.

Memory is bounded: beyond ``max_entries`` the oldest entries are dropped.

Reading is as late as Cloud Logging's when asked: ``delay_s`` is the ingestion
delay (an entry is listed that long after it arrived), and ``empty_page_ratio``
is the share of ``ListLogEntries`` pages answered empty with a
``next_page_token`` ("the search found no log entries so far but it did not
have time to search all the possible log entries"), drawn from ``seed`` so a
run can be repeated.
"""

from __future__ import annotations

import bisect
import random
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from deploy_guard.emulator.audit import Activity, activity_entry
from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.emulator.log_entries import (
    AUDIT_TYPE,
    Entry,
    cloud_severity,
    log_name,
    output_entry,
    project_of,
    request_entry,
    revision_resource,
    rfc3339,
    system_entry,
)
from deploy_guard.logfilter import SEVERITY_RANK, parse_time

Listener = Callable[[list["StoredEntry"]], None]

#: The _Default bucket's retention period, which bounds how old a written entry may be.
DEFAULT_RETENTION = timedelta(days=30)


def _micros(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


@dataclass
class StoredEntry:
    """One entry: its sort key, its project, its dict, and a lazily built proto."""

    key: tuple[int, int]  # (timestamp in µs, arrival sequence)
    project: str
    data: Entry
    #: When the entry can be listed (received + the store's ingestion delay).
    readable_at: datetime | None = None
    _proto: Any = field(default=None, repr=False)

    def proto(self) -> Any:
        """The entry as ``logging_v2.types.LogEntry`` (built once)."""
        if self._proto is None:
            from google.cloud.logging_v2.types import LogEntry

            self._proto = LogEntry.wrap(_to_pb(self.data, self.key[0]))
        return self._proto


#: Keys :func:`_to_pb` sets by hand; an entry with any other key takes the slow path.
_FAST_KEYS = frozenset(
    {
        "logName",
        "resource",
        "timestamp",
        "receiveTimestamp",
        "severity",
        "insertId",
        "labels",
        "trace",
        "spanId",
        "textPayload",
        "jsonPayload",
        "httpRequest",
        "protoPayload",
        "sourceLocation",
        "traceSampled",
        "operation",
    }
)


def _to_pb(data: Entry, micros: int) -> Any:
    """A ``LogEntry`` protobuf from the entry dict.

    ``json_format.ParseDict`` costs ~0.3-2 ms an entry (pure Python, and
    ``strptime`` per timestamp); setting the common fields by hand is several
    times faster, which matters for a 1000-entry page.
    """
    from google.cloud.audit import audit_log_pb2  # noqa: F401  (registers AuditLog)
    from google.cloud.logging_v2.types import LogEntry
    from google.protobuf import json_format

    pb = LogEntry.pb()()
    if not _FAST_KEYS.issuperset(data):
        return json_format.ParseDict(data, pb)
    pb.log_name = data["logName"]
    resource = data.get("resource") or {}
    pb.resource.type = resource.get("type", "")
    pb.resource.labels.update(resource.get("labels", {}))
    pb.timestamp.FromMicroseconds(micros)
    if "receiveTimestamp" in data:
        pb.receive_timestamp.FromJsonString(data["receiveTimestamp"])
    pb.severity = SEVERITY_RANK.get(str(data.get("severity", "DEFAULT")), 0)
    pb.insert_id = data.get("insertId", "")
    pb.labels.update(data.get("labels", {}))
    pb.trace = data.get("trace", "")
    pb.span_id = data.get("spanId", "")
    pb.trace_sampled = bool(data.get("traceSampled", False))
    if "textPayload" in data:
        pb.text_payload = data["textPayload"]
    elif "jsonPayload" in data:
        pb.json_payload.SetInParent()  # an empty object is still a jsonPayload
        pb.json_payload.update(data["jsonPayload"])
    elif "protoPayload" in data:
        json_format.ParseDict(data["protoPayload"], pb.proto_payload)
    if "httpRequest" in data:
        json_format.ParseDict(data["httpRequest"], pb.http_request)
    if "sourceLocation" in data:
        json_format.ParseDict(data["sourceLocation"], pb.source_location)
    if "operation" in data:
        json_format.ParseDict(data["operation"], pb.operation)
    return pb


class LogStore:
    """Thread-safe, bounded, time-ordered store of log entries (a :class:`LogSink`)."""

    def __init__(
        self,
        max_entries: int = 200_000,
        *,
        clock: Callable[[], datetime] | None = None,
        retention: timedelta = DEFAULT_RETENTION,
        delay_s: float = 0.0,
        empty_page_ratio: float = 0.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= empty_page_ratio <= 1.0:
            raise ValueError("empty_page_ratio must be between 0 and 1")
        self.max_entries = max_entries
        #: Share of ListLogEntries pages that come back empty with a token (the search
        #: ran out of time); never twice in a row for one token, so paging progresses.
        self.empty_page_ratio = empty_page_ratio
        #: How many such empty pages were served (for tests).
        self.empty_pages_served = 0
        self._pages = random.Random(seed)
        #: Ingestion delay: an entry can be listed this long after it was received
        #: (Cloud Logging's is usually seconds; ``TailLogEntries`` is not delayed).
        self.delay = timedelta(seconds=delay_s)
        #: The logs retention period: ``WriteLogEntries`` refuses older timestamps.
        self.retention = retention
        self._clock = clock or (lambda: datetime.now(UTC))
        self._items: list[StoredEntry] = []
        self._keys: list[tuple[int, int]] = []
        self._seq = 0
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._id_prefix = secrets.token_hex(4)

    def now(self) -> datetime:
        """The store's clock (UTC)."""
        return self._clock()

    def search_runs_out_of_time(self) -> bool:
        """Whether this ListLogEntries page is answered empty, with a token to go on."""
        if not self.empty_page_ratio:
            return False
        with self._lock:
            stall = self._pages.random() < self.empty_page_ratio
            if stall:
                self.empty_pages_served += 1
        return stall

    # ------------------------------------------------------------ LogSink
    def revision_output(
        self, ref: RevisionRef, stream: Literal["stdout", "stderr"], line: str, when: datetime
    ) -> None:
        """One output line of a revision's process, shaped as Cloud Run would log it."""
        shaped = output_entry(ref, stream, line, when)
        if shaped is not None:
            at, entry = shaped
            self._insert([(at, ref.project, entry)])

    def request(self, record: RequestRecord) -> None:
        """The request log Cloud Run's front end writes for a finished request."""
        self._insert([(record.start_time, record.ref.project, request_entry(record))])

    def system(self, ref: RevisionRef, severity: str, message: str, when: datetime) -> None:
        """What Cloud Run itself says about a revision's container (``varlog/system``)."""
        self._insert([(when, ref.project, system_entry(ref, severity, message, when))])

    def audit(self, *, activity: Activity, when: datetime) -> None:
        """An Admin Activity audit entry for a Cloud Run Admin API call."""
        self._insert([(when, activity.project, activity_entry(activity, when))])

    # ------------------------------------------------------------ writing
    def append(self, entries: Iterable[Entry]) -> list[Entry]:
        """Store entries (camelCase dicts with ``logName`` and ``resource``).

        Fills ``insertId``, ``timestamp`` (now), ``receiveTimestamp`` and
        ``severity`` where missing, and returns the stored dicts. Raises
        ``ValueError`` for an entry without a valid ``logName``.
        """
        now = self._clock()
        prepared: list[tuple[datetime, str, Entry]] = []
        for raw in entries:
            entry = dict(raw)
            project = project_of(str(entry.get("logName", "")))
            if project is None:
                raise ValueError(f"logName {entry.get('logName')!r} is not projects/P/logs/ID")
            when = parse_time(str(entry["timestamp"])) if entry.get("timestamp") else None
            when = when or now
            entry["timestamp"] = rfc3339(when)
            prepared.append((when, project, entry))
        return self._insert(prepared)

    def _insert(self, prepared: list[tuple[datetime, str, Entry]]) -> list[Entry]:
        """Insert (time, project, entry) triples in time order; tell the listeners."""
        now = self._clock()
        received = rfc3339(now)
        stored: list[Entry] = []
        items: list[StoredEntry] = []
        with self._lock:
            for when, project, entry in prepared:
                entry["receiveTimestamp"] = received
                entry.setdefault("severity", "DEFAULT")
                self._seq += 1
                if not entry.get("insertId"):
                    entry["insertId"] = f"{self._id_prefix}{self._seq:010d}"
                item = StoredEntry((_micros(when), self._seq), project, entry, now + self.delay)
                if not self._keys or item.key >= self._keys[-1]:
                    self._keys.append(item.key)
                    self._items.append(item)
                else:
                    at = bisect.bisect_right(self._keys, item.key)
                    self._keys.insert(at, item.key)
                    self._items.insert(at, item)
                stored.append(entry)
                items.append(item)
            excess = len(self._items) - self.max_entries
            if excess > max(1, self.max_entries // 10):  # trim in batches: amortised O(1)
                del self._items[:excess]
                del self._keys[:excess]
            listeners = list(self._listeners)
        for listener in listeners:
            listener(items)
        return stored

    # ------------------------------------------------------------ reading
    def snapshot(
        self, lower: datetime | None = None, upper: datetime | None = None
    ) -> list[StoredEntry]:
        """Readable entries with ``lower <= timestamp <= upper`` (inclusive), oldest first."""
        with self._lock:
            lo = 0 if lower is None else bisect.bisect_left(self._keys, (_micros(lower), 0))
            hi = (
                len(self._keys)
                if upper is None
                else bisect.bisect_right(self._keys, (_micros(upper), 1 << 62))
            )
            items = self._items[lo:hi]
        if not self.delay:
            return items
        now = self._clock()
        return [s for s in items if s.readable_at is None or s.readable_at <= now]

    def entries(self, filter_text: str = "") -> list[Entry]:
        """Matching entries, oldest first (for tests and the CLI; the API pages)."""
        from deploy_guard.logfilter import parse

        flt = parse(filter_text)
        lower, _, upper, _ = flt.time_bounds
        return [s.data for s in self.snapshot(lower, upper) if flt.matches(s.data)]

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every batch stored from now on; returns an unsubscribe.

        It runs in the appending thread, outside the store's lock: keep it short
        (``TailLogEntries`` hands the batch to its event loop and returns).
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


__all__ = [
    "AUDIT_TYPE",
    "DEFAULT_RETENTION",
    "Entry",
    "Listener",
    "LogStore",
    "StoredEntry",
    "cloud_severity",
    "log_name",
    "revision_resource",
    "rfc3339",
]
