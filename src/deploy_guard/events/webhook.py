"""``kind: webhook``: the payload as JSON, signed with HMAC-SHA256 when a key is given.

The signature covers the timestamp and the exact body, in one header::

    X-Deploy-Guard-Signature: t=1767225600,v1=5f0c...e2 (hex HMAC-SHA256 of "1767225600.<body>")

so a receiver can tell the POST came from the guard (only the holder of the
key can make ``v1``) and refuse a replay (a captured request re-sent later
carries an old ``t``). :func:`verify` is the receiver's side, in Python;
``docs/notifications.md`` shows it in a few lines of any language. Each retry
is signed again with its own time; the payload's ``id`` stays the same, so a
receiver drops a second copy of an event it already has.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from deploy_guard.events.delivery import Bounds
from deploy_guard.events.http import HttpNotifier, json_body
from deploy_guard.events.model import Event

SIGNATURE_HEADER = "X-Deploy-Guard-Signature"
EVENT_HEADER = "X-Deploy-Guard-Event"
DELIVERY_HEADER = "X-Deploy-Guard-Delivery"
#: A receiver refuses a signature older (or newer) than this many seconds.
TOLERANCE = 300.0


def signature(body: bytes, key: str, timestamp: int) -> str:
    """The header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(key.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    body: bytes, header: str, key: str, *, tolerance: float = TOLERANCE, now: float | None = None
) -> bool:
    """True when ``header`` signs ``body`` with ``key`` and is at most ``tolerance`` s old."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = signature(body, key, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", ()))


class WebhookNotifier(HttpNotifier):
    """POSTs the versioned payload; signs it when it has a key."""

    kind = "webhook"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        bounds: Bounds,
        secret: str | None = None,
        report_url: str | None = None,
    ) -> None:
        super().__init__(name, url, bounds=bounds, report_url=report_url)
        self._secret = secret

    def render(self, event: Event, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json_body(payload)
        headers = {EVENT_HEADER: event.kind, DELIVERY_HEADER: event.id}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(body, self._secret, int(time.time()))
        return body, headers
