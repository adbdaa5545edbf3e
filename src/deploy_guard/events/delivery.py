"""Bounded delivery: a timeout per attempt, a few retries with back-off, a bound on it all.

Every notifier sends through :func:`deliver`, so every kind is bounded the
same way and none can hold up the run: an attempt that takes longer than
``Bounds.attempt_timeout`` is abandoned, a retryable failure (a timeout, a
refused connection, HTTP 429 or 5xx, a transient Google API status) is tried
again after an exponential back-off with jitter, at most ``Bounds.attempts``
times and never past ``Bounds.total`` seconds from the first try. The
retrying is tenacity's, not a hand-written loop.

Whatever happens, :func:`deliver` returns a :class:`~deploy_guard.events.model.Delivery`
and never raises (except for cancellation): a notification is told about,
never a reason for the run to change course.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from deploy_guard.events.model import Delivery, Event
from deploy_guard.log import redact_text


class DeliveryError(Exception):
    """One attempt failed; ``retryable`` says whether another attempt may do better.

    The message is shown in the report and the log: it must never hold the
    receiver's URL or any credential (notifiers say "HTTP 500", "timed out").
    """

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Bounds:
    """How long a delivery may take. The defaults keep a dead receiver under ~20 s."""

    #: Seconds one attempt may take (connect, send, answer).
    attempt_timeout: float = 5.0
    #: Tries in all, the first included.
    attempts: int = 3
    #: Back-off: a random wait up to ``backoff`` seconds, then up to twice that, and so on,
    #: never more than ``backoff_max`` ("full jitter": retries do not arrive in step).
    backoff: float = 0.5
    backoff_max: float = 4.0
    #: Seconds from the first try after which nothing more is tried.
    total: float = 20.0


async def deliver(
    notifier: str,
    event: Event,
    attempt: Callable[[], Awaitable[None]],
    bounds: Bounds,
) -> Delivery:
    """Run ``attempt`` under ``bounds``; how it ended, as a :class:`Delivery`."""
    from tenacity import (
        AsyncRetrying,
        retry_if_exception,
        stop_after_attempt,
        stop_after_delay,
        wait_random_exponential,
    )

    tries = 0

    async def once() -> None:
        nonlocal tries
        tries += 1
        try:
            async with asyncio.timeout(bounds.attempt_timeout):
                await attempt()
        except TimeoutError:
            raise DeliveryError(
                f"no answer within {bounds.attempt_timeout:g}s", retryable=True
            ) from None

    retrying = AsyncRetrying(
        stop=stop_after_attempt(bounds.attempts) | stop_after_delay(bounds.total),
        wait=wait_random_exponential(multiplier=bounds.backoff, max=bounds.backoff_max),
        retry=retry_if_exception(lambda exc: isinstance(exc, DeliveryError) and exc.retryable),
        reraise=True,
    )
    try:
        async with asyncio.timeout(bounds.total):
            await retrying(once)
    except DeliveryError as exc:
        return _failed(notifier, event, tries, str(exc))
    except TimeoutError:
        return _failed(notifier, event, tries, f"gave up after {bounds.total:g}s")
    except Exception as exc:  # a notifier's bug must not reach the run
        return _failed(notifier, event, tries, f"internal error: {type(exc).__name__}: {exc}")
    return Delivery(notifier, event.kind, event.id, "delivered", tries)


def _failed(notifier: str, event: Event, tries: int, why: str) -> Delivery:
    return Delivery(notifier, event.kind, event.id, "failed", max(tries, 1), redact_text(why))
