"""The one interface every notifier has, and the one that does nothing.

A notifier turns an event and its run's report into one delivery: a Slack
message, a signed POST, a Pub/Sub message, a log entry. It never raises: how
the delivery ended is a :class:`~deploy_guard.events.model.Delivery`, data for
the report, because a notification is told about, never a reason for the run
to change course (flagger's ``pkg/notifier`` has the same shape, with a no-op
notifier where nothing is configured instead of ``if notifier:`` everywhere).
"""

from __future__ import annotations

from typing import Any, Protocol

from deploy_guard.events.model import Delivery, Event


class Notifier(Protocol):
    """Delivers events to one place."""

    #: Names the notifier in the report and the log, never its secret:
    #: ``slack (SLACK_WEBHOOK_URL)``, ``pubsub (projects/p/topics/t)``.
    name: str

    async def post(self, event: Event, report: dict[str, Any]) -> Delivery:
        """Deliver ``event``; ``report`` is the run's report document (redacted)."""
        ...

    async def aclose(self) -> None:
        """Let go of connections and clients (the run is over)."""
        ...


class NoNotifier:
    """Delivers nothing, successfully: the default where nothing is configured."""

    name = "none"

    async def post(self, event: Event, report: dict[str, Any]) -> Delivery:
        return Delivery(self.name, event.kind, event.id, "delivered", 0)

    async def aclose(self) -> None:
        return None
