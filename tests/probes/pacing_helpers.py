"""A server that notes when each session (or request) starts, for the ramp and rate tests.

Times are ``time.monotonic()``, the clock of the runner's event loop too, so a
test can compare the server's notes with a time it read before the run.
Assertions built on these notes use bounds that load cannot break: a start the
server sees at ``t`` was made by the client before ``t``, so "no more than
``1 + (t - before) * rate`` starts seen by ``t``" holds however slow the machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web


@dataclass
class Start:
    """One session or request as the server saw it begin."""

    at: float
    user: str
    n: int
    #: Users with a session open at the server when this one began (itself included).
    open_users: int


@dataclass
class Starts:
    """Serves ``/ws`` (held until the client closes) and ``/health``; notes every start."""

    starts: list[Start] = field(default_factory=list)
    _open: dict[str, int] = field(default_factory=dict)

    def _note(self, request: web.Request) -> str:
        user = request.query.get("user", "")
        self._open[user] = self._open.get(user, 0) + 1
        n = int(request.query.get("n", "0"))
        open_users = sum(1 for count in self._open.values() if count)
        self.starts.append(Start(time.monotonic(), user, n, open_users))
        return user

    def app(self) -> web.Application:
        async def ws(request: web.Request) -> web.WebSocketResponse:
            response = web.WebSocketResponse()
            await response.prepare(request)
            user = self._note(request)
            try:
                async for frame in response:
                    if frame.type == WSMsgType.TEXT:
                        await response.send_str(frame.data)
            finally:
                self._open[user] -= 1
            return response

        async def health(request: web.Request) -> web.Response:
            user = self._note(request)
            self._open[user] -= 1
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_get("/ws", ws)
        app.router.add_get("/health", health)
        return app

    def times(self) -> list[float]:
        return sorted(s.at for s in self.starts)


def no_faster_than(times: list[float], rate: float, before: float) -> list[str]:
    """Starts that came sooner than the rate allows after ``before``: [] when none did.

    The j-th start (from 0) cannot come before ``before + j / rate``: that is
    what "no burst beyond the rate" means, measured where load cannot cheat.
    """
    return [
        f"start {j} at {t - before:.4f}s, before {j / rate:.4f}s"
        for j, t in enumerate(sorted(times))
        if t < before + j / rate - 1e-6
    ]
