"""Cloud Logging's ``entries:list`` and Cloud Monitoring's ``timeSeries.list`` over REST.

``gcloud logging read FILTER`` sends ``POST /v2/entries:list`` with
``{"resourceNames": ["projects/P"], "filter": "timestamp>=\\"...\\" AND FILTER",
"orderBy": "timestamp desc", "pageSize": N}`` (seen on the wire). No ``gcloud
monitoring`` command reads time series (gcloud's monitoring group has
dashboards, policies, channels, snoozes, uptime checks and metrics scopes), so
``GET /v3/projects/P/timeSeries`` is for scripts and ``curl``; it takes the
REST query parameters (``filter``, ``interval.startTime``,
``aggregation.perSeriesAligner``, repeated ``aggregation.groupByFields``...).

Both parse the request into the same protobuf request the gRPC API takes, with
the protobuf JSON parser, so an unknown field is refused as Google's front ends
refuse it, and both answer with the stores' own paging, filters and
aggregation: the gRPC and REST answers are the same data.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from deploy_guard.emulator.logging_api import list_page, projects_of
from deploy_guard.emulator.logstore import LogStore, StoredEntry
from deploy_guard.emulator.metricstore import MetricStore
from deploy_guard.emulator.monitoring_api import list_time_series
from deploy_guard.emulator.quota import ReadQuota, quota_message
from deploy_guard.emulator.rest.errors import error_response, invalid, json_response
from deploy_guard.emulator.rest.http import read_json

#: Query parameters every Google REST API takes and that do not change the answer here.
SYSTEM_PARAMETERS = frozenset(
    {
        "alt",
        "prettyPrint",
        "fields",
        "key",
        "quotaUser",
        "$.xgafv",
        "callback",
        "access_token",
        "upload_protocol",
        "uploadType",
    }
)
#: Query parameters that are repeated fields of ListTimeSeriesRequest.
_REPEATED = frozenset({"aggregation.groupByFields", "secondaryAggregation.groupByFields"})


def _parse(data: dict[str, Any], message: Any) -> Any:
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise invalid(f"Invalid JSON payload received. {exc}") from exc
    return message


def entry_json(item: StoredEntry) -> dict[str, Any]:
    """A stored entry as REST LogEntry JSON (``textPayload``, ``httpRequest.status``...)."""
    from google.cloud.audit import audit_log_pb2  # noqa: F401  (AuditLog in protoPayload)
    from google.cloud.logging_v2.types import LogEntry

    data: dict[str, Any] = json_format.MessageToDict(LogEntry.pb(item.proto()))
    if "jsonPayload" in data:
        data["jsonPayload"] = _whole_numbers(data["jsonPayload"])
    return data


def _whole_numbers(value: Any) -> Any:
    """``59819.0`` -> ``59819``: a Struct holds doubles, and Google's JSON prints whole
    ones without a fraction (Python's would print ``59819.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


class Observability:
    """The two read methods, on the emulator's log and metric stores."""

    def __init__(
        self, logs: LogStore, metrics: MetricStore, quota: ReadQuota | None = None
    ) -> None:
        self.logs = logs
        self.metrics = metrics
        #: Cloud Logging's read quota, shared with the gRPC ``ListLogEntries`` (None: off).
        self.quota = quota

    async def list_entries(self, request: web.Request) -> web.Response:
        from google.cloud.logging_v2.types import ListLogEntriesRequest

        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected an object.")
        parsed = _parse(body, ListLogEntriesRequest.pb()())
        names = list(parsed.resource_names)
        if self.quota is not None:
            over = self.quota.take(projects_of(names))
            if over is not None:  # the same minute's budget as the gRPC path's
                return error_response("RESOURCE_EXHAUSTED", quota_message(over))

        def work() -> dict[str, Any]:
            found, token = list_page(
                self.logs,
                resource_names=names,
                filter_text=parsed.filter,
                order_by=parsed.order_by,
                page_size=parsed.page_size,
                page_token=parsed.page_token,
            )
            out: dict[str, Any] = {"entries": [entry_json(item) for item in found]}
            if token:
                out["nextPageToken"] = token
            return out if out["entries"] or token else {}

        return json_response(await asyncio.to_thread(work))

    async def list_time_series(self, request: web.Request) -> web.Response:
        from google.cloud import monitoring_v3

        body: dict[str, Any] = {}
        for key in set(request.query):
            if key in SYSTEM_PARAMETERS:
                continue
            values = request.query.getall(key)
            node = body
            *parents, leaf = key.split(".")
            for part in parents:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise invalid(f"query parameter {key!r} conflicts with {part!r}")
                node = child
            node[leaf] = list(values) if key in _REPEATED else values[-1]
        message = _parse(body, monitoring_v3.ListTimeSeriesRequest.pb()())
        message.name = f"projects/{request.match_info['project']}"
        wrapped = monitoring_v3.ListTimeSeriesRequest.wrap(message)
        response = list_time_series(self.metrics, wrapped)
        return json_response(
            json_format.MessageToDict(monitoring_v3.ListTimeSeriesResponse.pb(response))
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v2/entries:list", self.list_entries),
            web.get("/v3/projects/{project}/timeSeries", self.list_time_series),
        ]
