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

What the router promises (the points a deploy gate depends on):

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
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import WSMsgType, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from deploy_guard.emulator.contracts import (
    Backend,
    LogSink,
    MetricSink,
    RequestRecord,
    RevisionRef,
    Route,
)
from deploy_guard.log import get_logger, redact_text

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

#: Headers that belong to one hop (RFC 9110 section 7.6.1): never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # The router answers ``Expect: 100-continue`` itself (see _relay_http).
        "expect",
    }
)
#: The client's WebSocket handshake headers: the router makes its own handshake.
_WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
#: Headers aiohttp's client would add on its own; the revision must see only the client's.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

#: What Google's front end answers when no instance can take a request.
_UNAVAILABLE_BODY = (
    "<html><head><title>503 Service Unavailable</title></head><body>"
    "<h1>Error: Service Unavailable</h1>"
    "<h2>The service you requested is not available yet. "
    "Please try again in 30 seconds.</h2></body></html>\n"
)
#: What Cloud Run answers (and logs) when a request reaches the service's request timeout.
TIMEOUT_MESSAGE = (
    "The request has been terminated because it has reached the maximum request timeout. "
    "To change this limit, see https://cloud.google.com/run/docs/configuring/request-timeout"
)
_BAD_GATEWAY_BODY = (
    "<html><head><title>502 Bad Gateway</title></head><body>"
    "<h1>Error: Bad Gateway</h1>"
    "<h2>The server encountered a temporary error and could not complete your request.</h2>"
    "</body></html>\n"
)

#: How long the router waits for the other side's close frame when it closes one.
_WS_CLOSE_TIMEOUT_S = 10.0
#: How long ``stop()`` lets in-flight requests finish before cancelling them.
_STOP_GRACE_S = 1.0

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


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
class _WsState:
    """What one relayed WebSocket knows about how it is ending."""

    downstream: web.WebSocketResponse[Literal[False]]
    upstream: aiohttp.ClientWebSocketResponse[Literal[False]]
    request: web.BaseRequest
    #: Who started the close: the first side to act wins, the other just finishes.
    closer: (
        Literal["client", "revision", "client-dropped", "revision-dropped", "router", "timeout"]
        | None
    ) = None
    #: The close code the revision sent (or answered with); None if it sent none.
    revision_code: int | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


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
        self._sockets: set[_WsState] = set()
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
            skip_auto_headers=_NO_AUTO_HEADERS,
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
                    return _unavailable()
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
            return _unavailable()
        if route.backend is None:
            if route.ref is not None:  # a revision that stopped serving: its 503
                started, t0 = datetime.now(UTC), time.perf_counter()
                self._report(
                    _record(
                        route.ref, request, protocol="HTTP/1.1", status=503, started=started, t0=t0
                    ),
                    reached_container=False,
                )
            return _unavailable()
        if _is_websocket(request):
            return await self._relay_websocket(route.backend, request)
        return await self._relay_http(route.backend, request)

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

    # -- HTTP ------------------------------------------------------------------

    async def _relay_http(self, backend: Backend, request: web.BaseRequest) -> web.StreamResponse:
        assert self._session is not None
        started, t0 = datetime.now(UTC), time.perf_counter()
        counter = _Counter()
        if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
            # aiohttp's low-level server leaves this to the handler. Answering
            # here lets the client send its body while the router connects.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = _count(request.content, counter) if request.body_exists else None
        status = 502
        response_size = 0
        message = ""
        reached = True
        out: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(backend.timeout_s):
                async with self._session.request(
                    request.method,
                    _backend_url(backend, request),
                    headers=_forward_headers(request),
                    data=body,
                    allow_redirects=False,
                ) as upstream:
                    status = upstream.status
                    out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                    out.headers.extend(_response_headers(upstream.headers))
                    try:
                        await out.prepare(request)
                        async for chunk in upstream.content.iter_any():
                            response_size += len(chunk)
                            await out.write(chunk)
                        await out.write_eof()
                    except (ConnectionError, aiohttp.ClientError) as exc:
                        # The client left, or the revision broke off mid-body: the
                        # status is already sent, so the only honest signal left
                        # is to cut the client's connection.
                        _log.debug("http_relay_broken", error=repr(exc))
                        _cut(out, request)
                    return out
        except TimeoutError:
            # Cloud Run's request timeout: 504 when nothing was answered yet; an
            # answer already under way is cut (the client has its status already).
            status, message = 504, TIMEOUT_MESSAGE
            _log.warning(
                "request_timed_out", revision=backend.ref.revision, timeout_s=backend.timeout_s
            )
            if out is not None and out.prepared:
                _cut(out, request)
                return out
            return web.Response(status=504, text=TIMEOUT_MESSAGE + "\n")
        except aiohttp.ClientConnectorError as exc:
            status, reached = 503, False  # no instance took it: not counted
            _log.warning(
                "backend_unreachable", revision=backend.ref.revision, error=redact_text(str(exc))
            )
            return _unavailable()
        except (aiohttp.ClientError, ConnectionError) as exc:
            _log.warning(
                "backend_http_failed", revision=backend.ref.revision, error=redact_text(repr(exc))
            )
            return web.Response(status=502, text=_BAD_GATEWAY_BODY, content_type="text/html")
        finally:
            self._report(
                _record(
                    backend.ref,
                    request,
                    protocol="HTTP/1.1",
                    status=status,
                    started=started,
                    t0=t0,
                    request_size=counter.n,
                    response_size=response_size,
                    message=message,
                ),
                reached_container=reached,
            )

    # -- WebSocket -------------------------------------------------------------

    async def _relay_websocket(
        self, backend: Backend, request: web.BaseRequest
    ) -> web.StreamResponse:
        assert self._session is not None
        started, t0 = datetime.now(UTC), time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + backend.timeout_s  # the handshake counts, as on Cloud Run
        if not web.WebSocketResponse().can_prepare(request).ok:
            return web.Response(status=400, text="Bad WebSocket handshake\n")

        def record(
            status: int,
            code: int | None = None,
            up: int = 0,
            down: int = 0,
            message: str = "",
            reached: bool = True,
        ) -> None:
            self._report(
                _record(
                    backend.ref,
                    request,
                    protocol="websocket" if status == 101 else "HTTP/1.1",
                    status=status,
                    started=started,
                    t0=t0,
                    request_size=up,
                    response_size=down,
                    ws_close_code=code,
                    message=message,
                ),
                reached_container=reached,
            )

        try:
            async with asyncio.timeout_at(deadline):
                upstream = await self._session.ws_connect(
                    _backend_url(backend, request),
                    protocols=_offered_protocols(request),
                    headers=_forward_headers(request, websocket=True),
                    autoclose=False,
                    autoping=False,
                    max_msg_size=0,
                    compress=0,
                    decode_text=False,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_WS_CLOSE_TIMEOUT_S),
                )
        except TimeoutError:  # the revision never finished its handshake
            _log.warning(
                "request_timed_out", revision=backend.ref.revision, timeout_s=backend.timeout_s
            )
            record(504, message=TIMEOUT_MESSAGE)
            return web.Response(status=504, text=TIMEOUT_MESSAGE + "\n")
        except aiohttp.WSServerHandshakeError as exc:
            # The revision answered the upgrade with something other than 101:
            # the client gets that status, as it would from Cloud Run.
            status = exc.status if exc.status not in (0, 101) else 502
            record(status)
            return _refused_upgrade(status, exc.headers)
        except aiohttp.ClientConnectorError as exc:
            _log.warning(
                "backend_unreachable", revision=backend.ref.revision, error=redact_text(str(exc))
            )
            record(503, reached=False)  # no instance took it: not counted
            return _unavailable()
        except (aiohttp.ClientError, ConnectionError) as exc:
            _log.warning(
                "backend_ws_failed", revision=backend.ref.revision, error=redact_text(repr(exc))
            )
            record(502)
            return web.Response(status=502, text=_BAD_GATEWAY_BODY, content_type="text/html")

        # The client is offered exactly the subprotocol the revision chose.
        downstream: web.WebSocketResponse[Literal[False]] = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            compress=False,
            max_msg_size=0,
            decode_text=False,
            timeout=_WS_CLOSE_TIMEOUT_S,
        )
        state = _WsState(downstream, upstream, request)
        try:
            await downstream.prepare(request)
        except (ConnectionError, aiohttp.ClientError):
            await upstream.close(code=1001)
            record(499)
            return downstream
        self._sockets.add(state)
        # One timer per session (nothing per frame): Cloud Run's request timeout.
        expiry = loop.call_at(deadline, _expire, state, backend)
        pump_up = asyncio.create_task(_client_to_revision(state))
        try:
            await _revision_to_client(state)
            await pump_up
        finally:
            expiry.cancel()
            if not pump_up.done():
                pump_up.cancel()
            self._sockets.discard(state)
            state.done.set()
            timed_out = state.closer == "timeout"
            record(
                101,
                state.revision_code,
                state.bytes_up,
                state.bytes_down,
                message=TIMEOUT_MESSAGE if timed_out else "",
            )
        return downstream

    async def _shutdown_socket(self, state: _WsState) -> None:
        """Close one relayed WebSocket with 1001 on both sides (router stopping)."""
        if state.closer is None:
            state.closer = "router"
            try:
                async with asyncio.timeout(_STOP_GRACE_S):
                    await state.downstream.close(code=1001, message=b"router stopping")
                    await state.upstream.close(code=1001, message=b"router stopping")
            except TimeoutError:  # a side that does not answer is hung up on
                _drop_client(state.request)
                _drop_revision(state.upstream)
            code = state.upstream.close_code
            state.revision_code = code if code not in (None, 1006) else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.done.wait(), _STOP_GRACE_S)


# -- WebSocket pumps ---------------------------------------------------------------


async def _revision_to_client(state: _WsState) -> None:
    """Relay frames from the revision until it closes, vanishes, or we close it."""
    down, up = state.downstream, state.upstream
    try:
        while True:
            msg = await up.receive()
            kind = msg.type
            if kind in _DATA:
                state.bytes_down += len(msg.data)
                await down.send_frame(msg.data, kind)
            elif kind is WSMsgType.PING:
                await down.ping(msg.data)
            elif kind is WSMsgType.PONG:
                await down.pong(msg.data)
            elif kind is WSMsgType.CLOSE:
                if state.closer is None:
                    state.closer = "revision"
                    code = msg.data or 1000
                    state.revision_code = code
                    reason = msg.extra.encode() if msg.extra else b""
                    await down.close(code=code, message=reason)
                    await up.close(code=code, message=reason)  # answer the revision
                return
            elif kind is WSMsgType.CLOSING:
                return  # we are closing the revision side from the other pump
            else:  # CLOSED or ERROR: the revision's connection ended with no close frame
                if state.closer is None:
                    state.closer = "revision-dropped"
                    _drop_client(state.request)
                return
    except (ConnectionError, aiohttp.ClientError):
        # Writing to the client failed: it is gone; the other pump sees that too.
        if state.closer is None:
            state.closer = "client-dropped"
            _drop_revision(up)


async def _client_to_revision(state: _WsState) -> None:
    """Relay frames from the client until it closes, vanishes, or we close it."""
    down, up = state.downstream, state.upstream
    try:
        while True:
            msg = await down.receive()
            kind = msg.type
            if kind in _DATA:
                state.bytes_up += len(msg.data)
                await up.send_frame(msg.data, kind)
            elif kind is WSMsgType.PING:
                await up.ping(msg.data)
            elif kind is WSMsgType.PONG:
                await up.pong(msg.data)
            elif kind is WSMsgType.CLOSE:
                if state.closer is None:
                    state.closer = "client"
                    code = msg.data or 1000
                    reason = msg.extra.encode() if msg.extra else b""
                    await up.close(code=code, message=reason)  # waits for the revision's answer
                    answered = up.close_code
                    state.revision_code = answered if answered not in (None, 1006) else None
                    await down.close(code=state.revision_code or code)
                return
            elif kind is WSMsgType.CLOSING:
                return  # the other pump is closing the client side
            else:  # CLOSED or ERROR: the client's connection ended with no close frame
                if state.closer is None:
                    state.closer = "client-dropped"
                    _drop_revision(up)
                return
    except (ConnectionError, aiohttp.ClientError):
        if state.closer is None:
            state.closer = "revision-dropped"
            _drop_client(state.request)


def _expire(state: _WsState, backend: Backend) -> None:
    """The session reached the request timeout: cut both sides, no close frame (1006)."""
    if state.closer is not None:
        return  # already closing: let that finish
    state.closer = "timeout"
    _log.warning("websocket_timed_out", revision=backend.ref.revision, timeout_s=backend.timeout_s)
    _drop_client(state.request)
    _drop_revision(state.upstream)


def _cut(out: web.StreamResponse, request: web.BaseRequest) -> None:
    """End an HTTP answer that is under way by closing the client's connection."""
    out.force_close()
    if request.transport is not None:
        request.transport.close()


def _drop_client(request: web.BaseRequest) -> None:
    """End the client's TCP connection without a close frame: it sees 1006.

    ``close()`` (not ``abort()``) so frames already queued still reach it.
    """
    if request.transport is not None:
        request.transport.close()


def _drop_revision(ws: aiohttp.ClientWebSocketResponse[Literal[False]]) -> None:
    """End the revision's TCP connection without a close frame: it sees 1006.

    aiohttp has no public call for this; its response object owns the
    connection. Failing that, a 1001 close is the nearest honest signal.
    """
    response: Any = getattr(ws, "_response", None)
    if response is not None:
        response.close()
    else:  # pragma: no cover - aiohttp internals changed
        asyncio.get_running_loop().create_task(ws.close(code=1001))


# -- helpers -----------------------------------------------------------------------


class _Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


async def _count(stream: aiohttp.StreamReader, counter: _Counter) -> AsyncIterator[bytes]:
    """Stream a request body to the revision, counting its bytes on the way."""
    async for chunk in stream.iter_any():
        counter.n += len(chunk)
        yield chunk


def _is_websocket(request: web.BaseRequest) -> bool:
    return (
        request.method == hdrs.METH_GET
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    )


def _backend_url(backend: Backend, request: web.BaseRequest) -> URL:
    """The revision's URL for this request: same raw path and query, byte for byte."""
    return URL(f"http://{backend.host}:{backend.port}{request.raw_path}", encoded=True)


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    """Header names the client listed in ``Connection``: hop-by-hop too (RFC 9110 7.6.1)."""
    return {
        token.strip().lower()
        for value in headers.getall(hdrs.CONNECTION, ())
        for token in value.split(",")
        if token.strip()
    }


def _forward_headers(request: web.BaseRequest, *, websocket: bool = False) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones, plus the front end's own."""
    drop = _HOP_BY_HOP | _connection_tokens(request.headers)
    if websocket:
        drop |= _WS_HANDSHAKE
    headers: CIMultiDict[str] = CIMultiDict(
        (name, value) for name, value in request.headers.items() if name.lower() not in drop
    )
    remote = request.remote or ""
    previous = headers.get(hdrs.X_FORWARDED_FOR)
    headers[hdrs.X_FORWARDED_FOR] = f"{previous}, {remote}" if previous else remote
    headers[hdrs.X_FORWARDED_PROTO] = request.scheme
    if "X-Cloud-Trace-Context" not in headers:
        span = int.from_bytes(secrets.token_bytes(8), "big") >> 1
        headers["X-Cloud-Trace-Context"] = f"{secrets.token_hex(16)}/{span};o=1"
    return headers


def _response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The revision's response headers minus hop-by-hop ones (duplicates kept)."""
    drop = _HOP_BY_HOP | _connection_tokens(headers)
    return CIMultiDict((n, v) for n, v in headers.items() if n.lower() not in drop)


def _offered_protocols(request: web.BaseRequest) -> tuple[str, ...]:
    """The subprotocols the client offered, in its order of preference."""
    return tuple(
        p.strip()
        for value in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
        for p in value.split(",")
        if p.strip()
    )


def _unavailable() -> web.Response:
    return web.Response(status=503, text=_UNAVAILABLE_BODY, content_type="text/html")


def _refused_upgrade(status: int, headers: Any) -> web.Response:
    """Answer the client with the status the revision refused its upgrade with."""
    out = web.Response(
        status=status,
        text=f"The revision refused the WebSocket upgrade with HTTP {status}.\n",
    )
    if headers is not None:
        for name, value in headers.items():
            lname = name.lower()
            if lname in _HOP_BY_HOP or lname in ("content-length", "content-type"):
                continue
            out.headers.add(name, value)
    return out


def _record(
    ref: RevisionRef,
    request: web.BaseRequest,
    *,
    protocol: Literal["HTTP/1.1", "websocket"],
    status: int,
    started: datetime,
    t0: float,
    request_size: int = 0,
    response_size: int = 0,
    ws_close_code: int | None = None,
    message: str = "",
) -> RequestRecord:
    latency = time.perf_counter() - t0
    return RequestRecord(
        ref=ref,
        method=request.method,
        url=str(request.url),
        protocol=protocol,
        status=status,
        latency_s=latency,
        start_time=started,
        end_time=datetime.now(UTC),
        request_size=request_size,
        response_size=response_size,
        user_agent=request.headers.get(hdrs.USER_AGENT, ""),
        remote_ip=request.remote or "",
        ws_close_code=ws_close_code,
        message=message,
    )
