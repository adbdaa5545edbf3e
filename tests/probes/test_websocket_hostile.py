"""WebSocket probes against hostile servers: named failures, bounded time and memory.

The servers here speak just enough raw WebSocket (a hand-made 101 answer, hand-made
frames) to do what no library server would: frames over the size limit, invalid UTF-8,
invalid close frames, endless handshake answers, floods of pings.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import struct
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from probe_helpers import collect, ws_rule

from deploy_guard.probes.target import Target

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Hostile = Callable[..., Awaitable[str]]
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SAY = [{"send": {"text": "hi"}}]


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One unmasked server frame."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, n])
    elif n < 1 << 16:
        head = bytes([first, 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 127]) + struct.pack("!Q", n)
    return head + payload


async def upgrade(
    r: asyncio.StreamReader, w: asyncio.StreamWriter, *, deflate: bool = False
) -> None:
    """Read the client's upgrade request and accept it (with permessage-deflate if asked)."""
    request = await r.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    w.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
        + accept
        + b"\r\n"
        + (b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b"")
        + b"\r\n"
    )


def sends(*frames: bytes) -> Behaviour:
    """Upgrade, wait for the probe's first message, send ``frames``, then keep reading."""

    async def behaviour(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await upgrade(r, w)
        await r.read(1024)  # the probe's "hi"
        w.write(b"".join(frames))
        await w.drain()
        while await r.read(65536):
            pass

    return behaviour


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour, *, rcvbuf: int | None = None) -> str:
        """Serve ``behaviour``; ``rcvbuf`` shrinks what the kernel buffers for the server."""

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await behaviour(r, w)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                w.close()

        sock = socket.socket()
        if rcvbuf is not None:  # before listen(): accepted sockets inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(handle, sock=sock)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _warm_up() -> None:
    """One session against a closed port: what it imports lazily is not counted after."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await collect(ws_rule(sessions=1, concurrency=1), Target(f"http://127.0.0.1:{port}"))


async def session(url: str, **spec: object) -> tuple[object, int]:
    """The last snapshot of a one-session rule, and the peak memory growth while it ran."""
    spec.setdefault("scenario", [*_SAY, {"expect": ["never"], "timeout": "5s"}])
    rule = ws_rule(sessions=1, concurrency=1, isolation=None, **spec)
    await _warm_up()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        last = (await collect(rule, Target(url)))[-1]
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return last, peak


@pytest.mark.fault("probes", "WebSocket frame over the size limit", "too_large, closed 1009")
async def test_a_message_over_the_limit_is_1009(hostile: Hostile) -> None:
    last, peak = await session(await hostile(sends(frame(1, b"x" * (2 << 20)))))
    assert last.failures_by_cause == {"too_large": 1}
    assert last.close_codes == {1009: 1}
    detail = last.samples[0].detail
    assert "the server sent a message over the 1 MiB limit" in detail
    assert "the probe closed with 1009 (message too big)" in detail
    assert "1006" not in detail
    assert peak < 8 << 20


@pytest.mark.fault("probes", "WebSocket message fragmented forever", "too_large at 1 MiB")
async def test_an_endless_fragmented_message_stops_at_the_limit(hostile: Hostile) -> None:
    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await upgrade(r, w)
        w.write(frame(1, b"a" * 65536, fin=False))
        while True:
            w.write(frame(0, b"a" * 65536, fin=False))
            await w.drain()

    last, peak = await session(await hostile(endless))
    assert last.failures_by_cause == {"too_large": 1}
    assert last.close_codes == {1009: 1}
    assert peak < 8 << 20


@pytest.mark.fault("probes", "WebSocket text frame with invalid UTF-8", "protocol_error, 1007")
async def test_invalid_utf8_is_1007(hostile: Hostile) -> None:
    last, _ = await session(await hostile(sends(frame(1, b"\xff\xfe"))))
    assert last.failures_by_cause == {"protocol_error": 1}
    assert last.close_codes == {1007: 1}
    detail = last.samples[0].detail
    assert "a text message that is not valid UTF-8" in detail
    assert "the probe closed with 1007 (invalid data)" in detail


@pytest.mark.parametrize(
    ("payload", "sent", "code"),
    [
        (struct.pack("!H", 999) + b"odd", "code 999, reason b'odd'", 1002),
        (b"\x03", "1-byte payload b'\\x03'", 1002),
        (struct.pack("!H", 1000) + b"\xff", "code 1000, reason b'\\xff'", 1007),
    ],
    ids=["invalid-code", "short-payload", "reason-not-utf8"],
)
@pytest.mark.fault("probes", "WebSocket invalid close frame", "protocol_error naming what came")
async def test_an_invalid_close_frame_says_what_the_server_sent(
    hostile: Hostile, payload: bytes, sent: str, code: int
) -> None:
    last, _ = await session(await hostile(sends(frame(8, payload))))
    assert last.failures_by_cause == {"protocol_error": 1}
    assert last.close_codes == {code: 1}
    detail = last.samples[0].detail
    assert f"the server sent an invalid close frame ({sent})" in detail
    assert f"the probe closed with {code}" in detail


@pytest.mark.fault("probes", "WebSocket endless handshake headers", "too_large, at once")
async def test_an_endless_handshake_answer_is_too_large(hostile: Hostile) -> None:
    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 101 Switching Protocols\r\n")
        while True:
            w.write(b"X-More: yes\r\n")
            await w.drain()

    # connect_timeout 60 s: the answer is refused on its size (the cause is not a timeout)
    last, peak = await session(await hostile(endless), connect_timeout="60s")
    assert last.failures_by_cause == {"too_large": 1}
    assert last.samples[0].detail.startswith("the handshake response is too large (")
    assert peak < 8 << 20


@pytest.mark.fault("probes", "WebSocket handshake answer trickling", "timeout at connect_timeout")
async def test_a_trickling_handshake_answer_times_out(hostile: Hostile) -> None:
    async def trickle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 101 Switching Protocols\r\n")
        while True:
            w.write(b"X-Slow: y\r\n")
            await w.drain()
            await asyncio.sleep(0.05)  # the server's own pace

    last, _ = await session(await hostile(trickle), connect_timeout="300ms")
    assert last.failures_by_cause == {"timeout": 1}
    assert last.samples[0].detail == "handshake timed out after 0.3 s"


@pytest.mark.fault("probes", "WebSocket server pings constantly, never reads", "memory bounded")
async def test_a_ping_flood_from_a_server_that_never_reads_stays_bounded(
    hostile: Hostile,
) -> None:
    sent = [0]

    async def flood(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await upgrade(r, w)
        pings = frame(9, b"p" * 125) * 64
        while True:  # never reads the probe's pongs
            w.write(pings)
            sent[0] += len(pings)
            await w.drain()

    # A small receive buffer on the server: the kernel cannot hide the probe's backlog.
    url = await hostile(flood, rcvbuf=16384)
    last, peak = await session(url, scenario=[], hold="4s")
    assert last.done == 1
    assert sent[0] > 0
    # Unanswered pongs stop at the write limit (plus one read's worth), not at the hold's end.
    assert peak < 3 << 20


@pytest.mark.fault("probes", "WebSocket server that reads nothing", "send times out, close bounded")
async def test_a_server_that_reads_nothing_fails_the_send_and_the_close_is_bounded(
    hostile: Hostile,
) -> None:
    async def deaf(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await upgrade(r, w)
        await asyncio.Event().wait()  # never reads again

    url = await hostile(deaf, rcvbuf=16384)
    big = {"send": {"text": "x" * (8 << 20)}}  # more than the kernel buffers between us
    last, _ = await session(url, scenario=[big], connect_timeout="300ms")
    assert last.failures_by_cause == {"timeout": 1}
    assert last.samples[0].detail == (
        "send at step 1 not taken within 0.3 s: the server reads nothing"
    )


@pytest.mark.fault("probes", "WebSocket permessage-deflate bomb", "too_large, 1009, bounded")
async def test_a_compressed_message_inflating_past_the_limit_is_1009(hostile: Hostile) -> None:
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    data = b"".join(squeeze.compress(zeros) for _ in range(64)) + squeeze.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    bomb = bytes([0x80 | 0x40 | 0x1]) + frame(1, data[:-4])[1:]  # FIN, RSV1, text

    async def behaviour(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await upgrade(r, w, deflate=True)
        await r.read(1024)
        w.write(bomb)
        await w.drain()
        while await r.read(65536):
            pass

    last, peak = await session(await hostile(behaviour))
    assert last.failures_by_cause == {"too_large": 1}
    assert last.close_codes == {1009: 1}
    assert peak < 8 << 20  # 64 MiB of zeros are never inflated
