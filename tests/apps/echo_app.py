"""A hostile service for the no-leak tests: it echoes every credential it is sent.

Each echo is a place a secret could slip into deploy-guard's output:

- ``GET /auth``, ``/key``, ``/query``: HTTP 500 whose body starts with the
  Authorization header, the ``X-Api-Key`` header or the raw query string (a
  failed request's body sample is kept, cut off at 300 characters);
- ``/ws``: a WebSocket that sends one event carrying every header and the query
  string, then closes with 1011 and a reason made of the first characters of
  the Authorization header (a close reason holds at most 123 bytes);
- as a revision, every request prints one ERROR line with the headers and
  query to stdout (its logs, which a logs rule quotes).

Run as ``python echo_app.py`` with ``$PORT`` (an emulator revision), or use
:func:`make_app` in-process.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def make_app(*, log_lines: bool = False) -> Any:
    """The app; ``log_lines`` prints the ERROR lines (a revision's logs; noise in-process)."""
    from aiohttp import web

    def leaks(request: web.Request) -> dict[str, str]:
        return {
            "authorization": request.headers.get("Authorization", ""),
            "x_api_key": request.headers.get("X-Api-Key", ""),
            "query": request.query_string,
        }

    def log(request: web.Request) -> None:
        if not log_lines:
            return
        line = {"severity": "ERROR", "message": f"leaking {json.dumps(leaks(request))}"}
        print(json.dumps(line), flush=True)

    def echo(field: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            log(request)
            return web.Response(status=500, text=f"you sent: {leaks(request)[field]} (end)")

        return handler

    async def ws(request: web.Request) -> web.WebSocketResponse:
        log(request)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.send_json({"type": "echo", **leaks(request)})
        reason = ("bad " + request.headers.get("Authorization", ""))[:120]
        await sock.close(code=1011, message=reason.encode())
        return sock

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/auth", echo("authorization"))
    app.router.add_get("/key", echo("x_api_key"))
    app.router.add_get("/query", echo("query"))
    app.router.add_get("/ws", ws)
    return app


def main() -> None:
    from aiohttp import web

    port = int(os.environ["PORT"])
    print(json.dumps({"severity": "INFO", "message": f"echo listening on {port}"}), flush=True)
    web.run_app(make_app(log_lines=True), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    sys.exit(main())
