"""An HTTP request as the emulator's v2 code path and the REST handlers read it.

The v1 front runs each write down the v2 path, which takes a
``grpc.aio.ServicerContext``: :class:`HttpContext` is the HTTP request seen
through the methods that path reads. :func:`read_json` is every handler's body.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from deploy_guard.emulator.rest.errors import invalid


class HttpContext:
    """An HTTP request seen through the ``grpc.aio.ServicerContext`` methods the v2 path
    may read: its headers as invocation metadata (who called: ``user-agent`` and the
    like), the client's address as the peer, and no deadline. Its calls came in by
    the v1 API (``audit_api``): the v2 path writes no audit entry for them, the front
    writes the v1 one (:mod:`.v1_audit`)."""

    audit_api = "v1"

    def __init__(self, request: web.Request | None = None) -> None:
        self._request = request

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        if self._request is None:
            return ()
        return tuple((k.lower(), v) for k, v in self._request.headers.items())

    def peer(self) -> str:
        remote = self._request.remote if self._request is not None else None
        return f"ipv4:{remote}:0" if remote else ""

    @staticmethod
    def time_remaining() -> float | None:
        return None


async def read_json(request: web.Request) -> Any:
    """The request body as JSON (``{}`` when empty); malformed JSON is INVALID_ARGUMENT."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise invalid(f"Invalid JSON payload received. {exc}") from exc


__all__ = ["HttpContext", "read_json"]
