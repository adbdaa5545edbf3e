"""``kind: log`` against the emulator's Cloud Logging: one structured entry per event.

The entry is read back with the filter ``docs/notifications.md`` gives its
log-based alert policy, so the alert's filter is known to select it.
"""

from __future__ import annotations

from typing import Any

import grpc
import jsonschema
import pytest
from google.protobuf.json_format import MessageToDict

from deploy_guard.events.delivery import Bounds
from deploy_guard.events.fanout import Channel, Notifiers
from deploy_guard.events.google import LOG_ID, LogNotifier
from deploy_guard.events.model import Delivery, Event
from deploy_guard.events.payload import schema
from report.samples import CANDIDATE, check_report

FAST = Bounds(attempt_timeout=5.0, attempts=3, backoff=0.01, backoff_max=0.02, total=20.0)
#: The log-based alert's filter in docs/notifications.md, for project local-project.
ALERT_FILTER = (
    'logName="projects/local-project/logs/deploy-guard-notifications" '
    'AND jsonPayload.kind=("rollback" OR "rollback_failed")'
)


async def write(clients: Any, *events: Event) -> list[Delivery]:
    done: list[Delivery] = []
    notifier = LogNotifier(clients, "local-project", bounds=FAST)
    fan = Notifiers([Channel(notifier, frozenset(e.kind for e in events))], bounds=FAST)
    for ev in events:
        fan.fire(ev, check_report().to_dict(), done.append)
    await fan.drain()
    return done


def entries(clients: Any, filter_: str) -> list[Any]:
    pages = clients.logging().list_log_entries(
        resource_names=["projects/local-project"], filter=filter_
    )
    return list(pages)


async def test_each_event_is_one_entry_the_alert_filter_selects(gcp_clients: Any) -> None:
    rollback = Event("rollback", "check", "chat", CANDIDATE, outcome=True)
    step = Event("step", "rollout", "chat", CANDIDATE, detail={"step": 1, "percent": 10})
    done = await write(gcp_clients, rollback, step)
    assert [(d.notifier, d.status) for d in done] == [("log", "delivered"), ("log", "delivered")]
    (entry,) = entries(gcp_clients, ALERT_FILTER)
    assert entry.log_name == f"projects/local-project/logs/{LOG_ID}"
    assert entry.resource.type == "global"
    assert entry.severity == 500  # ERROR
    assert entry.insert_id == rollback.id
    assert dict(entry.labels) == {"kind": "rollback", "service": "chat", "command": "check"}
    payload = MessageToDict(type(entry).pb(entry).json_payload)
    assert payload["message"] == check_report().message
    jsonschema.validate(payload, schema())  # a Struct's 1.0 is an integer to JSON Schema
    assert payload["id"] == rollback.id
    steps = entries(gcp_clients, f'logName:"{LOG_ID}" AND jsonPayload.kind="step"')
    assert [e.severity for e in steps] == [200]  # INFO


@pytest.mark.fault("notify", "WriteLogEntries UNAVAILABLE twice", "retried; written at attempt 3")
async def test_a_logging_outage_is_retried_within_the_bounds(
    gcp_clients: Any, emulator: Any
) -> None:
    emulator.faults.fail("WriteLogEntries", grpc.StatusCode.UNAVAILABLE, times=2)
    (delivery,) = await write(gcp_clients, Event("fail", "check", "chat", CANDIDATE, outcome=True))
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert len(entries(gcp_clients, f'logName:"{LOG_ID}"')) == 1


@pytest.mark.fault("notify", "WriteLogEntries PERMISSION_DENIED", "failed at once; says the status")
async def test_a_permission_error_is_not_retried(gcp_clients: Any, emulator: Any) -> None:
    emulator.faults.fail("WriteLogEntries", grpc.StatusCode.PERMISSION_DENIED)
    (delivery,) = await write(gcp_clients, Event("fail", "check", "chat", CANDIDATE, outcome=True))
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert delivery.error.startswith("write the log entry: PERMISSION_DENIED")
