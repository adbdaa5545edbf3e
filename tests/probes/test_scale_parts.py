"""The parts that let one process hold 10,000 sessions, each on its own.

- :class:`~deploy_guard.probes.deadline.Deadline`: asyncio.timeout's outcome with one timer;
- :class:`~deploy_guard.probes.admission.Admission`: a few sessions begin per turn of the
  loop, full garbage collections put off while the rest wait, and given back after;
- permessage-deflate as the probe offers it and what a held session keeps of it;
- websockets' ``connect`` built once per rule: a redirect does not carry over.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import json
import zlib
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from probe_helpers import EVENTS, collect, golden_scenario, ws_rule
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from deploy_guard.probes import admission
from deploy_guard.probes.admission import Admission
from deploy_guard.probes.deadline import Deadline
from deploy_guard.probes.target import Target
from deploy_guard.probes.ws_bounds import deflate_offers, drop_compressor, write_fits

Serve = Callable[[web.Application], Awaitable[str]]

# -- Deadline ------------------------------------------------------------------------------


async def test_a_block_past_its_deadline_raises_timeout_and_leaves_the_task_uncancelled() -> None:
    deadline = Deadline()
    with pytest.raises(TimeoutError), deadline.within(0.05):
        await asyncio.Event().wait()
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # the task goes on as usual


async def test_moving_the_deadline_later_keeps_the_block_alive_past_the_first_one() -> None:
    deadline = Deadline()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with deadline.within(0.5):
        while loop.time() - began < 1.2:  # well past the first deadline
            await asyncio.sleep(0.05)
            deadline.move(0.5)
    deadline.cancel()


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    started = asyncio.Event()

    async def body() -> None:
        deadline = Deadline()
        with deadline.within(30):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.get_running_loop().create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_timer_that_fires_between_blocks_does_nothing() -> None:
    deadline = Deadline()
    with deadline.within(0.01):
        pass
    await asyncio.sleep(0.1)  # the timer fires here, outside any block: nothing is cancelled
    with deadline.within(30):
        await asyncio.sleep(0)
    deadline.cancel()


# -- Admission -----------------------------------------------------------------------------


async def test_a_few_begin_per_turn_and_the_others_in_order_after() -> None:
    door = Admission(per_turn=3)
    assert [door.now() for _ in range(4)] == [True, True, True, False]
    order: list[int] = []

    async def wait(k: int) -> None:
        await door.wait()
        order.append(k)

    waiting = [asyncio.get_running_loop().create_task(wait(k)) for k in range(7)]
    per_turn = []
    while len(order) < 7:
        before = len(order)
        await asyncio.sleep(0)  # one turn of the loop
        per_turn.append(len(order) - before)
    await asyncio.gather(*waiting)
    assert order == list(range(7))
    assert max(per_turn) <= 3


async def test_full_collections_are_put_off_while_sessions_wait_and_given_back_after() -> None:
    threshold = gc.get_threshold()
    door = Admission(per_turn=1)
    assert door.now()
    waiter = asyncio.get_running_loop().create_task(door.wait())
    await asyncio.sleep(0)
    assert admission.full_collections_put_off()
    assert gc.get_threshold()[:2] == threshold[:2]  # the young generations are collected
    await waiter
    await asyncio.sleep(0)
    assert not admission.full_collections_put_off()
    assert gc.get_threshold() == threshold


async def test_cancelled_waiters_give_back_the_full_collections() -> None:
    threshold = gc.get_threshold()
    door = Admission(per_turn=1)
    assert door.now()
    waiters = [asyncio.get_running_loop().create_task(door.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert admission.full_collections_put_off()
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert not admission.full_collections_put_off()
    assert gc.get_threshold() == threshold


# -- permessage-deflate --------------------------------------------------------------------


def test_the_offer_asks_for_per_message_context_first_then_as_browsers_do() -> None:
    first, second = (f.get_request_params() for f in deflate_offers())
    assert first == [("server_no_context_takeover", None), ("client_max_window_bits", None)]
    assert second == [("client_max_window_bits", None)]


def test_a_held_session_keeps_no_compressor_and_a_later_message_still_decodes() -> None:
    """After drop_compressor, a message is compressed afresh (no context): a server that
    keeps its context decodes it, as RFC 7692 allows a sender to forgo context takeover."""
    ours = PerMessageDeflate(False, False, 15, 15)
    server = zlib.decompressobj(wbits=-15)

    def through(text: str) -> str:
        frame = ours.encode(Frame(Opcode.TEXT, text.encode()))
        assert frame.rsv1
        return server.decompress(bytes(frame.data) + b"\x00\x00\xff\xff").decode()

    message = json.dumps({"type": "message", "text": "hello " * 20})
    assert through(message) == message
    drop_compressor(SimpleNamespace(protocol=SimpleNamespace(extensions=[ours])))  # type: ignore[arg-type]
    assert "encoder" not in ours.__dict__
    assert through(message) == message  # fresh compressor, same server context
    assert through(message) == message


def test_write_fits_only_under_the_write_limit() -> None:
    def ws(buffered: int, paused: bool = False) -> Any:
        transport = SimpleNamespace(get_write_buffer_size=lambda: buffered)
        return SimpleNamespace(paused=paused, transport=transport, write_limit_high=1000)

    assert write_fits(ws(0), 1000)
    assert not write_fits(ws(1), 1000)
    assert not write_fits(ws(0, paused=True), 8)


async def _read_client_frame(r: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """(opcode, rsv1, unmasked payload) of one frame from the probe."""
    head = await r.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await r.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await r.readexactly(8), "big")
    mask = await r.readexactly(4)
    data = await r.readexactly(size)
    return head[0] & 0x0F, bool(head[0] & 0x40), bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _server_frame(payload: bytes, *, compressed: bool) -> bytes:
    first = 0x80 | (0x40 if compressed else 0) | 0x1
    n = len(payload)
    size = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big")
    return bytes([first]) + size + payload


async def test_a_server_keeping_its_context_decodes_and_is_decoded() -> None:
    """A server that answers the offer without ``server_no_context_takeover`` (the second
    offer, browsers' own) compresses five events in one context, each referring back to the
    last: they reach the probe whole; and it reads the probe's compressed message."""
    offers: list[bytes] = []
    read: list[str] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        request = await r.readuntil(b"\r\n\r\n")
        lines = request.split(b"\r\n")
        key = next(
            x.split(b":", 1)[1].strip()
            for x in lines
            if x.lower().startswith(b"sec-websocket-key:")
        )
        offers.extend(
            x.split(b":", 1)[1].strip()
            for x in lines
            if x.lower().startswith(b"sec-websocket-extensions:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        w.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        opcode, rsv1, data = await _read_client_frame(r)
        inflate = zlib.decompressobj(wbits=-15)  # the server's context, kept across messages
        read.append(
            inflate.decompress(data + b"\x00\x00\xff\xff").decode() if rsv1 else data.decode()
        )
        deflate = zlib.compressobj(wbits=-15)
        for name in EVENTS:
            body = json.dumps({"type": name, "user_id": "user-1", "pad": "x" * 300}).encode()
            packed = deflate.compress(body) + deflate.flush(zlib.Z_SYNC_FLUSH)
            w.write(_server_frame(packed[:-4], compressed=True))
        await w.drain()
        while True:  # answer the close, then end
            opcode, _, data = await _read_client_frame(r)
            if opcode == 0x8:
                w.write(bytes([0x88, len(data)]) + data)
                await w.drain()
                w.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        rule = ws_rule(sessions=1, concurrency=1, hold="100ms")
        last = (await collect(rule, Target(url)))[-1]
    finally:
        server.close()
        await server.wait_closed()
    assert last.succeeded == 1, last.samples
    assert json.loads(read[0])["user_id"] == "user-1"
    assert offers == [
        b"permessage-deflate; server_no_context_takeover; client_max_window_bits, "
        b"permessage-deflate; client_max_window_bits"
    ]


async def test_a_redirect_followed_by_one_session_is_not_taken_by_the_next(
    aiohttp_server: Serve,
) -> None:
    asked: list[str] = []

    async def moved(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        raise web.HTTPFound("/ws/real")

    async def real(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            msg = json.loads(frame.data)
            for name in EVENTS:
                await ws.send_json({"type": name, "user_id": msg["user_id"]})
        return ws

    app = web.Application()
    app.router.add_get("/ws/chat", moved)
    app.router.add_get("/ws/real", real)
    url = await aiohttp_server(app)
    rule = ws_rule(sessions=3, concurrency=1, scenario=golden_scenario())
    last = (await collect(rule, Target(url)))[-1]
    assert last.succeeded == 3
    assert asked == ["/ws/chat", "/ws/real"] * 3  # each session starts from the rule's URL
