"""The router's HTTP relay: one request to its revision and the answer back, streamed.

Headers pass through minus the hop-by-hop ones (RFC 9110 section 7.6.1, and
any the client's ``Connection`` header lists), plus what Cloud Run's front end
adds (``X-Forwarded-For``, ``X-Forwarded-Proto``, ``X-Cloud-Trace-Context``).
Bodies stream both ways, uncompressed and unchanged; the request's bytes are
counted on the way for its :class:`RequestRecord`.

The front end's own answers live here too: 503 (no instance could take it, not
counted in request_count), 502 (the revision broke the HTTP exchange) and 504
with Cloud Run's words when the request timeout cuts a request that has no
answer yet; an answer already under way is cut instead (the client sees a
short body). The router (:mod:`deploy_guard.emulator.router`) picks the
revision; the WebSocket relay is :mod:`deploy_guard.emulator.router_ws`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Literal, Protocol

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from deploy_guard.emulator.contracts import Backend, RequestRecord, RevisionRef
from deploy_guard.log import get_logger, redact_text

_log = get_logger("deploy_guard.emulator.router")

#: Headers that belong to one hop (RFC 9110 section 7.6.1): never forwarded.
HOP_BY_HOP = frozenset(
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
        # The router answers ``Expect: 100-continue`` itself (see relay_http).
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
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")

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
BAD_GATEWAY_BODY = (
    "<html><head><title>502 Bad Gateway</title></head><body>"
    "<h1>Error: Bad Gateway</h1>"
    "<h2>The server encountered a temporary error and could not complete your request.</h2>"
    "</body></html>\n"
)


class Report(Protocol):
    """How a relay hands a finished request to the router's sinks (``Router._report``)."""

    def __call__(self, record: RequestRecord, *, reached_container: bool = True) -> None: ...


async def relay_http(
    session: aiohttp.ClientSession, backend: Backend, request: web.BaseRequest, report: Report
) -> web.StreamResponse:
    """Relay one HTTP request to ``backend`` and its answer back, body streamed both ways."""
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
            async with session.request(
                request.method,
                backend_url(backend, request),
                headers=forward_headers(request),
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
        return unavailable()
    except (aiohttp.ClientError, ConnectionError) as exc:
        _log.warning(
            "backend_http_failed", revision=backend.ref.revision, error=redact_text(repr(exc))
        )
        return web.Response(status=502, text=BAD_GATEWAY_BODY, content_type="text/html")
    finally:
        report(
            record_of(
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


def _cut(out: web.StreamResponse, request: web.BaseRequest) -> None:
    """End an HTTP answer that is under way by closing the client's connection."""
    out.force_close()
    if request.transport is not None:
        request.transport.close()


class _Counter:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


async def _count(stream: aiohttp.StreamReader, counter: _Counter) -> AsyncIterator[bytes]:
    """Stream a request body to the revision, counting its bytes on the way."""
    async for chunk in stream.iter_any():
        counter.n += len(chunk)
        yield chunk


def backend_url(backend: Backend, request: web.BaseRequest) -> URL:
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


def forward_headers(request: web.BaseRequest, *, websocket: bool = False) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones, plus the front end's own."""
    drop = HOP_BY_HOP | _connection_tokens(request.headers)
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
    drop = HOP_BY_HOP | _connection_tokens(headers)
    return CIMultiDict((n, v) for n, v in headers.items() if n.lower() not in drop)


def unavailable() -> web.Response:
    return web.Response(status=503, text=_UNAVAILABLE_BODY, content_type="text/html")


def record_of(
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


__all__ = [
    "BAD_GATEWAY_BODY",
    "HOP_BY_HOP",
    "NO_AUTO_HEADERS",
    "TIMEOUT_MESSAGE",
    "Report",
    "backend_url",
    "forward_headers",
    "record_of",
    "relay_http",
    "unavailable",
]
