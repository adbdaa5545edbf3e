"""The event sink a run fires into: every subscribed notifier, concurrently, in the background.

:meth:`Notifiers.fire` returns at once: each notifier whose ``on:`` holds the
event's kind gets its own task, so a dead receiver holds up neither the run
(its verdict, its rollback, its exit code) nor the other receivers. Each
delivery ends in a :class:`~deploy_guard.events.model.Delivery` handed to the
``done`` callback the run gave (the report keeps it, the log says it).

When the run is over, :meth:`Notifiers.drain` waits for the deliveries still
under way, at most ``Bounds.total`` seconds (they are bounded themselves, so it
rarely waits that long), and records the ones it had to give up as failed. A run
with no ``notify:`` has an empty fan-out (:meth:`Notifiers.none`): firing into it
does nothing, so the run never asks whether it has notifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from deploy_guard.events.delivery import Bounds
from deploy_guard.events.model import Delivery, Event
from deploy_guard.events.notifier import Notifier
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.notify")

Done = Callable[[Delivery], None]


@dataclass(frozen=True)
class Channel:
    """One notifier and the event kinds it was asked for."""

    notifier: Notifier
    on: frozenset[str]


class Notifiers:
    """Fans events out to the channels that want them (see the module docstring)."""

    def __init__(self, channels: Sequence[Channel] = (), *, bounds: Bounds | None = None) -> None:
        self.channels = list(channels)
        self.bounds = bounds or Bounds()
        self._pending: dict[asyncio.Task[Delivery], tuple[Channel, Event, Done]] = {}

    @classmethod
    def none(cls) -> Notifiers:
        """No channel: firing does nothing."""
        return cls()

    def wants(self, kind: str) -> bool:
        return any(kind in channel.on for channel in self.channels)

    @property
    def kinds(self) -> Collection[str]:
        return frozenset().union(*(c.on for c in self.channels)) if self.channels else ()

    def fire(self, event: Event, report: dict[str, Any], done: Done) -> None:
        """Start delivering ``event`` to each channel that wants it; return at once."""
        for channel in self.channels:
            if event.kind not in channel.on:
                continue
            task = asyncio.ensure_future(self._post(channel, event, report))
            self._pending[task] = (channel, event, done)
            task.add_done_callback(self._finished)

    async def _post(self, channel: Channel, event: Event, report: dict[str, Any]) -> Delivery:
        try:
            return await channel.notifier.post(event, report)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a notifier's bug is a failed delivery, not the run's
            return Delivery(
                channel.notifier.name,
                event.kind,
                event.id,
                "failed",
                1,
                f"internal error: {type(exc).__name__}",
            )

    def _finished(self, task: asyncio.Task[Delivery]) -> None:
        channel, event, done = self._pending.pop(task)
        if task.cancelled():
            delivery = Delivery(
                channel.notifier.name,
                event.kind,
                event.id,
                "failed",
                1,
                "cancelled: the run ended before it was delivered",
            )
        else:
            delivery = task.result()
        try:
            done(delivery)
        except Exception:  # the run's bookkeeping must not break the loop's callbacks
            log.exception("notification_record_failed", notifier=delivery.notifier)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def cancel(self) -> None:
        """Give up every delivery under way (each is recorded as failed)."""
        for task in list(self._pending):
            task.cancel()

    async def drain(self, within: float | None = None) -> None:
        """Wait for the deliveries under way (at most ``within`` s), then close the notifiers."""
        bound = self.bounds.total + 1.0 if within is None else within
        tasks = list(self._pending)
        try:
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=bound)
                for task in late:
                    task.cancel()
                if late:
                    await asyncio.wait(late)
        finally:
            for channel in self.channels:
                with contextlib.suppress(Exception):
                    await channel.notifier.aclose()
