"""A tiny Cloud Run revision for tests: HTTP and WebSocket on ``$PORT``.

Run as ``python revision_app.py`` by the emulator (``containers[0].command``).
It answers:

- ``GET /``: JSON ``{"revision": $K_REVISION, "service": $K_SERVICE, ...}``;
- ``GET /health``: ``ok``;
- ``GET /env?name=X``: the value of environment variable X;
- ``GET /status?code=N``: an empty answer with status N;
- ``GET /exit?code=N``: answers, then the process exits with status N (a
  revision that crashes after it was Ready);
- ``/ws``: a WebSocket that first sends ``{"revision": ...}`` then echoes text;
  with ``?close=CODE[&reason=R][&after=SECONDS]`` it closes with that code
  (1011 to play the failure this project was built for).

Environment knobs play a broken revision: ``APP_EXIT_AT_START=N`` prints to
stderr and exits with status N before listening; ``APP_NEVER_LISTEN=1``
prints and never opens its port; ``APP_STARTUP_DELAY=S`` waits before listening.
Each request prints one line to stdout (a revision's logs).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

REVISION = os.environ.get("K_REVISION", "")
SERVICE = os.environ.get("K_SERVICE", "")


def _pre_start() -> None:
    code = os.environ.get("APP_EXIT_AT_START")
    if code is not None:
        print(f"fatal: cannot start revision {REVISION}: missing CONFIG", file=sys.stderr)
        sys.exit(int(code))
    if os.environ.get("APP_NEVER_LISTEN"):
        print(f"revision {REVISION} is busy and will never listen", flush=True)
        while True:
            time.sleep(3600)
    time.sleep(float(os.environ.get("APP_STARTUP_DELAY", "0")))


def main() -> None:
    _pre_start()
    from aiohttp import WSMsgType, web

    async def index(request: web.Request) -> web.Response:
        print(f"GET {request.path_qs} served by {REVISION}")
        return web.json_response({"revision": REVISION, "service": SERVICE, "pid": os.getpid()})

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def env(request: web.Request) -> web.Response:
        return web.Response(text=os.environ.get(request.query.get("name", ""), ""))

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("code", "200")))

    async def exit_(request: web.Request) -> web.Response:
        code = int(request.query.get("code", "1"))
        asyncio.get_running_loop().call_later(0.05, os._exit, code)
        return web.Response(text=f"exiting with {code}")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        print(f"WS {request.path_qs} opened on {REVISION}")
        await sock.send_str(json.dumps({"revision": REVISION}))
        close = request.query.get("close")
        if close is not None:
            await asyncio.sleep(float(request.query.get("after", "0")))
            reason = request.query.get("reason", "").encode()
            if close == "1011":
                print(json.dumps({"severity": "ERROR", "message": "orchestrator is None"}))
            await sock.close(code=int(close), message=reason)
            return sock
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)
        return sock

    app = web.Application()
    app.add_routes(
        [
            web.get("/", index),
            web.get("/health", health),
            web.get("/env", env),
            web.get("/status", status),
            web.get("/exit", exit_),
            web.get("/ws", ws),
        ]
    )
    port = int(os.environ["PORT"])
    print(json.dumps({"severity": "INFO", "message": f"{REVISION} listening on {port}"}))
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
