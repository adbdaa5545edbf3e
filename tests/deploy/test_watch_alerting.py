"""The heartbeat's log-based metric and the alert on its silence are what the APIs accept.

``deploy/watch/heartbeat-metric.yaml`` is parsed by the ``LogMetric`` message of
google-cloud-logging and ``alert-policy.yaml`` by the ``AlertPolicy`` message of
google-cloud-monitoring, with unknown fields refused, as ``gcloud logging metrics create
--config-from-file`` and ``gcloud alpha monitoring policies create --policy-from-file`` would.
The metric's filter is run (deploy-guard's own Logging filter evaluator) against a heartbeat
rendered by deploy-guard's own Cloud Logging JSON, as Cloud Run stores it.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from google.protobuf import json_format

from watch_deploy import the_document

HEARTBEAT_METRIC = "deploy-guard-watch-heartbeat"
#: What a heartbeat carries besides its event name (the watch design).
HEARTBEAT_FIELDS = ("service", "revision", "status", "mode", "degraded")


def heartbeat_entry() -> dict[str, Any]:
    """A heartbeat as Cloud Logging stores it from a watcher on Cloud Run.

    The JSON line is deploy-guard's own (its Cloud Logging renderer); the Logging agent then
    moves ``severity`` and ``time`` out of the payload and keeps the rest as jsonPayload.
    """
    from deploy_guard import log as guard_log

    out = io.StringIO()
    guard_log.configure(json=True, level="info", stream=out)
    try:
        guard_log.get_logger("deploy_guard.watch").info(
            "watch_heartbeat",
            service="chat-agent",
            revision="chat-agent-00007-abc",
            status="pass",
            mode="tail",
            degraded=False,
        )
    finally:
        guard_log.configure(json=None, level="info")
    (line,) = out.getvalue().splitlines()
    payload = json.loads(line)
    severity = payload.pop("severity")
    timestamp = payload.pop("time")
    return {
        "logName": "projects/acme-prod/logs/run.googleapis.com%2Fstderr",
        "resource": {"type": "cloud_run_worker_pool", "labels": {"location": "europe-west1"}},
        "severity": severity,
        "timestamp": timestamp,
        "jsonPayload": payload,
    }


def test_the_heartbeat_metric_is_a_log_metric_that_counts_heartbeats() -> None:
    from google.cloud.logging_v2.types import LogMetric

    from deploy_guard.logfilter import parse

    doc = the_document("heartbeat-metric.yaml")
    metric = json_format.ParseDict(doc, LogMetric.pb(LogMetric()), ignore_unknown_fields=False)
    assert metric.metric_descriptor.metric_kind == metric.metric_descriptor.MetricKind.DELTA
    assert metric.metric_descriptor.value_type == metric.metric_descriptor.ValueType.INT64
    entry = heartbeat_entry()
    heartbeats = parse(metric.filter)
    assert heartbeats.matches(entry), (metric.filter, entry)
    other = json.loads(json.dumps(entry))
    other["jsonPayload"]["message"] = other["jsonPayload"]["event"] = "rollback_completed"
    assert not heartbeats.matches(other)
    # one label per extractor, each read from a field the heartbeat has
    labels = {label.key for label in metric.metric_descriptor.labels}
    assert labels == set(metric.label_extractors) >= {"service"}
    for extractor in metric.label_extractors.values():
        (path,) = re.findall(r"^EXTRACT\(jsonPayload\.(\w+)\)$", extractor)
        assert path in HEARTBEAT_FIELDS, extractor
        assert path in entry["jsonPayload"], extractor


def test_the_bad_shapes_are_refused_by_the_real_messages() -> None:
    from google.cloud.logging_v2.types import LogMetric
    from google.cloud.monitoring_v3.types import AlertPolicy

    with pytest.raises(json_format.ParseError, match="labelExtractor"):
        json_format.ParseDict({"labelExtractor": {}}, LogMetric.pb(LogMetric()))
    with pytest.raises(json_format.ParseError, match="conditionAbsence"):
        json_format.ParseDict(
            {"conditions": [{"conditionAbsence": {}}]}, AlertPolicy.pb(AlertPolicy())
        )


def test_the_alert_fires_on_a_silent_long_lived_watcher() -> None:
    from google.cloud.monitoring_v3.types import Aggregation, AlertPolicy

    doc = the_document("alert-policy.yaml")
    policy = json_format.ParseDict(doc, AlertPolicy.pb(AlertPolicy()), ignore_unknown_fields=False)
    assert policy.enabled.value
    assert policy.conditions
    resource_types = set()
    for condition in policy.conditions:
        assert condition.WhichOneof("condition") == "condition_absent", condition.display_name
        absent = condition.condition_absent
        assert f'metric.type="logging.googleapis.com/user/{HEARTBEAT_METRIC}"' in absent.filter
        # Monitoring refuses a filter without a resource.type restriction
        (resource_type,) = re.findall(r'resource\.type="([a-z_]+)"', absent.filter)
        resource_types.add(resource_type)
        # heartbeats come every minute: minutes of silence, not one late entry
        assert 5 * 60 <= absent.duration.seconds <= 30 * 60
        (aggregation,) = absent.aggregations
        # per watched service, whatever revision or instance of the watcher logged it
        assert list(aggregation.group_by_fields) == ["metric.label.service"]
        assert aggregation.cross_series_reducer == Aggregation.Reducer.REDUCE_SUM
    # the two forever-watchers; a job stops by design when --for ends
    assert resource_types == {"cloud_run_worker_pool", "cloud_run_revision"}
    assert "${metric.label.service}" in policy.documentation.content
