"""Contracts between the emulator's parts.

The emulator runs on one asyncio event loop: the gRPC server (``grpc.aio``),
the router (aiohttp) and the revision processes (asyncio subprocesses). The
parts meet only through the small types and protocols below, so each can be
built and tested on its own:

- the Cloud Run Admin part owns services, revisions and traffic; it tells the
  router which URLs exist and where their traffic goes (:class:`RouterApi`);
- the router and the revision processes report what happened to the Logging
  and Monitoring stores (:class:`LogSink`, :class:`MetricSink`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.emulator.audit import Activity


@dataclass(frozen=True)
class RevisionRef:
    """Identifies one revision, with the labels Cloud Run puts on its resource."""

    project: str
    location: str
    service: str
    revision: str  # short name: "chat-00002-xyz"
    configuration: str  # Cloud Run uses the service name


@dataclass(frozen=True)
class RequestRecord:
    """One request the router finished (a WebSocket counts when it closes)."""

    ref: RevisionRef
    method: str
    url: str  # full URL as the client asked for it, query string included
    protocol: Literal["HTTP/1.1", "websocket"]
    status: int  # HTTP status; 101 for an upgraded WebSocket
    latency_s: float  # start to end (a WebSocket: its whole life)
    start_time: datetime  # timezone-aware UTC
    end_time: datetime
    request_size: int = 0
    response_size: int = 0
    user_agent: str = ""
    remote_ip: str = ""
    #: A WebSocket's close code as the revision sent it, when it ended with one.
    ws_close_code: int | None = None
    #: What the front end says about the request in its log (``textPayload``),
    #: e.g. that it reached the request timeout; "" for none.
    message: str = ""


class LogSink(Protocol):
    """Where log entries come from: revision output, the router, audit events."""

    def revision_output(
        self, ref: RevisionRef, stream: Literal["stdout", "stderr"], line: str, when: datetime
    ) -> None:
        """One line a revision's process printed (JSON lines become jsonPayload)."""

    def request(self, record: RequestRecord) -> None:
        """A request log (``httpRequest``) for a finished request."""

    def system(self, ref: RevisionRef, severity: str, message: str, when: datetime) -> None:
        """A platform message about a revision (``run.googleapis.com/varlog/system``)."""

    def audit(self, *, activity: Activity, when: datetime) -> None:
        """An admin-activity audit entry (CreateService, UpdateService, ...): see
        :mod:`deploy_guard.emulator.audit` for its shape."""


class MetricSink(Protocol):
    """Where Cloud Monitoring points come from."""

    def request(self, record: RequestRecord) -> None:
        """Count a finished request: request_count and request_latencies."""


@dataclass(frozen=True)
class Backend:
    """A running revision the router can send requests to."""

    ref: RevisionRef
    host: str
    port: int
    #: The revision's request timeout (``template.timeout``; Cloud Run's default is
    #: 300 s): the router cuts any request, WebSocket sessions included, at it.
    timeout_s: float = 300.0


@dataclass(frozen=True)
class Route:
    """A share of an endpoint's new connections that go to one backend."""

    backend: Backend | None  # None: the revision is not serving (503 from the router)
    percent: int
    #: The revision this share belongs to, so a 503 for a revision that is not
    #: serving (its process died) is still logged and counted against it.
    ref: RevisionRef | None = None


class RouterApi(Protocol):
    """What the Cloud Run Admin part asks of the router.

    An *endpoint* is one URL: a service's own URL (key ``"svc:<name>"``) or a
    tag's URL (key ``"tag:<service>:<tag>"``). Each endpoint listens on its own
    loopback port; routes apply to new connections only, so open WebSockets
    stay on the revision they connected to.
    """

    async def open_endpoint(self, key: str) -> str:
        """Start serving ``key``; return its URL (``http://127.0.0.1:PORT``). Idempotent."""
        ...

    async def close_endpoint(self, key: str) -> None:
        """Stop accepting new connections on ``key``. Idempotent."""
        ...

    def set_routes(self, key: str, routes: list[Route]) -> None:
        """Replace ``key``'s traffic split (percents sum to 100, or the list is empty)."""
