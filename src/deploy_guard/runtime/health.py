"""``watch --health-port``: a tiny HTTP endpoint, for a watcher run as a Cloud Run service.

Cloud Run starts a service's instance only once its container listens on
``$PORT``; a watcher deployed as a service (instance-based billing, one
instance) must therefore answer HTTP. This is all it answers: any ``GET``
gets 200 and a small JSON body with what the watch judges now (the revision,
its status, whether it is degraded): names and words, never a secret. It is
off unless asked for; asked for, it listens on every interface (Cloud Run's
front end reaches the container from outside its loopback). Requests are
bounded: 8 KiB of head and 5 s to send it, then the connection is closed; and
at most :data:`MAX_CLIENTS` are served at once (more are closed at once), so
a flood of idle connections cannot grow the watcher's memory or file handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

#: Bytes of request head read at most, and seconds a client has to send them.
MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
#: Connections served at once; Cloud Run's own health checks need one.
MAX_CLIENTS = 16
JSON = "application/json"
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


class HealthServer:
    """Serves ``status()`` as JSON on ``host:port`` until :meth:`stop`."""

    #: The flag that asked for it, for the message when its port is taken.
    flag = "--health-port"

    def __init__(
        self,
        port: int,
        status: Callable[[], dict[str, Any]],
        host: str = "0.0.0.0",
        *,
        max_clients: int = MAX_CLIENTS,
    ):
        self.port, self.host, self.status = port, host, status
        self.max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._clients = 0

    async def start(self) -> int:
        """Listen; returns the port (the one the system chose when ``port`` is 0).

        A port it cannot listen on (taken by another process, or privileged) is the
        command line's to fix: a :class:`~deploy_guard.errors.ConfigError` (exit 2).
        """
        from deploy_guard.errors import ConfigError

        try:
            self._server = await asyncio.start_server(
                self._answer, self.host, self.port, limit=MAX_HEAD
            )
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError(
                f"{self.flag} {self.port}: cannot listen on it ({why}); is another process "
                "(another watcher?) using it? Pick another port, or 0 for any free one"
            ) from None
        return int(self._server.sockets[0].getsockname()[1])

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """The answer to ``GET path``: any path gets the status, as JSON."""
        return 200, JSON, _json(self.status())

    @property
    def clients(self) -> int:
        """Connections being served now."""
        return self._clients

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self.max_clients:
            writer.close()
            return
        self._clients += 1
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].decode("latin-1").split("?", 1)[0]
            if len(head) > MAX_HEAD:
                code, ctype, data = 431, JSON, _json({"error": "request head too large"})
            elif method not in (b"GET", b"HEAD"):
                code, ctype, data = 405, JSON, _json({"error": "read-only: GET only"})
            else:
                code, ctype, data = self.respond(path)
            writer.write(
                f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\n"
                "X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n".encode()
                + (data if method != b"HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
