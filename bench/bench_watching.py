"""The watch's canary user: how soon a 1011 reaches the judge, and what running for hours costs.

Measures, in one run on this machine, with the server in its own process:

1. the time from the server sending close 1011 to the canary's ``changed``
   hearing of the failed session (issue 12 wants first 1011 to traffic verified
   back under 1 s; this is the canary's share of it). The server puts its
   ``time.monotonic()`` (system-wide on Linux) in the close reason.
2. memory over a long run: thousands of sessions through one canary with a
   capped window; the Python heap after the first thousand and at the end
   once the window is full
   and at the end should be the same (flat), and what one ``measurement()`` of a full window costs.
3. an idle canary (one session held, pinged every second): client CPU as a
   share of one core.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

FAILING = 50
LONG_RUN = 5000
KEPT = 2000
#: Sessions after which the window is full: the heap is measured from here on.
WARM = KEPT + 500
IDLE_S = 5.0


async def _serve() -> None:
    """Five events per message; ``?fail=1``: close 1011 after the first, stamped."""
    from websockets.asyncio.server import ServerConnection, serve

    events = ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]

    async def handler(ws: ServerConnection) -> None:
        fail = ws.request is not None and "fail=1" in ws.request.path
        async for raw in ws:
            msg = json.loads(raw)
            for name in [*events, "agent_completed"]:
                await ws.send(json.dumps({"type": name, "user_id": msg.get("user_id")}))
                if fail:
                    await ws.close(1011, f"t={time.monotonic():.6f}")
                    return

    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        await asyncio.Event().wait()


def _rule(fail: bool, hold: str = "0s", ping: str | None = None) -> Any:
    from deploy_guard.policy.model import Rule

    message = {"type": "message", "user_id": "{user}", "session_id": "{session}"}
    events = ["agent_started", "agent_thinking", "tool_executing", "tool_completed"]
    return Rule.model_validate(
        {
            "name": "canary",
            "kind": "websocket",
            "websocket": {
                "path": "/",
                "query": {"fail": "1" if fail else "0"},
                "scenario": [
                    {"send": {"json": message}},
                    {"expect": [*events, "agent_completed"], "timeout": "10s"},
                ],
                "hold": hold,
                "ping_interval": ping,
            },
        }
    )


async def _first_1011(url: str) -> list[float]:
    """Milliseconds from the server's 1011 to ``changed``, per failed session."""
    from deploy_guard.measurements import Attempt
    from deploy_guard.probes.target import Target
    from deploy_guard.probes.watching import CanaryUser

    delays: list[float] = []
    done = asyncio.Event()
    stamp = re.compile(r"t=([0-9.]+)")

    def changed(attempt: Attempt) -> None:
        now = time.monotonic()
        found = stamp.search(attempt.detail)
        if found is not None:
            delays.append((now - float(found.group(1))) * 1000)
        if len(delays) >= FAILING:
            done.set()

    canary = CanaryUser(
        _rule(fail=True), Target(url), window=600, changed=changed, backoff=(0.01, 0.01)
    )
    await canary.start()
    await done.wait()
    await canary.stop()
    return delays


async def _long_run(url: str) -> tuple[float, float, float, int]:
    """Heap once the window is full and after LONG_RUN (MiB), a measurement()'s ms, kept."""
    from deploy_guard.probes import watching
    from deploy_guard.probes.target import Target

    watching.MIN_SPACING = 0.0  # as fast as the server answers, to reach many sessions
    warm, end = asyncio.Event(), asyncio.Event()

    def changed(_: object) -> None:
        if canary.sessions >= WARM:
            warm.set()
        if canary.sessions >= LONG_RUN:
            end.set()

    canary = watching.CanaryUser(
        _rule(fail=False), Target(url), window=3600, max_kept=KEPT, changed=changed
    )
    tracemalloc.start()
    await canary.start()
    await warm.wait()
    gc.collect()  # closed connections' garbage is not growth
    early = tracemalloc.get_traced_memory()[0] / 2**20
    await end.wait()
    gc.collect()
    late = tracemalloc.get_traced_memory()[0] / 2**20
    await canary.stop()
    tracemalloc.stop()
    start = time.perf_counter()
    m = canary.measurement()
    cost = (time.perf_counter() - start) * 1000
    return early, late, cost, m.done


async def _idle(url: str) -> float:
    """Client CPU, percent of one core, while one session is held and pinged every second."""
    from deploy_guard.probes.target import Target
    from deploy_guard.probes.watching import CanaryUser

    canary = CanaryUser(_rule(fail=False, hold="60s", ping="1s"), Target(url), window=600)
    await canary.start()
    await asyncio.sleep(0.5)  # the session is open and its scenario done
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(IDLE_S)
    used = (time.process_time() - cpu) / (time.perf_counter() - wall)
    await canary.stop()
    return used * 100


def main() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        delays = asyncio.run(_first_1011(url))
        print(
            f"server's 1011 to the canary's changed(), {len(delays)} sessions: "
            f"p50 {statistics.median(delays):.2f} ms, max {max(delays):.2f} ms"
        )
        early, late, cost, kept = asyncio.run(_long_run(url))
        print(
            f"{LONG_RUN} sessions, window capped at {KEPT}: heap {early:.2f} MiB after {WARM}, "
            f"{late:.2f} MiB after {LONG_RUN}; measurement() of {kept} sessions {cost:.1f} ms"
        )
        idle = asyncio.run(_idle(url))
        print(f"idle canary (held, pinged every 1 s) over {IDLE_S:g} s: {idle:.2f}% of one core")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        asyncio.run(_serve())
    else:
        main()
