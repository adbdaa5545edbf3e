"""Probe engine throughput and memory, against a minimal raw ``websockets`` loop.

Measures, in one run on this machine:

1. sessions/s for 1,000 short sessions (connect, one message, five events,
   close) at concurrency 100, for the probe engine (``run_rule``) and for a raw
   ``websockets`` client loop doing the same work: the practical limit. The
   ratio engine/raw is the figure to compare across machines (aim >= 0.8).
2. peak memory for 1,000 concurrently held sessions (tracemalloc peak of the
   Python heap, and the process's max RSS growth).

The server runs in a separate process so the client's numbers are its own.
Each throughput figure is the best of a few alternating rounds, because the
machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

EVENTS = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
SESSIONS = 1000
CONCURRENCY = 100
ROUNDS = 3
HELD = 1000
HOLD = "2s"


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))


async def _serve() -> None:
    """The server process: five events per message, as fast as it can."""
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            for seq, name in enumerate(EVENTS, 1):
                await ws.send(json.dumps({"type": name, "user_id": msg.get("user_id"), "seq": seq}))

    async with serve(handler, "127.0.0.1", 0, backlog=2048, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.Event().wait()


def _rule(sessions: int, concurrency: int, hold: str = "0s") -> Any:
    from deploy_guard.policy.model import Rule

    message = {"type": "message", "user_id": "{user}", "session_id": "{session}", "text": "hi {n}"}
    return Rule.model_validate(
        {
            "name": "bench",
            "kind": "websocket",
            "websocket": {
                "path": "/",
                "scenario": [{"send": {"json": message}}, {"expect": EVENTS, "timeout": "30s"}],
                "sessions": sessions,
                "concurrency": concurrency,
                "isolation": {"field": "user_id"},
                "ping_interval": None,
                "connect_timeout": "60s",
                "hold": hold,
            },
        }
    )


async def _engine(url: str, sessions: int, concurrency: int, hold: str = "0s") -> Any:
    from deploy_guard.probes.runner import run_rule
    from deploy_guard.probes.target import Target

    last = None
    async for m in run_rule(_rule(sessions, concurrency, hold), Target(url)):
        last = m
    return last


async def _raw(url: str, sessions: int, concurrency: int) -> int:
    """The practical limit: the same work with nothing but the websockets client."""
    from websockets.asyncio.client import connect
    from websockets.proxy import get_proxy
    from websockets.uri import parse_uri

    ws_url = url.replace("http://", "ws://") + "/"
    # Like the engine, read the proxy settings once (websockets' default reads the
    # environment on every connect, which would make the baseline needlessly slow).
    proxy = get_proxy(parse_uri(ws_url))
    ok = 0

    async def worker(k: int) -> None:
        nonlocal ok
        for n in range(k, sessions + 1, concurrency):
            async with connect(ws_url, ping_interval=None, proxy=proxy) as ws:
                await ws.send(json.dumps({"type": "message", "user_id": f"user-{k}", "n": n}))
                for _ in EVENTS:
                    json.loads(await ws.recv())
            ok += 1

    await asyncio.gather(*(worker(k) for k in range(1, concurrency + 1)))
    return ok


async def _throughput(url: str) -> dict[str, float]:
    """Best sessions/s (wall) and least client CPU ms per session, per contender."""
    best = {"raw": 0.0, "engine": 0.0, "raw_cpu": float("inf"), "engine_cpu": float("inf")}
    for _ in range(ROUNDS):
        for name in ("raw", "engine"):
            start, cpu = time.perf_counter(), time.process_time()
            if name == "raw":
                assert await _raw(url, SESSIONS, CONCURRENCY) == SESSIONS
            else:
                m = await _engine(url, SESSIONS, CONCURRENCY)
                assert m.succeeded == SESSIONS, m.failures_by_cause
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            best[name] = max(best[name], SESSIONS / wall)
            best[f"{name}_cpu"] = min(best[f"{name}_cpu"], used * 1000 / SESSIONS)
    return best


async def _memory(url: str) -> tuple[float, float, Any]:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    m = await _engine(url, HELD, HELD, hold=HOLD)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20, (rss_after - rss_before) / 1024, m


def main() -> None:
    _raise_fd_limit()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        best = asyncio.run(_throughput(url))
        print(
            f"{SESSIONS} short sessions at concurrency {CONCURRENCY} (best of {ROUNDS}): "
            f"raw websockets {best['raw']:.0f}/s, probe engine {best['engine']:.0f}/s, "
            f"ratio {best['engine'] / best['raw']:.2f}"
        )
        print(
            f"client CPU per session (less noisy on a shared machine): raw "
            f"{best['raw_cpu']:.2f} ms, engine {best['engine_cpu']:.2f} ms, "
            f"ratio raw/engine {best['raw_cpu'] / best['engine_cpu']:.2f}"
        )
        peak_mib, rss_mib, m = asyncio.run(_memory(url))
        print(
            f"{HELD} concurrent sessions held {HOLD}: {m.succeeded}/{m.done} ok, "
            f"tracemalloc peak {peak_mib:.1f} MiB ({peak_mib * 1024 / HELD:.1f} KiB/session), "
            f"max RSS growth {rss_mib:.1f} MiB"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _raise_fd_limit()
        asyncio.run(_serve())
    else:
        main()
