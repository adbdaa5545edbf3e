"""The router's WebSocket relay: frames both ways, close codes end to end.

A relayed session is two WebSockets (the client's, which the router accepts,
and the revision's, which it opens offering the client's subprotocols; the
client is offered exactly the one the revision chose) and two pumps copying
frames between them without decoding text. The promises it keeps (close codes
and reasons end to end, 1006 on both sides when a side vanishes or the request
timeout cuts the session, pings relayed rather than answered, a refused
upgrade answered with the revision's own status) are listed in
:mod:`deploy_guard.emulator.router`, which picks the revision.

:class:`WsState` records who started the close: the first side to act wins,
the other pump just finishes. One timer per session enforces the request
timeout; nothing runs per frame beyond the copy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import WSMsgType, hdrs, web

from deploy_guard.emulator.contracts import Backend
from deploy_guard.emulator.router_http import (
    BAD_GATEWAY_BODY,
    HOP_BY_HOP,
    TIMEOUT_MESSAGE,
    Report,
    backend_url,
    forward_headers,
    record_of,
    unavailable,
)
from deploy_guard.log import get_logger, redact_text

_log = get_logger("deploy_guard.emulator.router")

#: How long the router waits for the other side's close frame when it closes one.
WS_CLOSE_TIMEOUT_S = 10.0

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


@dataclass(eq=False)
class WsState:
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


async def relay_websocket(
    session: aiohttp.ClientSession,
    backend: Backend,
    request: web.BaseRequest,
    report: Report,
    sockets: set[WsState],
) -> web.StreamResponse:
    """Relay one WebSocket session to ``backend``, frame by frame, until one side ends it.

    ``sockets`` holds the session while it is open (the router closes them all
    when it stops).
    """
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
        report(
            record_of(
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
            upstream = await session.ws_connect(
                backend_url(backend, request),
                protocols=_offered_protocols(request),
                headers=forward_headers(request, websocket=True),
                autoclose=False,
                autoping=False,
                max_msg_size=0,
                compress=0,
                decode_text=False,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=WS_CLOSE_TIMEOUT_S),
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
        return unavailable()
    except (aiohttp.ClientError, ConnectionError) as exc:
        _log.warning(
            "backend_ws_failed", revision=backend.ref.revision, error=redact_text(repr(exc))
        )
        record(502)
        return web.Response(status=502, text=BAD_GATEWAY_BODY, content_type="text/html")

    # The client is offered exactly the subprotocol the revision chose.
    downstream: web.WebSocketResponse[Literal[False]] = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (),
        autoclose=False,
        autoping=False,
        compress=False,
        max_msg_size=0,
        decode_text=False,
        timeout=WS_CLOSE_TIMEOUT_S,
    )
    state = WsState(downstream, upstream, request)
    try:
        await downstream.prepare(request)
    except (ConnectionError, aiohttp.ClientError):
        await upstream.close(code=1001)
        record(499)
        return downstream
    sockets.add(state)
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
        sockets.discard(state)
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


async def _revision_to_client(state: WsState) -> None:
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
                    drop_client(state.request)
                return
    except (ConnectionError, aiohttp.ClientError):
        # Writing to the client failed: it is gone; the other pump sees that too.
        if state.closer is None:
            state.closer = "client-dropped"
            drop_revision(up)


async def _client_to_revision(state: WsState) -> None:
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
                    drop_revision(up)
                return
    except (ConnectionError, aiohttp.ClientError):
        if state.closer is None:
            state.closer = "revision-dropped"
            drop_client(state.request)


def _expire(state: WsState, backend: Backend) -> None:
    """The session reached the request timeout: cut both sides, no close frame (1006)."""
    if state.closer is not None:
        return  # already closing: let that finish
    state.closer = "timeout"
    _log.warning("websocket_timed_out", revision=backend.ref.revision, timeout_s=backend.timeout_s)
    drop_client(state.request)
    drop_revision(state.upstream)


def _cut(out: web.StreamResponse, request: web.BaseRequest) -> None:
    """End an HTTP answer that is under way by closing the client's connection."""
    out.force_close()
    if request.transport is not None:
        request.transport.close()


def drop_client(request: web.BaseRequest) -> None:
    """End the client's TCP connection without a close frame: it sees 1006.

    ``close()`` (not ``abort()``) so frames already queued still reach it.
    """
    if request.transport is not None:
        request.transport.close()


def drop_revision(ws: aiohttp.ClientWebSocketResponse[Literal[False]]) -> None:
    """End the revision's TCP connection without a close frame: it sees 1006.

    aiohttp has no public call for this; its response object owns the
    connection. Failing that, a 1001 close is the nearest honest signal.
    """
    response: Any = getattr(ws, "_response", None)
    if response is not None:
        response.close()
    else:  # pragma: no cover - aiohttp internals changed
        asyncio.get_running_loop().create_task(ws.close(code=1001))


def is_websocket(request: web.BaseRequest) -> bool:
    return (
        request.method == hdrs.METH_GET
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    )


def _offered_protocols(request: web.BaseRequest) -> tuple[str, ...]:
    """The subprotocols the client offered, in its order of preference."""
    return tuple(
        p.strip()
        for value in request.headers.getall(hdrs.SEC_WEBSOCKET_PROTOCOL, ())
        for p in value.split(",")
        if p.strip()
    )


def _refused_upgrade(status: int, headers: Any) -> web.Response:
    """Answer the client with the status the revision refused its upgrade with."""
    out = web.Response(
        status=status,
        text=f"The revision refused the WebSocket upgrade with HTTP {status}.\n",
    )
    if headers is not None:
        for name, value in headers.items():
            lname = name.lower()
            if lname in HOP_BY_HOP or lname in ("content-length", "content-type"):
                continue
            out.headers.add(name, value)
    return out


__all__ = [
    "WS_CLOSE_TIMEOUT_S",
    "WsState",
    "drop_client",
    "drop_revision",
    "is_websocket",
    "relay_websocket",
]
