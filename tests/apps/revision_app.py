"""A tiny Cloud Run revision for tests: HTTP and WebSocket on ``$PORT``.

Run as ``python revision_app.py`` by the emulator (``containers[0].command``).
It answers:

- ``GET /``: JSON ``{"revision": $K_REVISION, "service": $K_SERVICE, ...}``;
- ``GET /api/NAME``: the same JSON plus ``"path"`` (a tool endpoint, e.g. ``/api/tool``);
- ``GET /health``: ``ok``;
- ``GET /env?name=X``: the value of environment variable X;
- ``GET /status?code=N``: an empty answer with status N;
- ``GET /exit?code=N``: answers, then the process exits with status N (a
  revision that crashes after it was Ready);
- ``/ws``: a WebSocket that first sends ``{"type": "hello", "revision": ...}``
  then echoes text; with ``?close=CODE[&reason=R][&after=SECONDS]`` it closes
  with that code (1011 to play the failure this project was built for).

Every answer names the revision, failures included, so real users of the
service URL (``tests/users.py``) can tell which revision served them.

Environment knobs play a broken revision:

- ``APP_EXIT_AT_START=N`` prints to stderr and exits with status N before
  listening; ``APP_NEVER_LISTEN=1`` prints and never opens its port;
  ``APP_STARTUP_DELAY=S`` waits before listening.
- ``APP_FAIL_PATH=/api/tool`` with ``APP_FAIL_EVERY=3``: every 3rd request to
  that path (the 3rd, 6th, ... this process served) answers 500 with JSON
  ``{"revision": ..., "error": "tool call failed"}``: 33 %, deterministic, and
  other paths stay healthy, so probes of ``/`` through the tag URL pass while
  real users see errors (the error-rate metric's case). ``APP_FAIL_EVERY``
  defaults to 1 (every request fails). The app prints no ERROR line for it:
  only the request logs and metrics show it, as for a real handler's 500.
- ``APP_WS_CLOSE=1011``: every ``/ws`` session closes with that code right
  after the first message, or ``APP_WS_CLOSE_AFTER=S`` seconds later (echoing
  meanwhile); a 1011 also prints an ERROR line ``orchestrator is None``.
- ``APP_SLOW_MS=N``: every HTTP answer (not WebSocket frames) is N ms late: a
  latency regression.

Each request prints one line to stdout (a revision's logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

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


def _fails(served: int) -> bool:
    """Whether the ``served``-th request (from 1) to ``APP_FAIL_PATH`` fails."""
    every = int(os.environ.get("APP_FAIL_EVERY", "1"))
    return every > 0 and served % every == 0


def main() -> None:
    _pre_start()
    from aiohttp import WSMsgType, web

    fail_path = os.environ.get("APP_FAIL_PATH")
    slow_s = float(os.environ.get("APP_SLOW_MS", "0")) / 1000
    ws_close = os.environ.get("APP_WS_CLOSE")
    ws_close_after = float(os.environ.get("APP_WS_CLOSE_AFTER", "0"))
    served = {"fail_path": 0}

    @web.middleware
    async def knobs(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/ws":
            return await handler(request)
        if slow_s:
            await asyncio.sleep(slow_s)
        if fail_path is not None and request.path == fail_path:
            served["fail_path"] += 1
            if _fails(served["fail_path"]):
                print(f"GET {request.path_qs} failed on {REVISION} (500)")
                body = {"revision": REVISION, "error": "tool call failed"}
                return web.json_response(body, status=500)
        return await handler(request)

    async def index(request: web.Request) -> web.Response:
        print(f"GET {request.path_qs} served by {REVISION}")
        return web.json_response({"revision": REVISION, "service": SERVICE, "pid": os.getpid()})

    async def api(request: web.Request) -> web.Response:
        print(f"GET {request.path_qs} served by {REVISION}")
        body = {"revision": REVISION, "service": SERVICE, "path": request.path}
        return web.json_response(body)

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
        await sock.send_str(json.dumps({"type": "hello", "revision": REVISION}))
        close = request.query.get("close", ws_close)
        if close is None:
            await echo(sock)
            return sock
        after = request.query.get("after")
        with contextlib.suppress(TimeoutError):  # echo until it is time to close
            async with asyncio.timeout(float(after) if after is not None else ws_close_after):
                await echo(sock)
        if sock.closed:
            return sock
        if close == "1011":
            print(json.dumps({"severity": "ERROR", "message": "orchestrator is None"}))
        await sock.close(code=int(close), message=request.query.get("reason", "").encode())
        return sock

    async def echo(sock: web.WebSocketResponse) -> None:
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)

    app = web.Application(middlewares=[knobs])
    app.add_routes(
        [
            web.get("/", index),
            web.get("/api/{name}", api),
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
