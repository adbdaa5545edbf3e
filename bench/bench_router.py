"""What the emulator's router costs: straight to a revision vs. through the router.

Three workloads, each run once direct and once through a router endpoint, in
the same process and the same run, so only the ratio is worth comparing across
machines:

- HTTP: small GETs on kept-alive connections, one at a time and 20 at a
  time (requests/s);
- WebSocket sessions, the probe's shape: connect, one message and its answer,
  close (sessions/s), at the probe benchmark's concurrency;
- WebSocket frames: echo round trips on one open connection (frames/s).

Client, router and revision share one event loop (as in the emulator's tests),
so absolute figures understate a real deployment. Every workload is bounded
by count and by a time budget; a run that hits the budget says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
from aiohttp import WSMsgType, web
from websockets.asyncio.client import connect as ws_connect

from deploy_guard.emulator.contracts import Backend, RequestRecord, RevisionRef, Route
from deploy_guard.emulator.router import Router

HTTP_REQUESTS = 2000
HTTP_CONCURRENCY = 20
WS_SESSIONS = 1000
WS_CONCURRENCY = 100
WS_FRAMES = 3000
BUDGET_S = 60.0


class _NullSink:
    """Counts records; stands in for the Logging and Monitoring stores."""

    def __init__(self) -> None:
        self.n = 0

    def request(self, record: RequestRecord) -> None:
        self.n += 1

    def revision_output(self, ref: RevisionRef, stream: Any, line: str, when: datetime) -> None:
        pass

    def system(self, ref: RevisionRef, severity: str, message: str, when: datetime) -> None:
        pass

    def audit(self, **_: Any) -> None:
        pass


async def _revision() -> tuple[web.AppRunner, int]:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                await sock.send_str(msg.data)
        return sock

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def _run(
    n: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[int, float]:
    """Run ``one(i)`` for i < n, ``concurrency`` at a time, within the budget."""
    done = 0
    next_i = 0
    start = time.perf_counter()
    deadline = start + BUDGET_S

    async def worker() -> None:
        nonlocal done, next_i
        while next_i < n and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            await one(i)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - start


async def _http_sequential(base: str, n: int = HTTP_REQUESTS) -> tuple[int, float]:
    async with httpx.AsyncClient(base_url=base) as client:

        async def one(_: int) -> None:
            resp = await client.get("/ok")
            assert resp.status_code == 200

        return await _run(n, 1, one)


async def _http_concurrent(base: str, n: int = HTTP_REQUESTS) -> tuple[int, float]:
    limits = httpx.Limits(max_connections=HTTP_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits) as client:

        async def one(_: int) -> None:
            resp = await client.get("/ok")
            assert resp.status_code == 200

        return await _run(n, HTTP_CONCURRENCY, one)


async def _ws_sessions(base: str, n: int = WS_SESSIONS) -> tuple[int, float]:
    url = "ws" + base.removeprefix("http") + "/ws"

    async def one(i: int) -> None:
        async with ws_connect(url, compression=None) as ws:
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"

    return await _run(n, WS_CONCURRENCY, one)


async def _ws_frames(base: str, n: int = WS_FRAMES) -> tuple[int, float]:
    url = "ws" + base.removeprefix("http") + "/ws"
    async with ws_connect(url, compression=None) as ws:
        start = time.perf_counter()
        deadline = start + BUDGET_S
        done = 0
        while done < n and time.perf_counter() < deadline:
            await ws.send("x" * 64)
            await ws.recv()
            done += 1
        return done, time.perf_counter() - start


async def _warm_up(fn: Callable[[str, int], Awaitable[tuple[int, float]]], *bases: str) -> None:
    """One short pass on each side first, so neither pays for first-use costs."""
    for base in bases:
        await fn(base, 100)


async def _bench() -> None:
    runner, port = await _revision()
    direct = f"http://127.0.0.1:{port}"
    sink = _NullSink()
    router = Router(sink, sink)
    try:
        via = await router.open_endpoint("svc:bench")
        ref = RevisionRef("bench", "local", "bench", "bench-00001-aaa", "bench")
        router.set_routes("svc:bench", [Route(Backend(ref, "127.0.0.1", port), 100)])
        workloads = [
            ("http requests (x1)", "req/s", _http_sequential),
            (f"http requests (x{HTTP_CONCURRENCY})", "req/s", _http_concurrent),
            (f"ws sessions (x{WS_CONCURRENCY})", "sessions/s", _ws_sessions),
            ("ws echo frames", "frames/s", _ws_frames),
        ]
        for name, unit, fn in workloads:
            await _warm_up(fn, direct, via)
            n_direct, t_direct = await fn(direct)
            n_router, t_router = await fn(via)
            rate_direct, rate_router = n_direct / t_direct, n_router / t_router
            note = "" if n_router == n_direct else "  (hit the time budget)"
            print(
                f"{name:<24} direct {rate_direct:9.0f} {unit:<10} "
                f"router {rate_router:9.0f} {unit:<10} "
                f"router/direct {rate_router / rate_direct:5.2f}  (n={n_router}){note}",
                flush=True,
            )
        print(f"records delivered to sinks: {sink.n}", flush=True)
    finally:
        await router.stop()
        await runner.cleanup()


def main() -> None:
    asyncio.run(_bench())


if __name__ == "__main__":
    main()
