"""HTTP probes against hostile servers: every request bounded in time and memory.

Each server is a raw asyncio server on port 0 that answers as a broken or hostile
service would: a body that never ends, one that trickles, endless headers, a body
bigger than the probe reads. The probe must end every request within the rule's
timeout, read a bounded amount, and say which of these happened.
"""

from __future__ import annotations

import asyncio
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from probe_helpers import collect, http_rule

from deploy_guard.probes.http import HEADER_LIMIT, MAX_BODY
from deploy_guard.probes.target import Target

Behaviour = Callable[[asyncio.StreamWriter], Awaitable[None]]
CHUNK = b"x" * 65536


async def forever(w: asyncio.StreamWriter) -> None:
    """A chunked body that never ends, as fast as the client reads."""
    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        w.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
        await w.drain()


async def trickle(w: asyncio.StreamWriter) -> None:
    """Headers at once, then one byte of a 100-byte body every 50 ms (every byte re-arms
    httpx's read timeout)."""
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    while True:
        w.write(b"x")
        await w.drain()
        await asyncio.sleep(0.05)  # the server's own pace


async def trickle_headers(w: asyncio.StreamWriter) -> None:
    """A status line, then a header line every 50 ms, never a blank line."""
    w.write(b"HTTP/1.1 200 OK\r\n")
    n = 0
    while True:
        n += 1
        w.write(b"X-Slow-%d: y\r\n" % n)
        await w.drain()
        await asyncio.sleep(0.05)  # the server's own pace


async def endless_headers(w: asyncio.StreamWriter) -> None:
    """Header lines as fast as the client reads, never a blank line."""
    w.write(b"HTTP/1.1 200 OK\r\n")
    n = 0
    while True:
        n += 1
        w.write(b"X-Header-%d: %s\r\n" % (n, b"h" * 200))
        await w.drain()


async def too_big(w: asyncio.StreamWriter) -> None:
    """A declared 4 MiB body, sent in full."""
    size = 4 * MAX_BODY
    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    for _ in range(size // len(CHUNK)):
        w.write(CHUNK)
        await w.drain()


def bomb(encoding: str) -> Behaviour:
    """A small compressed body that inflates to 256 MiB of zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)
    zeros = bytes(1 << 20)
    body = b"".join(compressor.compress(zeros) for _ in range(256)) + compressor.flush()

    async def behaviour(w: asyncio.StreamWriter) -> None:
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
            % (encoding.encode(), len(body))
        )
        w.write(body)
        await w.drain()

    return behaviour


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Behaviour], Awaitable[str]]]:
    """Serve a raw behaviour on 127.0.0.1:0 after reading the request head."""
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour) -> str:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.readuntil(b"\r\n\r\n")
                await behaviour(w)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def probe(url: str, **spec: object) -> tuple[object, int]:
    """The last snapshot of a one-request rule, and the peak memory growth while it ran."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        spec.setdefault("requests", 1)
        rule = http_rule(concurrency=1, **spec)
        last = (await collect(rule, Target(url)))[-1]
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return last, peak


@pytest.mark.fault("probes", "HTTP body that streams forever", "failed at 1 MiB, memory bounded")
async def test_a_body_that_never_ends_stops_at_the_cap(
    hostile: Callable[..., Awaitable[str]],
) -> None:
    last, peak = await probe(await hostile(forever), timeout="30s")
    assert last.failures_by_cause == {"too_large": 1}
    assert last.samples[0].detail == "body larger than 1 MiB (reading stopped there)"
    assert last.samples[0].status == 200
    assert peak < 8 * MAX_BODY  # a few copies of the cap at most, not the stream


@pytest.mark.fault("probes", "HTTP body larger than the cap", "failed naming the cap")
async def test_a_large_body_fails_naming_the_cap(hostile: Callable[..., Awaitable[str]]) -> None:
    last, peak = await probe(await hostile(too_big))
    assert last.failures_by_cause == {"too_large": 1}
    assert "body larger than 1 MiB" in last.samples[0].detail
    assert peak < 8 * MAX_BODY


@pytest.mark.fault("probes", "HTTP body trickling a byte at a time", "timeout names the phase")
async def test_a_trickling_body_is_bounded_by_the_total_timeout(
    hostile: Callable[..., Awaitable[str]],
) -> None:
    # three in a row on one pooled client: a request cut mid-body leaves the pool usable
    last, _ = await probe(await hostile(trickle), timeout="300ms", requests=3)
    assert last.failures_by_cause == {"timeout": 3}
    detail = last.samples[0].detail
    assert detail.startswith("response not complete within the 0.3 s timeout (headers after ")
    assert "bytes of body read so far)" in detail


@pytest.mark.fault("probes", "HTTP headers trickling forever", "timeout, no headers yet")
async def test_trickling_headers_are_bounded_by_the_total_timeout(
    hostile: Callable[..., Awaitable[str]],
) -> None:
    last, _ = await probe(await hostile(trickle_headers), timeout="300ms")
    assert last.failures_by_cause == {"timeout": 1}
    assert last.samples[0].detail == (
        "response not complete within the 0.3 s timeout (no headers yet)"
    )


@pytest.mark.fault("probes", "HTTP headers that never end", "failed naming the header limit")
async def test_endless_headers_fail_naming_the_limit(
    hostile: Callable[..., Awaitable[str]],
) -> None:
    last, peak = await probe(await hostile(endless_headers), timeout="30s")
    assert last.failures_by_cause == {"too_large": 1}
    assert last.samples[0].detail == "headers larger than 100 KiB (reading stopped there)"
    assert HEADER_LIMIT == 100 * 1024
    assert peak < 8 * MAX_BODY


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.fault(
    "probes", "HTTP compressed body inflating to 256 MiB", "too_large, inflated bounded"
)
async def test_a_compression_bomb_is_capped_while_inflating(
    hostile: Callable[..., Awaitable[str]], encoding: str
) -> None:
    last, peak = await probe(await hostile(bomb(encoding)))
    assert last.failures_by_cause == {"too_large": 1}
    assert last.samples[0].detail == "body larger than 1 MiB (reading stopped there)"
    assert peak < 8 * MAX_BODY  # not one raw chunk's worth of inflated zeros (64 MiB)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_bodies_are_still_read_and_checked(
    aiohttp_server: Callable[[web.Application], Awaitable[str]], encoding: str
) -> None:
    async def status(request: web.Request) -> web.Response:
        response = web.json_response({"status": "ok", "pad": "z" * 5000})
        response.enable_compression(web.ContentCoding(encoding))
        return response

    app = web.Application()
    app.router.add_get("/status", status)
    url = await aiohttp_server(app)
    last, _ = await probe(url, path="/status", expect={"json": {"status": "ok"}})
    assert last.succeeded == 1


@pytest.mark.fault("probes", "HTTP body that is not the gzip it claims", "protocol_error named")
async def test_a_corrupt_compressed_body_is_a_protocol_error(
    hostile: Callable[..., Awaitable[str]],
) -> None:
    async def corrupt(w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!")
        await w.drain()

    last, _ = await probe(await hostile(corrupt))
    assert last.failures_by_cause == {"protocol_error": 1}
    assert last.samples[0].detail.startswith("the body is not valid gzip: ")
