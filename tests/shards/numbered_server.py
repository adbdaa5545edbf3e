"""A server whose failures depend only on the session number: the same in every run.

Each WebSocket session sends ``{"n": "<n>"}`` (the probe's ``{n}``). The server answers
``hello`` then ``done``, except for the numbers listed in the query: ``close`` (closed with
1011 after ``hello``) and ``short`` (closed with 1000 after ``hello``: ``done`` never
comes). So any run of the same policy, sharded or not, fails exactly the same sessions for
the same causes. ``python numbered_server.py`` serves it on a free port and prints its URL.
"""

from __future__ import annotations

import json

from aiohttp import WSCloseCode, web


def _numbers(request: web.Request, name: str) -> set[str]:
    return {n for n in request.query.get(name, "").split(",") if n}


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    message = await ws.receive()
    n = str(json.loads(message.data)["n"])
    await ws.send_json({"type": "hello", "n": n})
    if n in _numbers(request, "close"):
        await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"boom")
        return ws
    if n in _numbers(request, "short"):
        await ws.close(code=WSCloseCode.OK)
        return ws
    await ws.send_json({"type": "done", "n": n})
    async for _ in ws:  # until the probe closes
        pass
    return ws


async def _health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", _ws)
    app.router.add_get("/health", _health)
    return app


def main() -> None:
    """Serve on a free loopback port; the first line printed is the base URL."""
    import asyncio

    async def run() -> None:
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
