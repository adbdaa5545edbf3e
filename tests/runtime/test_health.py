"""``watch --health-port``: what it answers, and that no client can make it grow."""

from __future__ import annotations

import asyncio
import json

from deploy_guard.runtime.health import HealthServer
from waiting import eventually


async def get(port: int, method: bytes = b"GET") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(method + b" / HTTP/1.1\r\nHost: watcher\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_it_answers_get_with_the_status_as_json() -> None:
    server = HealthServer(0, lambda: {"service": "chat", "degraded": False}, host="127.0.0.1")
    port = await server.start()
    try:
        answer = await get(port)
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert json.loads(body) == {"service": "chat", "degraded": False}
        assert (await get(port, b"POST")).startswith(b"HTTP/1.1 405")
    finally:
        await server.stop()


async def test_idle_connections_beyond_the_bound_are_closed_at_once() -> None:
    server = HealthServer(0, lambda: {"ok": True}, host="127.0.0.1", max_clients=2)
    port = await server.start()
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        await eventually(lambda: server.clients == 2, what="two idle clients held")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, unanswered
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
        await eventually(lambda: server.clients == 0, what="the idle ones gone")
        assert (await get(port)).startswith(b"HTTP/1.1 200 OK")
    finally:
        await server.stop()
