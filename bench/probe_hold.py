"""One probe process holding N WebSocket sessions at once, for :mod:`bench.bench_probes`.

``python bench/probe_hold.py URL N HOLD PING [--trace] [--raw]`` runs a rule of N
sessions at concurrency N (each: send a message, expect five events, hold HOLD
seconds pinging every PING seconds, close) and prints one JSON line: the outcome,
the worst event-loop lag, the CPU it took and, with ``--trace``, the tracemalloc
peak. Its RSS is read from outside (``/proc/PID/status``) by the parent while it
runs, so nothing here pays for measuring memory unless ``--trace`` asks.
``--raw``: the same sessions with nothing but websockets, what the engine's memory
is compared with.

The event-loop lag is what a ticker task sees: it asks to wake every
:data:`TICK` seconds and records how late it woke. A probe whose loop stalls
longer than the ping timeout would fail healthy sessions with its own keepalive.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from ws_server import EVENTS, raise_fd_limit

#: Seconds between the lag ticker's wake-ups.
TICK = 0.05


def rss_now() -> int:
    """This process's VmRSS in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class LagTicker:
    """A task that wakes every ``period`` s and keeps how late each wake-up was."""

    def __init__(self, period: float = TICK) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.period
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, loop.time() - asked))

    def __enter__(self) -> LagTicker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.lags) or [0.0]
        return {
            "lag_max": round(ordered[-1], 4),
            "lag_p99": round(ordered[int(0.99 * (len(ordered) - 1))], 4),
            "ticks": len(ordered),
        }


class GcPauses:
    """How long each cyclic garbage collection stopped the process (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self.cpu = 0.0
        self._began = self._cpu = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began, self._cpu = time.perf_counter(), time.process_time()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._began))
            self.cpu += time.process_time() - self._cpu

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict[str, float]:
        full = [s for g, s in self.pauses if g == 2]
        return {
            "gc_max": round(max((s for _, s in self.pauses), default=0.0), 4),
            "gc_full": len(full),
            "gc_total": round(sum(s for _, s in self.pauses), 3),
            "gc_cpu": round(self.cpu, 3),
        }


def rule(sessions: int, hold: float, ping: float) -> Any:
    from deploy_guard.policy.model import Rule

    message = {"type": "message", "user_id": "{user}", "session_id": "{session}", "text": "hi {n}"}
    return Rule.model_validate(
        {
            "name": "held",
            "kind": "websocket",
            "websocket": {
                "path": "/",
                "scenario": [{"send": {"json": message}}, {"expect": EVENTS, "timeout": "60s"}],
                "sessions": sessions,
                "concurrency": sessions,
                "isolation": {"field": "user_id"},
                "ping_interval": f"{ping}s",
                "connect_timeout": "60s",
                "hold": f"{hold}s",
            },
        }
    )


async def engine(url: str, sessions: int, hold: float, ping: float) -> dict[str, Any]:
    from deploy_guard.probes.runner import run_rule
    from deploy_guard.probes.target import Target

    last = None
    async for m in run_rule(rule(sessions, hold, ping), Target(url)):
        last = m
    assert last is not None
    return {
        "done": last.done,
        "succeeded": last.succeeded,
        "failures": last.failures_by_cause,
        "samples": [s.detail for s in last.samples[:2]],
    }


async def raw(url: str, sessions: int, hold: float, ping: float) -> dict[str, Any]:
    """The same sessions with websockets alone (and the probe's deflate offers)."""
    from websockets.asyncio.client import connect
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    ws_url = url.replace("http://", "ws://") + "/"
    settings = {"memLevel": 5}
    offers = [
        ClientPerMessageDeflateFactory(server_no_context_takeover=True, compress_settings=settings),
        ClientPerMessageDeflateFactory(compress_settings=settings),
    ]
    ok = 0

    async def session(k: int) -> None:
        nonlocal ok
        async with connect(
            ws_url,
            ping_interval=ping,
            ping_timeout=ping,
            proxy=None,
            open_timeout=60,
            compression=None,
            extensions=offers,
        ) as ws:
            await ws.send(json.dumps({"type": "message", "user_id": f"user-{k}"}))
            for _ in EVENTS:
                json.loads(await ws.recv())
            try:
                async with asyncio.timeout(hold):
                    while True:
                        await ws.recv()
            except TimeoutError:
                ok += 1

    results = await asyncio.gather(*(session(k) for k in range(sessions)), return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"done": sessions, "succeeded": ok, "failures": {}, "samples": errors[:2]}


async def main(
    url: str, sessions: int, hold: float, ping: float, *, raw_loop: bool, trace: bool
) -> None:
    import deploy_guard.probes.runner
    import deploy_guard.probes.websocket  # noqa: F401

    rss_before = rss_now()
    if trace:
        tracemalloc.start()
    cpu, wall = time.process_time(), time.monotonic()
    with LagTicker() as ticker, GcPauses() as pauses:
        run = raw if raw_loop else engine
        out = await run(url, sessions, hold, ping)
    out.update(ticker.summary())
    out.update(pauses.summary())
    out["cpu_s"] = round(time.process_time() - cpu, 3)
    out["wall_s"] = round(time.monotonic() - wall, 3)
    out["rss_before"] = rss_before
    if trace:
        out["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    raise_fd_limit()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet
    url, sessions, hold, ping = args[0], int(args[1]), float(args[2]), float(args[3])
    flags = {"raw_loop": "--raw" in sys.argv, "trace": "--trace" in sys.argv}
    asyncio.run(main(url, sessions, hold, ping, **flags))
