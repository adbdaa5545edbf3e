"""The emulator's router: Cloud Run's front end, on loopback.

Every service URL and every tag URL the emulated Admin API hands out is an
*endpoint* here: its own listening socket on ``127.0.0.1:0``. A request that
arrives on an endpoint goes to one revision, picked by the endpoint's traffic
split, and passes through unchanged: HTTP with its body streamed both ways, or
a WebSocket relayed frame by frame until one side closes.

Why aiohttp: it is the one library in the dependency set that speaks both HTTP
(server and client, with streaming bodies) and WebSocket (both sides) on one
port, and its WebSocket objects expose the raw close frame (``autoclose=False``)
so the router can hand a revision's close code and reason to the client
verbatim. The ``websockets`` library would need a separate HTTP layer for
plain requests, with no streaming request bodies.

What the router promises (the points a deploy gate depends on; the HTTP relay
is :mod:`deploy_guard.emulator.router_http`, the WebSocket relay
:mod:`deploy_guard.emulator.router_ws`):

- **Traffic split by smooth weighted round-robin** (nginx's algorithm), not
  random draws: over any run of 100 new connections a 50/50 split sends 50 to
  each side, and 90/10 interleaves the 10 evenly. Tests and probes get the
  same picture every time. A traffic change restarts the rotation.
- **A traffic change applies to new connections only.** The backend is picked
  once per request or WebSocket; an open WebSocket stays on its revision.
- **Close codes are end to end.** A close frame from the revision (1011 and
  its reason included) is sent to the client with the same code and reason,
  then the revision's close is answered. A revision that vanishes without a
  close frame makes the router drop the client's TCP connection without one,
  so the client sees an abnormal closure (1006), exactly as it would on Cloud
  Run. The reverse holds for a client that vanishes. A close frame with no
  status code is forwarded as 1000 (aiohttp cannot send an empty close frame).
- **Pings and pongs are relayed, not answered**, so a client's keepalive
  measures the revision, not the router.
- **Failures are HTTP answers**: no route, or a route to a revision that is
  not serving (its process died), is 503 with a Cloud Run-like body, logged
  against that revision; a revision that refuses the connection is 503. Those
  503s never reached a container, so they are not in request_count (Cloud
  Monitoring "Excludes requests that are not reaching your container
  instances"); one that breaks the HTTP exchange is 502; a revision that
  refuses a WebSocket upgrade gives the client its own status (never a 101).
- **The request timeout cuts every request**, as Cloud Run's does: each
  backend carries its revision's ``template.timeout`` (300 s when unset). An
  HTTP request with no answer by then gets 504 and Cloud Run's text; one whose
  answer is still streaming is cut (the client sees a short body). A
  WebSocket session still open then is cut on both sides without a close
  frame, so client and revision both see 1006 (abnormal closure): Cloud Run
  documents that WebSocket streams are requests subject to the timeout, and
  clients report dropped connections, not a close code. Both are logged at
  ERROR with "The request has been terminated because it has reached the
  maximum request timeout." One timer per request: no cost per frame.
- **Every finished request is reported** to the Logging and Monitoring sinks
  as one :class:`RequestRecord` (a WebSocket when it closes, with status 101
  and the revision's close code). A sink that raises is logged and ignored:
  the emulator's bookkeeping never breaks the traffic it watches.

Frames are relayed without decoding text and without per-message logging; one
client session (connection pool) serves every endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from deploy_guard.emulator.contracts import LogSink, MetricSink, RequestRecord, Route
from deploy_guard.emulator.router_http import (
    NO_AUTO_HEADERS,
    TIMEOUT_MESSAGE,
    record_of,
    relay_http,
    unavailable,
)
from deploy_guard.emulator.router_ws import (
    WsState,
    drop_client,
    drop_revision,
    is_websocket,
    relay_websocket,
)
from deploy_guard.log import get_logger

_log = get_logger("deploy_guard.emulator.router")


class _OneLineHttpLog(logging.Logger):
    """aiohttp's request-handler log: a bad request is one warning, never a traceback.

    A client that is not HTTP (a gRPC client given a router URL instead of the
    emulator's address) makes aiohttp log "Error handling request" with a
    traceback on the emulator's terminal; the cause fits on one line.
    """

    def __init__(self) -> None:
        super().__init__("deploy_guard.emulator.router.http")

    def _log(  # type: ignore[override]
        self, level: int, msg: object, args: Any, exc_info: Any = None, **_kw: Any
    ) -> None:
        if level < logging.WARNING:
            return
        text = str(msg) % args if args else str(msg)
        error = exc_info if isinstance(exc_info, BaseException) else None
        _log.warning(
            "router_bad_request",
            detail=text,
            error=f"{type(error).__name__}: {error}".splitlines()[0] if error else None,
            hint="is this client speaking HTTP? gRPC clients need the emulator's own address "
            "(DEPLOY_GUARD_EMULATOR_HOST), not a service URL",
        )


_HTTP_LOG = _OneLineHttpLog()

#: How long ``stop()`` lets in-flight requests finish before cancelling them.
_STOP_GRACE_S = 1.0


class _Picker:
    """Smooth weighted round-robin over one endpoint's routes (nginx's algorithm).

    Each pick adds every route's weight to its running score, takes the route
    with the highest score and subtracts the total weight from it. Over any
    ``total`` consecutive picks each route is chosen exactly ``weight`` times,
    spread as evenly as possible; no randomness, so tests are exact.
    """

    __slots__ = ("_routes", "_scores", "_total")

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [r for r in routes if r.percent > 0]
        self._scores = [0] * len(self._routes)
        self._total = sum(r.percent for r in self._routes)

    def pick(self) -> Route | None:
        """The route for the next new connection, or None if there is none."""
        if not self._routes:
            return None
        best = 0
        for i, route in enumerate(self._routes):
            self._scores[i] += route.percent
            if self._scores[i] > self._scores[best]:
                best = i
        self._scores[best] -= self._total
        return self._routes[best]


@dataclass(eq=False)
class _Endpoint:
    """One listening URL: a service's own URL or a tag's."""

    key: str
    url: str
    runner: web.ServerRunner
    site: web.TCPSite
    #: Set once the endpoint is closed; requests still arriving are hung up on.
    closed: asyncio.Event


class Router:
    """Cloud Run's front end for the emulator; implements ``RouterApi``.

    Lifecycle: ``await start()`` (or the first ``open_endpoint``), then any
    number of endpoints, then ``await stop()``, which stops every endpoint,
    closes open WebSockets with 1001 (going away) on both sides, gives other
    requests in flight a second to finish and releases the client pool.
    Everything runs on the caller's event loop; nothing here is thread-safe.
    """

    def __init__(self, log_sink: LogSink, metric_sink: MetricSink, host: str = "127.0.0.1") -> None:
        self._log_sink = log_sink
        self._metric_sink = metric_sink
        self._host = host
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[str, _Endpoint] = {}
        #: Closed endpoints whose in-flight requests may still be running.
        self._draining: list[web.ServerRunner] = []
        self._pickers: dict[str, _Picker] = {}
        self._sockets: set[WsState] = set()
        self._open_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Create the shared client pool. Idempotent."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, use_dns_cache=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # A body passes through as the revision encoded it.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=NO_AUTO_HEADERS,
            # Cloud Run's request timeout is the revision's business, not the router's.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def stop(self) -> None:
        """Stop every endpoint, close open WebSockets (1001), release the pool."""
        for key in list(self._endpoints):
            await self.close_endpoint(key)
        await asyncio.gather(
            *(self._shutdown_socket(s) for s in list(self._sockets)), return_exceptions=True
        )
        runners, self._draining = self._draining, []
        for runner in runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- RouterApi -------------------------------------------------------------

    async def open_endpoint(self, key: str) -> str:
        """Start serving ``key`` on a new loopback port; return its URL. Idempotent."""
        async with self._open_lock:
            existing = self._endpoints.get(key)
            if existing is not None:
                return existing.url
            await self.start()

            closed = asyncio.Event()

            async def handle(request: web.BaseRequest) -> web.StreamResponse:
                if closed.is_set():
                    # A keep-alive connection outlived its endpoint: hang up,
                    # as a server that is gone would.
                    if request.transport is not None:
                        request.transport.close()
                    return unavailable()
                return await self._handle(key, request)

            server = web.Server(handle, access_log=None, logger=_HTTP_LOG)
            runner = web.ServerRunner(server, shutdown_timeout=_STOP_GRACE_S)
            await runner.setup()
            site = web.TCPSite(runner, self._host, 0)
            await site.start()
            port = runner.addresses[0][1]
            url = f"http://{self._host}:{port}"
            self._endpoints[key] = _Endpoint(key, url, runner, site, closed)
            _log.info("endpoint_opened", key=key, url=url)
            return url

    async def close_endpoint(self, key: str) -> None:
        """Stop accepting connections on ``key``; requests in flight finish. Idempotent.

        A request that still arrives on a kept-alive connection is hung up on
        without an answer, so nobody keeps reaching a URL that no longer exists.
        """
        endpoint = self._endpoints.pop(key, None)
        if endpoint is None:
            return
        endpoint.closed.set()
        await endpoint.site.stop()
        self._draining.append(endpoint.runner)
        _log.info("endpoint_closed", key=key, url=endpoint.url)

    def set_routes(self, key: str, routes: list[Route]) -> None:
        """Replace ``key``'s split; it applies to new connections only."""
        self._pickers[key] = _Picker(routes)
        _log.info(
            "routes_set",
            key=key,
            routes=[
                {"revision": r.backend.ref.revision if r.backend else None, "percent": r.percent}
                for r in routes
            ],
        )

    def endpoint_url(self, key: str) -> str | None:
        """The URL ``key`` is served on, or None if it is not open."""
        endpoint = self._endpoints.get(key)
        return endpoint.url if endpoint else None

    # -- dispatch --------------------------------------------------------------

    async def _handle(self, key: str, request: web.BaseRequest) -> web.StreamResponse:
        picker = self._pickers.get(key)
        route = picker.pick() if picker is not None else None
        if route is None:
            return unavailable()
        if route.backend is None:
            if route.ref is not None:  # a revision that stopped serving: its 503
                started, t0 = datetime.now(UTC), time.perf_counter()
                self._report(
                    record_of(
                        route.ref, request, protocol="HTTP/1.1", status=503, started=started, t0=t0
                    ),
                    reached_container=False,
                )
            return unavailable()
        assert self._session is not None
        if is_websocket(request):
            return await relay_websocket(
                self._session, route.backend, request, self._report, self._sockets
            )
        return await relay_http(self._session, route.backend, request, self._report)

    def _report(self, record: RequestRecord, *, reached_container: bool = True) -> None:
        """Hand a finished request to both sinks; a failing sink is logged, never raised.

        A request the front end answered itself because no instance could take it
        is logged but not counted: Cloud Run's request_count "Excludes requests that
        are not reaching your container instances".
        """
        for name, sink in (("log", self._log_sink), ("metric", self._metric_sink)):
            if name == "metric" and not reached_container:
                continue
            try:
                sink.request(record)
            except Exception as exc:  # a sink bug must not break proxying
                _log.warning("request_sink_failed", sink=name, error=repr(exc))

    async def _shutdown_socket(self, state: WsState) -> None:
        """Close one relayed WebSocket with 1001 on both sides (router stopping)."""
        if state.closer is None:
            state.closer = "router"
            try:
                async with asyncio.timeout(_STOP_GRACE_S):
                    await state.downstream.close(code=1001, message=b"router stopping")
                    await state.upstream.close(code=1001, message=b"router stopping")
            except TimeoutError:  # a side that does not answer is hung up on
                drop_client(state.request)
                drop_revision(state.upstream)
            code = state.upstream.close_code
            state.revision_code = code if code not in (None, 1006) else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.done.wait(), _STOP_GRACE_S)


__all__ = ["TIMEOUT_MESSAGE", "Router"]
