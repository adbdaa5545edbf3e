"""The emulator's log storage: what Cloud Logging would hold for the project.

Entries are kept as the camelCase JSON dicts of ``google.logging.v2.LogEntry``
(the form the Logging filter language addresses: ``textPayload``,
``httpRequest.status``), sorted by (timestamp, arrival), so a filter runs on
plain dicts and a ``timestamp>=`` bound becomes a bisection instead of a scan.
The proto form is built only for entries a query returns, and cached.

Shapes follow Cloud Run:

- revision output: a line that is a JSON object becomes ``jsonPayload`` (the
  object, minus the special fields Cloud Run's logging agent lifts out into
  LogEntry fields: ``severity``; ``httpRequest``;
  ``logging.googleapis.com/labels|trace|spanId|insertId|sourceLocation|operation|trace_sampled``;
  the time as a ``timestamp`` object or string, ``timestampSeconds`` /
  ``timestampNanos`` or ``time``; so ``jsonPayload.message`` is there but
  ``jsonPayload.severity`` is not, and ``httpRequest.status>=500`` matches an
  app's own request line). A special field whose value does not fit its
  LogEntry field stays in ``jsonPayload``. When ``message`` (a string) is the
  only key left, the entry is ``textPayload`` instead, as Cloud Logging's agent
  does ("message is saved as textPayload if it is the only field remaining");
  the guard's pattern clause reads both payloads. Any other line (plain text,
  each line of a Python traceback) is ``textPayload`` with severity
  ``DEFAULT``. Logs ``run.googleapis.com/stdout`` and ``/stderr``.
- request logs: ``run.googleapis.com/requests`` with ``httpRequest`` and
  severity INFO below 400, WARNING for 4xx, ERROR for 5xx. The URL's query
  string credentials are redacted (the guard's rule: no secret in any log).
- platform messages: ``run.googleapis.com/varlog/system``, for example
  ``Container called exit(1).`` at WARNING (as on Cloud Run, not ERROR) when a
  revision's process dies after it was ready.
- audit entries: ``cloudaudit.googleapis.com/activity``, severity NOTICE, with a
  real ``protoPayload`` (``type.googleapis.com/google.cloud.audit.AuditLog``,
  ``serviceName: run.googleapis.com``). Cloud Run files its admin audit entries
  under resource type ``cloud_run_revision`` with the service's labels and an
  empty ``revision_name``; the emulator does the same.

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
import functools
import json
import random
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.log import redact_text
from deploy_guard.logfilter import SEVERITY_RANK, parse_time
from deploy_guard.logfilter import log_name as _log_name

Entry = dict[str, Any]
Listener = Callable[[list["StoredEntry"]], None]

#: Severity words programs print, mapped to Cloud Logging's names.
_SEVERITY_ALIASES = {
    "WARN": "WARNING",
    "ERR": "ERROR",
    "EXCEPTION": "ERROR",
    "FATAL": "CRITICAL",
    "CRIT": "CRITICAL",
    "TRACE": "DEBUG",
    "EMERG": "EMERGENCY",
}
#: JSON keys Cloud Logging lifts out of a structured line into LogEntry fields (not
#: kept in jsonPayload), as Google's "Structured logging: special JSON fields" lists
#: them. ``severity`` and the time keys are handled on their own.
_SPECIAL_KEYS = {
    "httpRequest": "httpRequest",
    "logging.googleapis.com/labels": "labels",
    "logging.googleapis.com/trace": "trace",
    "logging.googleapis.com/spanId": "spanId",
    "logging.googleapis.com/insertId": "insertId",
    "logging.googleapis.com/trace_sampled": "traceSampled",
    "logging.googleapis.com/sourceLocation": "sourceLocation",
    "logging.googleapis.com/operation": "operation",
}
#: LogEntry fields that are messages: a special field's value is checked (and put in
#: canonical JSON form) by parsing it as that message.
_MESSAGE_FIELDS = {
    "httpRequest": ("google.logging.type.http_request_pb2", "HttpRequest"),
    "sourceLocation": ("google.cloud.logging_v2.types", "LogEntrySourceLocation"),
    "operation": ("google.cloud.logging_v2.types", "LogEntryOperation"),
}
AUDIT_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
#: The _Default bucket's retention period, which bounds how old a written entry may be.
DEFAULT_RETENTION = timedelta(days=30)


def rfc3339(when: datetime) -> str:
    """UTC RFC 3339 with microseconds and ``Z``, as the Logging API prints times."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cloud_severity(value: Any) -> str:
    """A program's level (``warn``, ``Error``, 500) as a Cloud Logging severity name."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        rank = int(value)
        names = [n for n, r in SEVERITY_RANK.items() if r <= rank]
        return names[-1] if names else "DEFAULT"
    text = str(value).strip().upper()
    text = _SEVERITY_ALIASES.get(text, text)
    return text if text in SEVERITY_RANK else "DEFAULT"


def revision_resource(ref: RevisionRef, *, revision: bool = True) -> Entry:
    """The ``cloud_run_revision`` monitored resource for a revision (or its service)."""
    return {
        "type": "cloud_run_revision",
        "labels": {
            "project_id": ref.project,
            "location": ref.location,
            "service_name": ref.service,
            "revision_name": ref.revision if revision else "",
            "configuration_name": ref.configuration if revision else "",
        },
    }


@functools.lru_cache(maxsize=4096)
def _shared_resource(ref: RevisionRef, revision: bool = True) -> Entry:
    """One resource dict per revision, shared by its entries (never mutated): a
    200k-entry store would otherwise hold 200k copies of the same labels."""
    return revision_resource(ref, revision=revision)


@functools.lru_cache(maxsize=4096)
def log_name(project: str, log_id: str) -> str:
    """``projects/P/logs/ID`` (URL-encoded), one shared string per log."""
    return _log_name(project, log_id)


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


def _message_json(field_name: str, value: Any) -> Entry | None:
    """``value`` in the canonical JSON form of LogEntry field ``field_name``, or None
    when it is not that message (then the agent leaves it in ``jsonPayload``)."""
    import importlib

    from google.protobuf import json_format

    if not isinstance(value, dict):
        return None
    module, name = _MESSAGE_FIELDS[field_name]
    cls = getattr(importlib.import_module(module), name)
    message = cls.pb()() if hasattr(cls, "pb") else cls()  # proto-plus or plain protobuf
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError):
        return None
    return dict(json_format.MessageToDict(message))


def _time_of(obj: dict[str, Any]) -> tuple[datetime, list[str]] | None:
    """The entry time a structured line gives, and the keys that gave it.

    Tried in this order: ``timestamp`` (``{"seconds": S, "nanos": N}`` or an RFC
    3339 string), ``timestampSeconds`` with ``timestampNanos``, then ``time``
    (RFC 3339). A value that does not read as a time is left where it is.
    """
    stamp = obj.get("timestamp")
    if isinstance(stamp, dict) and set(stamp) <= {"seconds", "nanos"} and "seconds" in stamp:
        when = _from_seconds(stamp.get("seconds"), stamp.get("nanos", 0))
        if when is not None:
            return when, ["timestamp"]
    if isinstance(stamp, str) and (when := parse_time(stamp)) is not None:
        return when, ["timestamp"]
    if "timestampSeconds" in obj:
        when = _from_seconds(obj["timestampSeconds"], obj.get("timestampNanos", 0))
        if when is not None:
            return when, ["timestampSeconds", "timestampNanos"]
    stamp = obj.get("time")
    if isinstance(stamp, str) and (when := parse_time(stamp)) is not None:
        return when, ["time"]
    return None


def _from_seconds(seconds: Any, nanos: Any) -> datetime | None:
    """Epoch seconds and nanoseconds (numbers, or strings of digits) as a UTC datetime."""
    if isinstance(seconds, bool) or isinstance(nanos, bool):
        return None
    try:
        whole = int(seconds) if isinstance(seconds, int | float) else int(str(seconds))
        frac = int(nanos) if isinstance(nanos, int | float) else int(str(nanos))
        if not 0 <= frac < 10**9:
            return None
        return datetime.fromtimestamp(whole, UTC) + timedelta(microseconds=frac // 1000)
    except (ValueError, OverflowError, OSError):
        return None


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
        text = line.rstrip("\r\n")
        if not text.strip():
            return
        entry: Entry = {
            "logName": log_name(ref.project, f"run.googleapis.com/{stream}"),
            "resource": _shared_resource(ref),
            "timestamp": rfc3339(when),
            "severity": "DEFAULT",
        }
        obj = _json_object(text)
        if obj is None:
            entry["textPayload"] = text
        else:
            if "severity" in obj:
                entry["severity"] = cloud_severity(obj.pop("severity"))
            if (found := _time_of(obj)) is not None:
                when, keys = found
                entry["timestamp"] = rfc3339(when)
                for key in keys:
                    obj.pop(key, None)
            for key, target in _SPECIAL_KEYS.items():
                if key not in obj:
                    continue
                value = _special_value(target, obj[key])
                if value is not None:
                    entry[target] = value
                    del obj[key]
            if set(obj) == {"message"} and isinstance(obj["message"], str):
                # "message is saved as textPayload if it is the only field remaining"
                entry["textPayload"] = obj["message"]
            else:
                entry["jsonPayload"] = obj
        self._insert([(when, ref.project, entry)])

    def request(self, record: RequestRecord) -> None:
        """The request log Cloud Run's front end writes for a finished request."""
        status = record.status
        severity = "ERROR" if status >= 500 else "WARNING" if status >= 400 else "INFO"
        if record.message:  # the front end cut it (a request timeout): an error, any status
            severity = "ERROR"
        self._insert(
            [
                (
                    record.start_time,
                    record.ref.project,
                    {
                        "logName": log_name(record.ref.project, "run.googleapis.com/requests"),
                        "resource": _shared_resource(record.ref),
                        "timestamp": rfc3339(record.start_time),
                        "severity": severity,
                        "httpRequest": {
                            "requestMethod": record.method,
                            "requestUrl": redact_text(record.url),
                            "status": status,
                            "latency": f"{max(record.latency_s, 0.0):.9f}s",
                            "userAgent": record.user_agent,
                            "remoteIp": record.remote_ip,
                            "requestSize": str(record.request_size),
                            "responseSize": str(record.response_size),
                            "protocol": "HTTP/1.1",
                        },
                        # What the front end says about it (a request timeout), if anything.
                        **({"textPayload": record.message} if record.message else {}),
                    },
                )
            ]
        )

    def system(self, ref: RevisionRef, severity: str, message: str, when: datetime) -> None:
        """What Cloud Run itself says about a revision's container (``varlog/system``)."""
        self._insert(
            [
                (
                    when,
                    ref.project,
                    {
                        "logName": log_name(ref.project, "run.googleapis.com/varlog/system"),
                        "resource": _shared_resource(ref),
                        "timestamp": rfc3339(when),
                        "severity": cloud_severity(severity),
                        "textPayload": message,
                    },
                )
            ]
        )

    def audit(
        self,
        *,
        project: str,
        location: str,
        service: str,
        method_name: str,
        resource_name: str,
        request: dict[str, Any],
        when: datetime,
    ) -> None:
        """An Admin Activity audit entry for a Cloud Run Admin API call."""
        ref = RevisionRef(project, location, service, "", "")
        self._insert(
            [
                (
                    when,
                    project,
                    {
                        "logName": log_name(project, "cloudaudit.googleapis.com/activity"),
                        "resource": _shared_resource(ref, revision=False),
                        "timestamp": rfc3339(when),
                        "severity": "NOTICE",
                        "protoPayload": {
                            "@type": AUDIT_TYPE,
                            "serviceName": "run.googleapis.com",
                            "methodName": method_name,
                            "resourceName": resource_name,
                            "request": json.loads(json.dumps(request, default=str)),
                        },
                    },
                )
            ]
        )

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
            project = _project_of(str(entry.get("logName", "")))
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


def _special_value(target: str, value: Any) -> Any:
    """A special field's value as LogEntry field ``target`` holds it, or None if it
    does not fit (the key then stays in ``jsonPayload``)."""
    if target == "labels":
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None
    if target == "traceSampled":
        return value if isinstance(value, bool) else None
    if target in _MESSAGE_FIELDS:
        return _message_json(target, value)
    if isinstance(value, dict | list):
        return None
    return str(value)


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _project_of(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "projects" and parts[2] == "logs" and parts[1] and parts[3]:
        return parts[1]
    return None
