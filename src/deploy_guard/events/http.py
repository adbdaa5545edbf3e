"""What the HTTP notifiers share: one POST per attempt, bounded, with httpx errors mapped.

Slack, Google Chat and the generic webhook differ only in the body (and the
webhook's signature): :class:`HttpNotifier` does the rest. Its errors are
worded without the URL, which is the webhook's credential (Slack's and Google
Chat's URLs carry their token; so may anyone's): "HTTP 500: ...", "no answer
within 5s", "could not connect".

Redirects are not followed: a webhook that redirects is misconfigured, and
following it would send the payload (and its signature) somewhere not chosen.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from deploy_guard import __version__
from deploy_guard.events.delivery import Bounds, DeliveryError, deliver
from deploy_guard.events.model import Delivery, Event
from deploy_guard.events.payload import build

if TYPE_CHECKING:  # pragma: no cover
    import httpx

#: Statuses worth another attempt: the receiver is busy or broken for now.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
USER_AGENT = f"deploy-guard/{__version__}"
#: Characters of a refusal's body quoted in the report (Slack says "invalid_payload").
BODY_SAMPLE = 120


def json_body(document: Any) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class HttpNotifier:
    """POSTs a body built by :meth:`render` to a URL; subclasses say what the body is."""

    kind = "webhook"

    def __init__(
        self, name: str, url: str, *, bounds: Bounds, report_url: str | None = None
    ) -> None:
        self.name = name
        self._url = url
        self.bounds = bounds
        self.report_url = report_url
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never the URL
        return f"{type(self).__name__}({self.name!r})"

    def render(self, event: Event, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one attempt (a signature is made per attempt)."""
        raise NotImplementedError

    async def post(self, event: Event, report: dict[str, Any]) -> Delivery:
        payload = build(event, report, report_url=self.report_url)

        async def attempt() -> None:
            body, headers = self.render(event, payload)
            await self._send(body, headers)

        return await deliver(self.name, event, attempt, self.bounds)

    async def _send(self, body: bytes, headers: dict[str, str]) -> None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.bounds.attempt_timeout), follow_redirects=False
            )
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(
                f"no answer within {self.bounds.attempt_timeout:g}s", retryable=True
            ) from None
        except httpx.ConnectError:
            raise DeliveryError("could not connect to the receiver", retryable=True) from None
        except httpx.TransportError as exc:
            why = f"the connection failed ({type(exc).__name__})"
            raise DeliveryError(why, retryable=True) from None
        _check(response)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _check(response: httpx.Response) -> None:
    """Nothing for a 2xx; else a :class:`DeliveryError` that says the status and a sample."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise DeliveryError(f"HTTP {status}: redirects are not followed", retryable=False)
    sample = " ".join(response.text.split())[:BODY_SAMPLE]
    words = f"HTTP {status}" + (f": {sample}" if sample else "")
    raise DeliveryError(words, retryable=status in RETRY_STATUSES)
