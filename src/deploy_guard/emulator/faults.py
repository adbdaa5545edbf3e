"""Faults on demand and per-method call counters, as a ``grpc.aio`` server interceptor.

Reliability tests need the APIs to misbehave in the ways Google's do: a
method answers UNAVAILABLE twice and then recovers, or RESOURCE_EXHAUSTED
always, or answers slowly, or applies a write and then loses the answer (the
client sees UNAVAILABLE and retries a write that already landed). They also
need to know how many calls the guard made (Cloud Logging's read quota is
60-120 a minute per project), so every RPC the server receives is counted by
its full method name, failed ones included.

Rules name a method by its full name
(``/google.logging.v2.LoggingServiceV2/ListLogEntries``) or by a suffix of it
(``ListLogEntries``, ``LoggingServiceV2/ListLogEntries``). The injector sits
in front of every handler, unary or streaming, so it is the one place faults
are applied. The CLI form (:func:`parse_spec`) is ``METHOD=ACTION[WHEN]``:

- ACTION: a gRPC status code (``UNAVAILABLE``: the call fails, nothing is
  done), ``delay:DURATION`` (the call is served late), or ``lost[:CODE]`` (the
  call is served, then the client gets CODE, UNAVAILABLE unless told:
  a response lost on the way back), or ``break:N[:CODE]`` (a streaming call,
  ``TailLogEntries``, sends N responses, then ends with CODE, UNAVAILABLE
  unless told: a stream broken mid-way; on a unary method it is ``lost``);
- WHEN: nothing (every call), ``xN`` (the next N calls) or ``@N`` (only the
  N-th call from now, ``@1`` being the next one; the calls before it pass).

For example ``ListLogEntries=UNAVAILABLEx2``, ``UpdateService=ABORTED``,
``ListTimeSeries=delay:2s``, ``UpdateService=delay:3s@2``,
``UpdateService=lost@1``, ``GetService=UNAVAILABLE@3``, ``TailLogEntries=break:2``.
"""

from __future__ import annotations

import asyncio
import contextlib
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


#: What a rule does to a call it fires on.
FAIL, DELAY, LOST, BREAK = "fail", "delay", "lost", "break"


@dataclass
class _Rule:
    method: str
    kind: str  # FAIL, DELAY, LOST or BREAK
    code: grpc.StatusCode | None  # the status a FAIL, LOST or BREAK call ends with
    remaining: int | None  # calls it still fires on (None: always)
    message: str
    delay_s: float = 0.0
    #: Matching calls to let pass before it fires (``@N``: N - 1).
    skip: int = 0
    #: BREAK: responses a stream sends before it is broken.
    after: int = 0

    def applies(self, full_method: str) -> bool:
        return _matches(self.method, full_method)


def _matches(pattern: str, full_method: str) -> bool:
    if pattern.startswith("/"):
        return pattern == full_method
    return full_method.endswith("/" + pattern) or full_method.endswith("." + pattern)


@dataclass(frozen=True)
class FaultSpec:
    """One parsed ``METHOD=ACTION[xN|@N]`` spec (see the module docstring)."""

    method: str
    code: grpc.StatusCode | None = None
    times: int | None = None
    delay_s: float = 0.0
    #: Only the nth call from now (None: from the first, ``times`` of them).
    nth: int | None = None
    #: The call is served, then its answer is replaced by ``code``.
    lost: bool = False
    #: A stream is broken with ``code`` after this many responses (None: not a break).
    break_after: int | None = None


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
#: ``ACTION`` then an optional ``xN`` or ``@N``.
_WHEN = re.compile(r"^(?P<action>.+?)(?:(?P<times>[xX]\d+)|@(?P<nth>\d+))?$")
_GRAMMAR = (
    "use METHOD=CODE, METHOD=delay:DURATION, METHOD=lost[:CODE] or METHOD=break:N[:CODE], "
    "optionally followed by "
    "xN (the next N calls) or @N (only the N-th call from now), e.g. "
    "ListLogEntries=UNAVAILABLEx2, UpdateService=delay:3s@2, UpdateService=lost@1"
)


def parse_duration(text: str) -> float:
    """``2s``, ``500ms``, ``1.5``, ``1m`` -> seconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ConfigError(f"{text!r} is not a duration (use 2s, 500ms, 1m)")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


def _status(spec: str, name: str) -> grpc.StatusCode:
    code = getattr(grpc.StatusCode, name.strip().upper(), None)
    if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
        known = ", ".join(c.name for c in grpc.StatusCode if c is not grpc.StatusCode.OK)
        raise ConfigError(f"fault {spec!r}: {name!r} is not a gRPC status code ({known})")
    return code


def parse_spec(spec: str) -> FaultSpec:
    """Parse the CLI's fault spec; raise :class:`ConfigError` naming the mistake."""
    method, sep, text = spec.partition("=")
    method, text = method.strip(), text.strip()
    if not sep or not method or not text:
        raise ConfigError(f"fault {spec!r} is invalid: {_GRAMMAR}")
    m = _WHEN.match(text)
    assert m is not None  # ".+?" matches any non-empty text
    action = m.group("action").strip()
    times = int(m.group("times")[1:]) if m.group("times") else None
    nth = int(m.group("nth")) if m.group("nth") else None
    if times is not None and times < 1:
        raise ConfigError(f"fault {spec!r}: the count after 'x' must be at least 1")
    if nth is not None and nth < 1:
        raise ConfigError(f"fault {spec!r}: the call number after '@' must be at least 1")
    kind, _, arg = action.partition(":")
    if kind.lower() == "delay":
        return FaultSpec(method, delay_s=parse_duration(arg), times=times, nth=nth)
    if kind.lower() == "lost":
        code = _status(spec, arg) if arg else grpc.StatusCode.UNAVAILABLE
        return FaultSpec(method, code=code, times=times, nth=nth, lost=True)
    if kind.lower() == "break":
        count, _, name = arg.partition(":")
        if not count.strip().isdigit():
            raise ConfigError(f"fault {spec!r}: break needs a count of responses, e.g. break:3")
        code = _status(spec, name) if name else grpc.StatusCode.UNAVAILABLE
        return FaultSpec(method, code=code, times=times, nth=nth, break_after=int(count))
    if arg:
        raise ConfigError(f"fault {spec!r} is invalid: {_GRAMMAR}")
    return FaultSpec(method, code=_status(spec, kind), times=times, nth=nth)


@dataclass(frozen=True)
class _Decision:
    """What happens to one call: a delay, then maybe a failure before or after serving."""

    delay_s: float = 0.0
    fail: _Rule | None = None  # fails the call instead of serving it
    lost: _Rule | None = None  # serves the call (a BREAK: N responses), then answers its code

    @property
    def idle(self) -> bool:
        return self.delay_s <= 0 and self.fail is None and self.lost is None


class FaultInjector(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every RPC and applies configured failures, delays and lost answers.

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

    @staticmethod
    def _when(times: int | None, nth: int | None) -> tuple[int | None, int]:
        """``(remaining, skip)`` for "the next ``times`` calls" or "only the ``nth`` call"."""
        if times is not None and times < 1:
            raise ConfigError("times must be at least 1 (or None for always)")
        if nth is not None:
            if nth < 1:
                raise ConfigError("nth must be at least 1 (1: the next call)")
            if times is not None:
                raise ConfigError("give times (the next N calls) or nth (only the N-th), not both")
            return 1, nth - 1
        return times, 0

    def _add(self, rule: _Rule) -> None:
        self._check_method(rule.method)
        with self._lock:
            self._rules.append(rule)

    # ------------------------------------------------------------ configuration
    def fail(
        self,
        method: str,
        code: grpc.StatusCode,
        times: int | None = None,
        message: str = "",
        *,
        nth: int | None = None,
    ) -> None:
        """Make ``method`` fail with ``code`` instead of serving it.

        ``times`` calls from the next one (None: always), or only the ``nth``
        call from now (``nth=1``: the next one).
        """
        remaining, skip = self._when(times, nth)
        text = message or f"fault injected by the emulator: {code.name}"
        self._add(_Rule(method, FAIL, code, remaining, text, skip=skip))

    def delay(
        self, method: str, seconds: float, times: int | None = None, *, nth: int | None = None
    ) -> None:
        """Hold calls of ``method`` for ``seconds`` before serving them (every call,
        the next ``times`` ones, or only the ``nth`` from now)."""
        remaining, skip = self._when(times, nth)
        self._add(_Rule(method, DELAY, None, remaining, "", delay_s=seconds, skip=skip))

    def lose(
        self,
        method: str,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        times: int | None = None,
        *,
        nth: int | None = None,
    ) -> None:
        """Serve calls of ``method``, then answer ``code`` instead of their response.

        The write is done; the client does not know it and (for UNAVAILABLE or
        DEADLINE_EXCEEDED) retries it: what a dropped connection does.
        """
        remaining, skip = self._when(times, nth)
        text = f"fault injected by the emulator: {code.name} (the call was applied)"
        self._add(_Rule(method, LOST, code, remaining, text, skip=skip))

    def break_stream(
        self,
        method: str,
        after: int,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        times: int | None = None,
        *,
        nth: int | None = None,
    ) -> None:
        """Let a streaming call of ``method`` send ``after`` responses, then end it with
        ``code``: a stream broken mid-way (a unary call: the same as :meth:`lose`).

        A stream that ends by itself before that many responses ends as served.
        """
        if after < 0:
            raise ConfigError("after must be 0 or more (responses sent before the break)")
        remaining, skip = self._when(times, nth)
        text = f"fault injected by the emulator: {code.name} (the stream was broken)"
        self._add(_Rule(method, BREAK, code, remaining, text, skip=skip, after=after))

    def apply(self, spec: FaultSpec | str) -> None:
        """Apply a parsed (or textual) CLI spec."""
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        if parsed.break_after is not None and parsed.code is not None:
            self.break_stream(
                parsed.method, parsed.break_after, parsed.code, parsed.times, nth=parsed.nth
            )
        elif parsed.lost and parsed.code is not None:
            self.lose(parsed.method, parsed.code, parsed.times, nth=parsed.nth)
        elif parsed.code is not None:
            self.fail(parsed.method, parsed.code, parsed.times, nth=parsed.nth)
        else:
            self.delay(parsed.method, parsed.delay_s, parsed.times, nth=parsed.nth)

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
    def _decide(self, full_method: str) -> _Decision:
        """Count the call; pick its delay, failure or lost answer (consuming rules).

        Every matching rule counts the call towards its ``@N``; of the rules
        due, delays add up, and the first failure (else the first lost answer)
        is the one the call gets.
        """
        with self._lock:
            self._counts[full_method] += 1
            due: list[_Rule] = []
            for rule in self._rules:
                if not rule.applies(full_method):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                due.append(rule)
            delays = [r for r in due if r.kind == DELAY]
            fail = next((r for r in due if r.kind == FAIL), None)
            ends = (r for r in due if r.kind in (LOST, BREAK))
            lost = None if fail is not None else next(ends, None)
            for rule in [*delays, *(r for r in (fail, lost) if r is not None)]:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
            return _Decision(sum(r.delay_s for r in delays), fail, lost)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        decision = self._decide(method)
        if handler is None or decision.idle:
            return handler
        rule = decision.fail or decision.lost
        _log().info(
            "emulator_fault_injected",
            method=method,
            code=rule.code.name if rule is not None and rule.code is not None else None,
            delay_s=decision.delay_s,
            lost=decision.lost is not None,
            **({"after": rule.after} if rule is not None and rule.kind == BREAK else {}),
        )
        return _wrap(handler, decision)


def _wrap(handler: grpc.RpcMethodHandler, decision: _Decision) -> Any:
    """The same handler kind, with a delay before it, a failure instead of it, or a
    failure after it (a lost answer)."""

    async def before(context: grpc.aio.ServicerContext) -> None:
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        if decision.fail is not None and decision.fail.code is not None:
            await context.abort(decision.fail.code, decision.fail.message)

    async def after(context: grpc.aio.ServicerContext) -> None:
        if decision.lost is not None and decision.lost.code is not None:
            await context.abort(decision.lost.code, decision.lost.message)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(context)
            response = await inner_uu(request, context)
            await after(context)
            return response

        return grpc.unary_unary_rpc_method_handler(unary_unary, **codec)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await before(context)
            response = await inner_su(requests, context)
            await after(context)
            return response

        return grpc.stream_unary_rpc_method_handler(stream_unary, **codec)
    streaming = handler.unary_stream or handler.stream_stream
    broken = decision.lost if decision.lost is not None and decision.lost.kind == BREAK else None

    async def stream_out(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await before(context)
        result = streaming(request, context)
        if hasattr(result, "__aiter__"):
            # aclosing: a break ends the handler's generator now (its finally runs),
            # not whenever it is collected.
            async with contextlib.aclosing(result):
                sent = 0
                if broken is not None and broken.code is not None and broken.after == 0:
                    await context.abort(broken.code, broken.message)
                async for item in result:
                    yield item
                    sent += 1
                    if broken is not None and broken.code is not None and sent >= broken.after:
                        await context.abort(broken.code, broken.message)
        else:  # a coroutine handler that writes with context.write()
            await result
        if broken is None:  # a stream that ended before its break ends as served
            await after(context)

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_out, **codec)
    return grpc.stream_stream_rpc_method_handler(stream_out, **codec)
