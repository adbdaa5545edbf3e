"""The notifiers that talk to Google APIs: ``pubsub`` (a topic) and ``log`` (Cloud Logging).

Both carry the same versioned payload as the webhook
(:mod:`deploy_guard.events.payload`): as a Pub/Sub message's data, with
attributes to filter subscriptions on (``attributes.kind = "rollback"``), and
as one Cloud Logging entry's ``jsonPayload``, which a log-based alert policy in
Cloud Monitoring can page someone on (``docs/notifications.md`` has one).

The client libraries' calls are blocking: each attempt runs in a worker thread
with its own timeout and no retry of its own, so :func:`~deploy_guard.events.delivery.deliver`
is the one place that retries and bounds them, as for every other notifier.
Pub/Sub finds its emulator through ``PUBSUB_EMULATOR_HOST`` (the library's own
variable); the log entry goes through the guard's own Cloud Logging client, so
``DEPLOY_GUARD_EMULATOR_HOST`` sends it to the guard's emulator.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from deploy_guard.events.delivery import Bounds, DeliveryError, deliver
from deploy_guard.events.model import Delivery, Event
from deploy_guard.events.payload import SCHEMA, build

#: gRPC statuses worth another attempt when publishing or writing.
RETRY_CODES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "ABORTED", "UNKNOWN"}
)
#: The log the ``log`` notifier writes to: ``projects/P/logs/deploy-guard-notifications``.
LOG_ID = "deploy-guard-notifications"
#: The entry's severity by event kind (what a log-based alert filters on first).
SEVERITY = {
    "rollback_failed": "CRITICAL",
    "error": "CRITICAL",
    "rollback": "ERROR",
    "fail": "ERROR",
    "inconclusive": "WARNING",
    "watch_degraded": "WARNING",
    "promote": "NOTICE",
    "pass": "INFO",
    "step": "INFO",
}
#: Payload fields a Pub/Sub subscription can filter on, as message attributes.
ATTRIBUTES = ("kind", "command", "service", "revision", "verdict", "project")


def _api_error(exc: BaseException, what: str) -> DeliveryError:
    """A Google API error as a delivery error: retryable when the status may pass."""
    from deploy_guard.gcp.errors import status_name

    code = status_name(exc) or type(exc).__name__
    text = " ".join(str(getattr(exc, "message", "") or exc).split())[:160]
    return DeliveryError(f"{what}: {code}: {text}", retryable=code in RETRY_CODES)


class PubSubNotifier:
    """Publishes the payload to a topic, with attributes for filtering."""

    kind = "pubsub"

    def __init__(self, topic: str, *, bounds: Bounds, report_url: str | None = None) -> None:
        self.topic = topic
        self.name = f"pubsub ({topic})"
        self.bounds = bounds
        self.report_url = report_url
        self._publisher: Any = None

    def _client(self) -> Any:
        if self._publisher is None:
            from google.cloud.pubsub_v1 import PublisherClient

            self._publisher = PublisherClient()
        return self._publisher

    async def post(self, event: Event, report: dict[str, Any]) -> Delivery:
        payload = build(event, report, report_url=self.report_url)
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        attributes = {name: str(payload[name]) for name in ATTRIBUTES if payload.get(name)}
        attributes["schema"] = SCHEMA
        timeout = self.bounds.attempt_timeout

        def publish() -> None:
            try:
                future = self._client().publish(
                    self.topic, data, retry=None, timeout=timeout, **attributes
                )
                future.result(timeout=timeout)
            except DeliveryError:
                raise
            except TimeoutError:
                raise DeliveryError(f"no answer within {timeout:g}s", retryable=True) from None
            except Exception as exc:
                raise _api_error(exc, "publish") from None

        async def attempt() -> None:
            await asyncio.to_thread(publish)

        return await deliver(self.name, event, attempt, self.bounds)

    async def aclose(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await asyncio.to_thread(publisher.stop)


class LogNotifier:
    """Writes one structured Cloud Logging entry per event."""

    kind = "log"

    def __init__(
        self, clients: Any, project: str, *, bounds: Bounds, report_url: str | None = None
    ) -> None:
        self.clients = clients
        self.project = project
        self.name = "log"
        self.bounds = bounds
        self.report_url = report_url

    @property
    def log_name(self) -> str:
        return f"projects/{self.project}/logs/{LOG_ID}"

    def entry(self, event: Event, payload: dict[str, Any]) -> Any:
        """The LogEntry for one event: its jsonPayload is the payload, exactly."""
        from google.api import monitored_resource_pb2
        from google.cloud.logging_v2.types import LogEntry

        return LogEntry(
            log_name=self.log_name,
            resource=monitored_resource_pb2.MonitoredResource(
                type="global", labels={"project_id": self.project}
            ),
            severity=SEVERITY.get(event.kind, "DEFAULT"),
            json_payload=payload,
            labels={"kind": event.kind, "service": event.service, "command": event.command},
            insert_id=event.id,
        )

    async def post(self, event: Event, report: dict[str, Any]) -> Delivery:
        entry = self.entry(event, build(event, report, report_url=self.report_url))
        timeout = self.bounds.attempt_timeout

        def write() -> None:
            try:
                self.clients.logging().write_log_entries(
                    entries=[entry], retry=None, timeout=timeout
                )
            except Exception as exc:
                raise _api_error(exc, "write the log entry") from None

        async def attempt() -> None:
            await asyncio.to_thread(write)

        return await deliver(self.name, event, attempt, self.bounds)

    async def aclose(self) -> None:
        return None  # the run's clients are closed with the run
