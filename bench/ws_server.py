"""The probe benchmarks' WebSocket server, run as its own process (its CPU and memory are not
the probe's): five events per message, as fast as it can, and a count of open connections.

``python bench/ws_server.py`` prints its port, then serves until terminated. websockets'
server defaults otherwise (permessage-deflate on, as most servers have it); it sends no
pings of its own: the probe's pings are what is measured. A connection to ``/stats`` gets
``{"open": n, "peak": n}`` (the most connections open at once since the last ``/stats``)
and is closed: how a benchmark knows its sessions were all held at the same time.
"""

from __future__ import annotations

import asyncio
import json
import resource

EVENTS = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new soft limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def serve() -> None:
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    count = {"open": 0, "peak": 0}

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/stats":
            await ws.send(json.dumps(count))
            count["peak"] = count["open"]
            return
        count["open"] += 1
        count["peak"] = max(count["peak"], count["open"])
        try:
            async for raw in ws:
                msg = json.loads(raw)
                user = msg.get("user_id")
                for seq, name in enumerate(EVENTS, 1):
                    await ws.send(json.dumps({"type": name, "user_id": user, "seq": seq}))
        finally:
            count["open"] -= 1

    async with ws_serve(handler, "127.0.0.1", 0, backlog=4096, ping_interval=None) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    raise_fd_limit()
    asyncio.run(serve())
