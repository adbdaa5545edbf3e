"""What Cloud Run writes to Cloud Logging, as the emulator's LogEntry dicts.

The store (:mod:`deploy_guard.emulator.logstore`) keeps entries; this module
says what they look like, as pure functions of what happened (a line a
revision printed, a request the front end served, a container that died, an
Admin API call), so the guard's log rules meet the shapes they will meet on
Cloud Run.

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
- audit entries (``cloudaudit.googleapis.com/activity``): their own module,
  :mod:`deploy_guard.emulator.audit`.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from deploy_guard.emulator.contracts import RequestRecord, RevisionRef
from deploy_guard.log import redact_text
from deploy_guard.logfilter import SEVERITY_RANK, parse_time
from deploy_guard.logfilter import log_name as _log_name

Entry = dict[str, Any]

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


def output_entry(
    ref: RevisionRef, stream: Literal["stdout", "stderr"], line: str, when: datetime
) -> tuple[datetime, Entry] | None:
    """One output line of a revision's process, shaped as Cloud Run would log it.

    Returns the entry and its time (a structured line may carry its own), or
    None for a blank line, which Cloud Run does not log.
    """
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
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
    return when, entry


def request_entry(record: RequestRecord) -> Entry:
    """The request log Cloud Run's front end writes for a finished request."""
    status = record.status
    severity = "ERROR" if status >= 500 else "WARNING" if status >= 400 else "INFO"
    if record.message:  # the front end cut it (a request timeout): an error, any status
        severity = "ERROR"
    return {
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
    }


def system_entry(ref: RevisionRef, severity: str, message: str, when: datetime) -> Entry:
    """What Cloud Run itself says about a revision's container (``varlog/system``)."""
    return {
        "logName": log_name(ref.project, "run.googleapis.com/varlog/system"),
        "resource": _shared_resource(ref),
        "timestamp": rfc3339(when),
        "severity": cloud_severity(severity),
        "textPayload": message,
    }


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


def project_of(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "projects" and parts[2] == "logs" and parts[1] and parts[3]:
        return parts[1]
    return None


__all__ = [
    "AUDIT_TYPE",
    "Entry",
    "cloud_severity",
    "log_name",
    "output_entry",
    "project_of",
    "request_entry",
    "revision_resource",
    "rfc3339",
    "system_entry",
]
