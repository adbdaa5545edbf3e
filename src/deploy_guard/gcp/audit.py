"""Cloud Run's Admin Activity audit entries, read: the deploy one records; to check it or not.

A deploy made by hand (``gcloud run deploy`` from a laptop, the console,
Terraform) should be checked as surely as one made by the pipeline, without
anyone remembering to run the guard. Cloud Run writes an Admin Activity audit
entry for every service write, always (those logs cannot be turned off); an
Eventarc trigger on them starts ``deploy-guard check --from-audit-event``. This
module turns what arrives into an :class:`AuditWrite` and decides, without any
I/O, whether it is a deploy to check (:func:`decide`, :func:`choose`). The
decisions that need the service (did the write create a revision? is it still
the newest?) take plain snapshots read by the caller (:func:`after_reads`).

What arrives is JSON, in any of these forms (:func:`audit_writes`):

- a ``LogEntry``: as exported, or a list of them as ``gcloud logging read
  --format json`` prints;
- a CloudEvent ``google.cloud.audit.log.v1.written`` in structured mode
  (``specversion``, ``type``, ``source``, ``id``, ``data`` = the LogEntry): what
  Eventarc hands a workflow as its argument. In binary mode the HTTP body is the
  LogEntry itself and the ``ce-*`` headers say nothing the guard needs;
- a Pub/Sub push message (``{"message": {"data": BASE64}}``) from a log sink.

The rules, in the order they apply (each skip is exit 0 with its reason):

1. not Cloud Run (``serviceName`` other than ``run.googleapis.com``), or not a
   service write (a job, IAM): nothing to check; a delete: nothing is left;
2. failed (``status.code`` not 0): Cloud Run refused it, nothing changed;
3. the end of a long-running operation (``operation.last`` without ``first``):
   its first entry started the check already;
4. the guard's own write: a v2 UpdateService whose ``update_mask`` names only
   ``traffic`` and ``annotations`` and which carries ``deploy-guard.dev/``
   annotations. That is exactly how the guard writes (``gcp/cloudrun.py``, rule 1:
   it never sends a template), so a rollback or a promotion never starts a check
   of itself. The principal is not the rule: the pipeline's service account often
   both deploys and runs the guard, and its deploys must be checked;
5. sends no template (a v2 ``update_mask`` without ``template``): a traffic, tag
   or annotation change creates no revision;
6. made by a principal in ``--skip-principal`` (a pipeline that runs its own check);
7. with the service read: no revision created at or after the request (a
   ``gcloud run services update-traffic``: v1 always sends the template), a newer
   revision deployed since (its own entry checks it), or a revision already
   judged (on the rejected list, or the last known good).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deploy_guard.errors import ConfigError
from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, RevisionState, ServiceState, rejected

EVENT_TYPE = "google.cloud.audit.log.v1.written"
RUN_API = "run.googleapis.com"
#: The guard's annotations: a write carrying them with no template is its own.
GUARD_ANNOTATION_PREFIX = "deploy-guard.dev/"
#: What an ``update_mask`` of the guard's own writes may name.
GUARD_WRITE_PATHS = frozenset({"traffic", "annotations"})
#: Seconds a revision's create time may precede the request's time (the earlier of
#: the entry's ``timestamp`` and ``requestAttributes.time``) and still be the write's,
#: when no revision was created after it: the two times of a real entry were 0.3 s
#: apart, so the clocks involved agree to about that.
CLOCK_TOLERANCE_S = 1.0
_WRITES = ("Services.CreateService", "Services.ReplaceService", "Services.UpdateService")
#: What the names the guard echoes may hold: an event is untrusted input, and anything
#: else in it (headers, bodies, messages) is never printed at all.
_METHOD = re.compile(r"[A-Za-z][\w.]{0,199}")
_NAME = re.compile(r"[\w.:@+-]{1,254}")
_RESOURCE = re.compile(r"[\w.:@+/-]{1,500}")
_DELETES = ("Services.DeleteService", "Revisions.DeleteRevision")


class EventError(ConfigError):
    """The audit event is not one the guard can read (exit 2): the message names what."""


@dataclass(frozen=True)
class AuditWrite:
    """One audit entry, as much as the guard needs of it (absent: "" or None)."""

    method: str  # google.cloud.run.v1.Services.ReplaceService
    api_service: str  # run.googleapis.com
    project: str = ""
    region: str = ""
    service: str = ""
    principal: str = ""
    #: When the call was made: the earlier of ``requestAttributes.time`` and ``timestamp``.
    requested_at: datetime | None = None
    timestamp: str = ""  # the entry's, as written
    insert_id: str = ""
    resource_name: str = ""
    status_code: int = 0
    #: ``operation.first`` / ``operation.last``; None: the entry has no ``operation``.
    operation: tuple[bool, bool] | None = None
    #: The request's ``update_mask`` paths; None: no mask (the whole service is sent).
    update_mask: tuple[str, ...] | None = None
    #: The annotations the request sends on the service.
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: A revision the request names (``--revision-suffix``, ``template.revision``).
    named_revision: str = ""
    #: The latest created revision of a response that describes this write's result.
    response_revision: str = ""

    @property
    def verb(self) -> str:
        """``Services.UpdateService`` (the last two parts of the method name)."""
        return ".".join(self.method.split(".")[-2:])

    @property
    def api(self) -> str:
        """``v1`` or ``v2`` (the Admin API version the caller used), "" if neither."""
        parts = self.method.split(".")
        return parts[3] if len(parts) > 4 and parts[:3] == ["google", "cloud", "run"] else ""

    def summary(self) -> dict[str, Any]:
        """What the report keeps of the entry (never the request's or response's body)."""
        return {
            "method": self.method,
            "principal": self.principal,
            "resource_name": self.resource_name,
            "timestamp": self.timestamp,
            "insert_id": self.insert_id,
        }


@dataclass(frozen=True)
class Decision:
    """Check the write, or skip it for ``reason`` (one line, for people)."""

    check: bool
    reason: str = ""


CHECK = Decision(True)


# --- reading -----------------------------------------------------------------------------


def audit_writes(text: str) -> list[AuditWrite]:
    """Every audit entry in ``text`` (any of the module's forms), in order."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        # never quote the text: an event may carry tokens
        raise EventError(f"the audit event is not JSON ({_position(exc)})") from None
    items = document if isinstance(document, list) else [document]
    if not items:
        raise EventError("the audit event is an empty list: no entry to read")
    return [read_entry(_log_entry(item, i), i) for i, item in enumerate(items)]


def _position(exc: ValueError) -> str:
    line, col = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    return f"line {line}, column {col}" if line else "unreadable"


def _log_entry(item: Any, index: int) -> dict[str, Any]:
    """The LogEntry of one item: itself, a CloudEvent's ``data``, or a push's message."""
    where = f"item {index}: " if index else ""
    if not isinstance(item, dict):
        raise EventError(f"{where}expected a JSON object (a LogEntry or a CloudEvent)")
    if "specversion" in item or ("data" in item and "type" in item):
        kind = item.get("type")
        if kind not in (None, EVENT_TYPE):
            shown = _safe(kind, _METHOD) or "(unreadable)"
            raise EventError(
                f"{where}a CloudEvent of type {shown}: expected {EVENT_TYPE} "
                "(an Eventarc trigger on Cloud Audit Logs)"
            )
        data = item.get("data")
        if data is None and "data_base64" in item:
            data = _decoded(item["data_base64"], f"{where}data_base64")
        if isinstance(data, str):
            data = _parsed(data, f"{where}data")
        if not isinstance(data, dict):
            raise EventError(f"{where}the CloudEvent has no data: the LogEntry is missing")
        return data
    message = item.get("message")
    if isinstance(message, dict) and "data" in message and "protoPayload" not in item:
        data = _parsed(_decoded(message["data"], f"{where}message.data"), f"{where}message.data")
        if not isinstance(data, dict):
            raise EventError(f"{where}message.data is not a LogEntry object")
        return data
    return item


def _decoded(value: Any, where: str) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise EventError(f"{where} is not base64 of UTF-8 text") from None


def _parsed(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise EventError(f"{where} is not JSON ({_position(exc)})") from None


def read_entry(entry: dict[str, Any], index: int = 0) -> AuditWrite:
    """An :class:`AuditWrite` from one LogEntry dict (camelCase, as the API prints it)."""
    where = f"item {index}: " if index else ""
    payload = entry.get("protoPayload")
    if not isinstance(payload, dict):
        raise EventError(
            f"{where}no protoPayload: not an audit log entry (an Admin Activity entry has "
            "protoPayload.serviceName, .methodName and .resourceName)"
        )
    if not _text(payload.get("methodName")):
        raise EventError(f"{where}protoPayload.methodName is missing: which call is it?")
    method = _safe(payload.get("methodName"), _METHOD)
    if not method:
        raise EventError(f"{where}protoPayload.methodName is not a method name")
    request = _dict(payload.get("request"))
    service_body = _dict(request.get("service"))
    labels = _dict(_dict(entry.get("resource")).get("labels"))
    resource_name = _text(payload.get("resourceName"))
    names = [resource_name, _text(request.get("name")), _text(service_body.get("name"))]
    stamp = _text(entry.get("timestamp"))
    asked = _text(_dig(payload, "requestMetadata", "requestAttributes", "time"))
    status = _dict(payload.get("status"))
    op = entry.get("operation")
    project = (
        _text(labels.get("project_id"))
        or _segment(names, "projects")
        or _segment([_text(entry.get("logName"))], "projects")
        or _segment(names, "namespaces")
    )
    region = (
        _text(labels.get("location"))
        or _segment(names, "locations")
        or _text(request.get("region"))
    )
    service = _text(labels.get("service_name")) or _segment(names, "services")
    return AuditWrite(
        method=method,
        api_service=_safe(payload.get("serviceName"), _NAME),
        project=_safe(project, _NAME),
        region=_safe(region, _NAME),
        service=_safe(service, _NAME),
        principal=_safe(_dig(payload, "authenticationInfo", "principalEmail"), _NAME),
        requested_at=_earliest(_time(asked), _time(stamp)),
        timestamp=stamp if _time(stamp) else "",
        insert_id=_safe(entry.get("insertId"), _NAME),
        resource_name=_safe(resource_name, _RESOURCE),
        status_code=_int(status.get("code")),
        operation=(bool(op.get("first")), bool(op.get("last"))) if isinstance(op, dict) else None,
        update_mask=_mask(request.get("updateMask", request.get("update_mask"))),
        annotations=_annotations(service_body),
        named_revision=_safe(
            _text(_dig(service_body, "template", "revision"))
            or _text(_dig(service_body, "spec", "template", "metadata", "name")),
            _NAME,
        ),
        response_revision=_safe(_current_revision(_dict(payload.get("response"))), _NAME),
    )


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _safe(value: Any, pattern: re.Pattern[str]) -> str:
    """``value`` if it is a name of ``pattern``'s form, else "" (never echoed as it is)."""
    text = _text(value)
    return text if pattern.fullmatch(text) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        return 0


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = _dict(data).get(key)
    return data


def _time(text: str) -> datetime | None:
    from deploy_guard.logfilter import parse_time

    return parse_time(text) if text else None


def _earliest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _segment(names: Iterable[str], collection: str) -> str:
    """The id after ``collection/`` in the first resource name that has one."""
    for name in names:
        parts = name.strip("/").split("/")
        for i, part in enumerate(parts[:-1]):
            if part == collection and parts[i + 1]:
                return parts[i + 1]
    return ""


def _mask(value: Any) -> tuple[str, ...] | None:
    """A FieldMask as JSON: ``"traffic,annotations"`` (canonical) or ``{"paths": [...]}``."""
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    if isinstance(value, dict) and isinstance(value.get("paths"), list):
        return tuple(str(p) for p in value["paths"])
    return None


def _annotations(service: dict[str, Any]) -> dict[str, str]:
    """The service's annotations: v2 ``annotations``, v1 ``metadata.annotations``."""
    found = _dict(service.get("annotations")) or _dict(_dig(service, "metadata", "annotations"))
    return {str(k): str(v) for k, v in found.items()}


def _current_revision(response: dict[str, Any]) -> str:
    """The latest created revision a response names, if it describes the write's result.

    A v1 ReplaceService answers before Cloud Run acts: a real entry's response had
    ``metadata.generation`` 23 with ``status.observedGeneration`` 22 and the *old*
    ``latestCreatedRevisionName``. So a response counts only when its observed
    generation has caught up with its generation.
    """
    knative = (  # v1
        _int(_dig(response, "metadata", "generation")),
        _int(_dig(response, "status", "observedGeneration")),
        _text(_dig(response, "status", "latestCreatedRevisionName")),
    )
    v2 = (
        _int(response.get("generation")),
        _int(response.get("observedGeneration")),
        _text(response.get("latestCreatedRevision")).rsplit("/", 1)[-1],
    )
    for generation, observed, name in (knative, v2):
        if name and generation and observed >= generation:
            return name
    return ""


# --- deciding ----------------------------------------------------------------------------


def decide(write: AuditWrite, *, skip_principals: Iterable[str] = ()) -> Decision:
    """Whether the entry records a deploy to check, from the entry alone (rules 1 to 6)."""
    what = write.method
    if write.api_service != RUN_API:
        shown = write.api_service or "no serviceName"
        return Decision(False, f"not a Cloud Run entry ({shown}, {what})")
    if write.verb in _DELETES:
        return Decision(False, f"a delete ({what}): nothing is left to check")
    if write.verb not in _WRITES:
        return Decision(False, f"not a service deploy ({what})")
    if write.status_code != 0:
        return Decision(
            False, f"the call failed (status {write.status_code}): Cloud Run changed nothing"
        )
    if write.operation is not None and write.operation[1] and not write.operation[0]:
        return Decision(False, "the end of a long-running operation: its first entry is checked")
    if own_write(write):
        return Decision(False, "deploy-guard's own write (traffic and annotations only)")
    if write.update_mask is not None and not any(
        p.split(".", 1)[0] == "template" for p in write.update_mask
    ):
        paths = ",".join(write.update_mask) or "nothing"
        return Decision(False, f"sends no template (update_mask {paths}): no new revision")
    if write.principal and write.principal in set(skip_principals):
        return Decision(False, f"made by {write.principal}, which --skip-principal names")
    return CHECK


def own_write(write: AuditWrite) -> bool:
    """The guard's own traffic or annotation write (see the module's rule 4)."""
    return (
        write.verb == "Services.UpdateService"
        and write.update_mask is not None
        and bool(write.update_mask)
        and set(write.update_mask) <= GUARD_WRITE_PATHS
        and any(k.startswith(GUARD_ANNOTATION_PREFIX) for k in write.annotations)
    )


def missing(write: AuditWrite) -> list[str]:
    """What names the deploy and is not in the entry (each with where it is read from)."""
    wanted = {
        "project": "resource.labels.project_id",
        "region": "resource.labels.location",
        "service": "resource.labels.service_name",
    }
    found = [f"{what} ({where})" for what, where in wanted.items() if not getattr(write, what)]
    if write.requested_at is None:
        found.append("time (timestamp)")
    return found


def choose(
    writes: Sequence[AuditWrite], *, skip_principals: Iterable[str] = ()
) -> tuple[AuditWrite | None, str]:
    """The one write to check (the newest deploy), or None and why every entry is skipped.

    Deploys of several services in one event are exit 2: one check judges one
    service (a trigger delivers one entry; a ``gcloud logging read`` list should
    be filtered to one service).
    """
    skip_principals = tuple(skip_principals)
    reasons: list[str] = []
    chosen: list[AuditWrite] = []
    for write in writes:
        decision = decide(write, skip_principals=skip_principals)
        if decision.check:
            chosen.append(write)
        elif decision.reason not in reasons:
            reasons.append(decision.reason)
    if not chosen:
        prefix = ""
        if len(writes) > 1:
            prefix = f"none of the {len(writes)} entries is a deploy to check: "
        return None, prefix + "; ".join(reasons)
    for write in chosen:
        if gaps := missing(write):
            raise EventError(
                f"the audit entry ({write.method}) lacks what names the deploy: " + ", ".join(gaps)
            )
    services = sorted({(w.project, w.region, w.service) for w in chosen})
    if len(services) > 1:
        listed = ", ".join(f"{s} ({p}, {r})" for p, r, s in services)
        raise EventError(
            f"the event holds deploys of {len(services)} services ({listed}): one check "
            "judges one service; pass one entry at a time"
        )
    newest = max(chosen, key=lambda w: w.requested_at or datetime.min)
    return newest, ""


def created_revision(write: AuditWrite, revisions: Sequence[RevisionState]) -> RevisionState | None:
    """The revision the write created, or None if it created none.

    A revision the request names, or that a current response names, counts only
    if it was created at or after the request (re-sending a named template
    creates nothing); otherwise the first revision created after it, or, only when
    there is none, one created up to :data:`CLOCK_TOLERANCE_S` before it.
    """
    assert write.requested_at is not None
    since = write.requested_at.timestamp() - CLOCK_TOLERANCE_S
    named = write.named_revision or write.response_revision
    if named:
        match = next((r for r in revisions if r.short == named), None)
        return match if match is not None and match.create_time >= since else None
    asked = write.requested_at.timestamp()
    after = [r for r in revisions if r.create_time >= asked]
    near = [r for r in revisions if since <= r.create_time < asked]  # clock skew only
    found = after or near
    return min(found, key=lambda r: r.create_time) if found else None


def after_reads(
    write: AuditWrite,
    state: ServiceState,
    revisions: Sequence[RevisionState],
) -> tuple[RevisionState | None, Decision]:
    """Rule 7: the revision to check, with the service and its revisions read now."""
    revision = created_revision(write, revisions)
    if revision is None:
        return None, Decision(
            False,
            f"created no new revision in {write.service} (a traffic, tag or settings "
            "change without a new template)",
        )
    newer = sorted(
        (r for r in revisions if r.create_time > revision.create_time),
        key=lambda r: r.create_time,
    )
    if newer:
        return revision, Decision(
            False,
            f"{revision.short} was superseded by {newer[-1].short}, deployed after it "
            "(that deploy's own audit entry checks it)",
        )
    if revision.short in rejected(state.annotations):
        return revision, Decision(
            False, f"{revision.short} was judged already: it is on the rejected list"
        )
    if state.annotations.get(LAST_KNOWN_GOOD) == revision.short:
        return revision, Decision(
            False, f"{revision.short} was judged already: it is the last known good revision"
        )
    return revision, CHECK


__all__ = [
    "CLOCK_TOLERANCE_S",
    "EVENT_TYPE",
    "GUARD_ANNOTATION_PREFIX",
    "AuditWrite",
    "Decision",
    "EventError",
    "after_reads",
    "audit_writes",
    "choose",
    "created_revision",
    "decide",
    "missing",
    "own_write",
    "read_entry",
]
