"""Faults on demand and per-method call counters, as a ``grpc.aio`` server interceptor.

Reliability tests need the APIs to misbehave in the ways Google's do: a
method answers UNAVAILABLE twice and then recovers, or RESOURCE_EXHAUSTED
always, or answers slowly. They also need to know how many calls the guard
made (Cloud Logging's read quota is 60-120 a minute per project), so every RPC
the server receives is counted by its full method name, failed ones included.

Rules name a method by its full name
(``/google.logging.v2.LoggingServiceV2/ListLogEntries``) or by a suffix of it
(``ListLogEntries``, ``LoggingServiceV2/ListLogEntries``). The injector sits
in front of every handler, unary or streaming, so it is the one place faults
are applied. The CLI form is ``METHOD=CODE[xN]`` or ``METHOD=delay:DURATION``
(:func:`parse_spec`), for example ``ListLogEntries=UNAVAILABLEx2``,
``UpdateService=ABORTED``, ``ListTimeSeries=delay:2s``.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from deploy_guard.errors import ConfigError
from deploy_guard.log import get_logger


def _log() -> Any:
    """The logger, looked up per event: a module-level bound logger would keep the
    processors of import time and miss a later ``configure()`` or ``capture_logs()``."""
    return get_logger("deploy_guard.emulator.faults")


@dataclass
class _Rule:
    method: str
    code: grpc.StatusCode | None  # None: a delay-only rule
    remaining: int | None  # None: always
    message: str
    delay_s: float = 0.0

    def applies(self, full_method: str) -> bool:
        return _matches(self.method, full_method)


def _matches(pattern: str, full_method: str) -> bool:
    if pattern.startswith("/"):
        return pattern == full_method
    return full_method.endswith("/" + pattern) or full_method.endswith("." + pattern)


@dataclass(frozen=True)
class FaultSpec:
    """One parsed ``METHOD=CODE[xN]`` / ``METHOD=delay:DURATION`` spec."""

    method: str
    code: grpc.StatusCode | None = None
    times: int | None = None
    delay_s: float = 0.0


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(text: str) -> float:
    """``2s``, ``500ms``, ``1.5``, ``1m`` -> seconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ConfigError(f"{text!r} is not a duration (use 2s, 500ms, 1m)")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


def parse_spec(spec: str) -> FaultSpec:
    """Parse the CLI's fault spec; raise :class:`ConfigError` naming the mistake."""
    method, sep, action = spec.partition("=")
    method, action = method.strip(), action.strip()
    if not sep or not method or not action:
        raise ConfigError(
            f"fault {spec!r} is invalid: use METHOD=CODE[xN] or METHOD=delay:DURATION, "
            "e.g. ListLogEntries=UNAVAILABLEx2"
        )
    if action.lower().startswith("delay:"):
        return FaultSpec(method, delay_s=parse_duration(action[6:]))
    m = re.fullmatch(r"([A-Za-z_]+?)(?:[xX](\d+))?", action)
    name, count = (m.group(1), m.group(2)) if m else (action, None)
    code = getattr(grpc.StatusCode, name.upper(), None)
    if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
        known = ", ".join(c.name for c in grpc.StatusCode if c is not grpc.StatusCode.OK)
        raise ConfigError(f"fault {spec!r}: {name!r} is not a gRPC status code ({known})")
    times = int(count) if count else None
    if times is not None and times < 1:
        raise ConfigError(f"fault {spec!r}: the count after 'x' must be at least 1")
    return FaultSpec(method, code=code, times=times)


class FaultInjector(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every RPC and applies configured failures and delays.

    Thread-safe: tests configure it from their own thread while the server's
    event loop serves calls.
    """

    def __init__(self, known_methods: Iterable[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._counts: Counter[str] = Counter()
        #: Full names of the methods served; a rule must match one (None: no check).
        self._known = sorted(known_methods) if known_methods is not None else None

    def _check_method(self, method: str) -> None:
        """Refuse a rule that names no served method: a typo must not pass silently."""
        if self._known is None or any(_matches(method, name) for name in self._known):
            return
        names = ", ".join(sorted({name.rsplit("/", 1)[-1] for name in self._known}))
        raise ConfigError(f"fault method {method!r} matches no RPC the emulator serves ({names})")

    # ------------------------------------------------------------ configuration
    def fail(
        self,
        method: str,
        code: grpc.StatusCode,
        times: int | None = None,
        message: str = "",
    ) -> None:
        """Make ``method`` fail with ``code``: ``times`` calls, or always when None."""
        if times is not None and times < 1:
            raise ConfigError("times must be at least 1 (or None for always)")
        self._check_method(method)
        text = message or f"fault injected by the emulator: {code.name}"
        with self._lock:
            self._rules.append(_Rule(method, code, times, text))

    def delay(self, method: str, seconds: float) -> None:
        """Hold every call of ``method`` for ``seconds`` before serving it."""
        self._check_method(method)
        with self._lock:
            self._rules.append(_Rule(method, None, None, "", delay_s=seconds))

    def apply(self, spec: FaultSpec | str) -> None:
        """Apply a parsed (or textual) CLI spec."""
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        if parsed.code is not None:
            self.fail(parsed.method, parsed.code, parsed.times)
        else:
            self.delay(parsed.method, parsed.delay_s)

    def clear(self) -> None:
        """Remove every rule (counters are kept)."""
        with self._lock:
            self._rules.clear()

    def counts(self) -> dict[str, int]:
        """Calls received per full method name, failed ones included."""
        with self._lock:
            return dict(self._counts)

    def count(self, method: str) -> int:
        """Calls received by methods matching ``method`` (a full name or a suffix)."""
        with self._lock:
            return sum(n for name, n in self._counts.items() if _matches(method, name))

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    # ------------------------------------------------------------ interception
    def _decide(self, full_method: str) -> tuple[float, _Rule | None]:
        """Count the call; pick its delay and the failure (consuming one of N)."""
        with self._lock:
            self._counts[full_method] += 1
            delay = sum(r.delay_s for r in self._rules if r.code is None and r.applies(full_method))
            for rule in self._rules:
                if rule.code is not None and rule.applies(full_method):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._rules.remove(rule)
                    return delay, rule
            return delay, None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        delay, rule = self._decide(method)
        if handler is None or (delay <= 0 and rule is None):
            return handler
        _log().info(
            "emulator_fault_injected",
            method=method,
            code=rule.code.name if rule is not None and rule.code is not None else None,
            delay_s=delay,
        )
        return _wrap(handler, delay, rule)


def _wrap(handler: grpc.RpcMethodHandler, delay: float, rule: _Rule | None) -> Any:
    """The same handler kind, with a delay before it and/or a failure instead of it."""

    async def before(context: grpc.aio.ServicerContext) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if rule is not None and rule.code is not None:
            await context.abort(rule.code, rule.message)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(context)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    streaming = handler.unary_stream or handler.stream_stream

    async def stream_out(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await before(context)
        result = streaming(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        else:  # a coroutine handler that writes with context.write()
            await result

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_out, **codec)
    return grpc.stream_stream_rpc_method_handler(stream_out, **codec)
