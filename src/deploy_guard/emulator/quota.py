"""Cloud Logging's read quota, per project, for the emulator (off unless asked for).

Cloud Logging lets a project make a fixed number of read requests a minute
(``entries.list``; reported as 60, later 120), and refuses the rest with
RESOURCE_EXHAUSTED in words like these, seen in public reports (bridgy-fed issue
620, DefangLabs/defang issue 1268)::

    Quota exceeded for quota metric 'Read requests' and limit 'Read requests per
    minute' of service 'logging.googleapis.com' for consumer 'project_number:NNN'.

with a ``google.rpc.ErrorInfo`` detail (reason ``RATE_LIMIT_EXCEEDED``, metadata
``quota_limit: ReadRequestsPerMinutePerProject``, ``quota_limit_value``,
``quota_metric: logging.googleapis.com/read_requests``, ``quota_unit:
1/min/{project}``) and a ``google.rpc.Help`` link. The emulator answers the same,
details included, so google-api-core hands a client the same ``ResourceExhausted``
with the same ``reason``.

How Google counts is not documented in detail; the emulator's choices: a sliding
window of 60 s; a refused call does not count; the project charged is the one read
(Google charges the caller's quota project, the same one in a fleet that reads its
own project); only ``ListLogEntries`` counts (whether live tailing counts against
the read quota is unconfirmed; tails have their own limit of 10 per project).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from deploy_guard.emulator.names import project_number

METRIC = "logging.googleapis.com/read_requests"
LIMIT = "ReadRequestsPerMinutePerProject"
WINDOW_S = 60.0


def quota_message(project: str) -> str:
    """Google's words for a refused read."""
    return (
        "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per "
        f"minute' of service 'logging.googleapis.com' for consumer "
        f"'project_number:{project_number(project)}'."
    )


class ReadQuota:
    """At most ``per_minute`` reads per project in any 60 s; thread-safe.

    ``clock`` is monotonic seconds (a test steps it). Every admitted call's time is
    kept per project while it is in the window; :attr:`admitted` and
    :attr:`refused` count since the start.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("a read quota allows at least 1 call a minute")
        self.per_minute = per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._calls: dict[str, deque[float]] = {}
        self.admitted = 0
        self.refused = 0

    def take(self, projects: Iterable[str]) -> str | None:
        """Charge one read to each project; the first project over its quota (None: all ok).

        Nothing is charged when any project is over: the call is refused whole.
        """
        with self._lock:
            now = self.clock()
            windows = []
            for project in sorted(set(projects)):
                window = self._calls.setdefault(project, deque())
                while window and window[0] <= now - WINDOW_S:
                    window.popleft()
                if len(window) >= self.per_minute:
                    self.refused += 1
                    return project
                windows.append(window)
            for window in windows:
                window.append(now)
            self.admitted += 1
            return None

    def in_window(self, project: str) -> int:
        """Reads charged to ``project`` in the last 60 s."""
        with self._lock:
            now = self.clock()
            return sum(1 for t in self._calls.get(project, ()) if t > now - WINDOW_S)

    def details(self, project: str) -> bytes:
        """The ``grpc-status-details-bin`` trailer: a ``google.rpc.Status`` with details."""
        from google.protobuf import any_pb2
        from google.rpc import code_pb2, error_details_pb2, status_pb2

        info = error_details_pb2.ErrorInfo(
            reason="RATE_LIMIT_EXCEEDED",
            domain="googleapis.com",
            metadata={
                "consumer": f"projects/{project_number(project)}",
                "quota_limit": LIMIT,
                "quota_limit_value": str(self.per_minute),
                "quota_location": "global",
                "quota_metric": METRIC,
                "quota_unit": "1/min/{project}",
                "service": "logging.googleapis.com",
            },
        )
        help_ = error_details_pb2.Help(
            links=[
                error_details_pb2.Help.Link(
                    description="Request a higher quota limit.",
                    url="https://cloud.google.com/docs/quotas/help/request_increase",
                )
            ]
        )
        packed = []
        for detail in (info, help_):
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        status = status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED, message=quota_message(project), details=packed
        )
        return bytes(status.SerializeToString())

    async def charge(self, projects: Iterable[str], context: Any) -> None:
        """Charge a read, or end the call with RESOURCE_EXHAUSTED as Cloud Logging does."""
        over = self.take(projects)
        if over is None:
            return
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            quota_message(over),
            trailing_metadata=(("grpc-status-details-bin", self.details(over)),),
        )


__all__ = ["ReadQuota", "project_number", "quota_message"]
