"""Run probe rules and stream cumulative measurements: the API the gate uses.

:func:`run_rule` starts a rule's workers and yields
:class:`~deploy_guard.measurements.ProbeMeasurement` snapshots while they work:
immediately after every failed attempt (so a check can stop on the first 1011
when the policy allows none), otherwise at most every :data:`THROTTLE` seconds
or :data:`EVERY` attempts, and always a last one with ``complete=True``.

Cancellation is the normal way to stop early. Cancelling the task that
iterates, or closing the generator (``aclose()``, ``contextlib.aclosing``),
cancels every worker and waits until their sockets are closed. Because an
async generator left suspended is only finalised by the garbage collector, the
workers are also tied to the consuming task: if that task ends or is cancelled
while it is not inside the generator, the workers are cancelled all the same.

WebSocket rules run ``concurrency`` workers, one per user ``user-<k>``; worker
``k`` runs sessions ``k, k+C, k+2C, ...`` in sequence, so a user never has two
sessions open at once and isolation breaches between users can be seen. Given a
:class:`~deploy_guard.probes.shard.Shard`, only that shard's workers run. A rule's
``ramp`` and ``rate`` (:mod:`deploy_guard.policy.pacing`) only delay when a worker
starts and when each of its sessions (or requests) starts
(:class:`~deploy_guard.probes.pacer.Pacer`); which sessions a user runs stays the same.
A shard keeps the ramp's schedule of its own users and takes its share of the rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from deploy_guard import traces
from deploy_guard.errors import ConfigError
from deploy_guard.log import get_logger, redact_text
from deploy_guard.measurements import Attempt, ProbeMeasurement
from deploy_guard.probes.aggregate import Aggregator
from deploy_guard.probes.pacer import Pacer
from deploy_guard.probes.shard import WHOLE, Shard
from deploy_guard.probes.template import SessionIds

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule
    from deploy_guard.probes.target import Target

#: Kinds of rule this package runs.
PROBE_KINDS = ("http", "websocket")
#: Seconds between snapshots while attempts succeed.
THROTTLE = 0.25
#: Attempts between snapshots while attempts succeed (whichever comes first).
EVERY = 100

_log = get_logger("deploy_guard.probes")
_TICK = object()
_Put = Callable[[Attempt], None]


def is_probe(rule: Rule) -> bool:
    """True for the rules :func:`run_rule` can run (``http`` and ``websocket``)."""
    return rule.kind in PROBE_KINDS


async def _guarded(attempt: Awaitable[Attempt], rule: str, logged: set[str]) -> Attempt:
    """An attempt whose unexpected exception becomes an ``error`` attempt, not a crash.

    The first such error of each kind per rule is also logged (a bug hit by
    every one of 1,000 sessions is one log line, and the samples show it).
    """
    try:
        return await attempt
    except Exception as exc:  # errors are data; cancellation still propagates
        detail = redact_text(f"probe error: {type(exc).__name__}: {exc}")
        if type(exc).__name__ not in logged:
            logged.add(type(exc).__name__)
            _log.error("probe_attempt_error", rule=rule, error=detail)
        return Attempt(ok=False, cause="error", detail=detail)


def _websocket_workers(
    rule: Rule, target: Target, put: _Put, pacer: Pacer | None, shard: Shard = WHOLE
) -> list[Awaitable[None]]:
    from deploy_guard.probes.websocket import plan_sessions, run_session

    spec = rule.websocket
    assert spec is not None
    users = max(1, min(spec.concurrency, spec.sessions))
    plan = plan_sessions(spec, target, rule=rule.name)
    logged: set[str] = set()

    async def user_worker(k: int) -> None:
        user = f"user-{k}"
        if pacer is not None:
            await pacer.user_ready(k)
        for n in range(k, spec.sessions + 1, users):
            if pacer is not None:
                await pacer.admit()
            ids = SessionIds(user=user, session=os.urandom(8).hex(), n=n)
            put(await _guarded(run_session(plan, ids), rule.name, logged))

    return [user_worker(k) for k in shard.workers(users)]


def _http_workers(
    rule: Rule,
    target: Target,
    put: _Put,
    stack: contextlib.AsyncExitStack,
    pacer: Pacer | None,
    shard: Shard = WHOLE,
) -> list[Awaitable[None]]:
    from deploy_guard.probes.http import make_client, run_request

    spec = rule.http
    assert spec is not None
    workers = max(1, min(spec.concurrency, spec.requests))
    mine, requests = shard.workers(workers), shard.attempts(spec.requests, workers)
    client = make_client(target, max(1, len(mine)))
    stack.push_async_callback(client.aclose)
    tickets = itertools.count()
    logged: set[str] = set()

    async def worker(w: int) -> None:
        if pacer is not None:
            await pacer.user_ready(w)
        while next(tickets) < requests:
            if pacer is not None:
                await pacer.admit()
            attempt = await _guarded(run_request(spec, target, client), rule.name, logged)
            _trace_request(rule.name, attempt)
            put(attempt)

    return [worker(w) for w in mine]


def _trace_request(rule: str, attempt: Attempt) -> None:
    """An HTTP request for the report's picture (:mod:`deploy_guard.traces`), when traced."""
    if traces.current() is None:
        return
    total = attempt.durations.get("total", 0.0)
    trace = traces.SessionTrace(
        kind="http",
        ok=attempt.ok,
        end=total,
        status=attempt.status,
        cause=attempt.cause,
        detail=attempt.detail,
    )
    traces.session(rule, trace, age=total)


def planned_attempts(rule: Rule, shard: Shard = WHOLE) -> int:
    """Sessions or requests the rule asks for (``shard``'s share of them); ConfigError for a
    rule that is not a probe."""
    if rule.websocket is not None:
        total, concurrency = int(rule.websocket.sessions), int(rule.websocket.concurrency)
    elif rule.http is not None:
        total, concurrency = int(rule.http.requests), int(rule.http.concurrency)
    else:
        raise ConfigError(
            f"rule {rule.name!r} is a {rule.kind} rule, not a probe (http, websocket)"
        )
    if shard == WHOLE:
        return total
    return shard.attempts(total, max(1, min(concurrency, total)))


def pacer_for(rule: Rule, shard: Shard = WHOLE) -> Pacer | None:
    """The rule's pacer in ``shard``: its share of the rate is its share of the attempts."""
    block = rule.websocket if rule.websocket is not None else rule.http
    assert block is not None
    total = planned_attempts(rule)
    share = planned_attempts(rule, shard) / total if total else 0.0
    return Pacer.for_spec(block, share=share)


async def run_rule(
    rule: Rule,
    target: Target,
    *,
    throttle: float = THROTTLE,
    every: int = EVERY,
    shard: Shard = WHOLE,
) -> AsyncGenerator[ProbeMeasurement, None]:
    """Run one ``http`` or ``websocket`` rule (``shard``'s share of it), yielding snapshots.

    Raises :class:`~deploy_guard.errors.ConfigError` (before starting anything)
    for a rule of another kind; every probe failure is data in the snapshots.
    """
    planned = planned_attempts(rule, shard)
    agg = Aggregator(rule.name, rule.kind, planned)
    queue: asyncio.Queue[Attempt | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    tasks: list[asyncio.Task[None]] = []

    crashed: list[str] = []

    async def finish(body: Awaitable[None]) -> None:
        try:
            await body
        except Exception as exc:  # a worker that dies: said in the last snapshot, not lost
            crashed.append(redact_text(f"{type(exc).__name__}: {exc}"))
            _log.error("probe_worker_crashed", rule=rule.name, error=crashed[-1])
        finally:
            queue.put_nowait(None)  # "this worker is done", even when cancelled

    def cancel_all(_: object = None) -> None:
        for t in tasks:
            t.cancel()

    consumer = asyncio.current_task()
    async with contextlib.AsyncExitStack() as stack:
        pacer = pacer_for(rule, shard)  # the ramp's clock starts now
        if rule.websocket is not None:
            bodies = _websocket_workers(rule, target, queue.put_nowait, pacer, shard)
        else:
            bodies = _http_workers(rule, target, queue.put_nowait, stack, pacer, shard)
        _log.info(
            "probe_started",
            rule=rule.name,
            kind=rule.kind,
            planned=planned,
            workers=len(bodies),
            **({"pacing": pacer.pacing.words()} if pacer is not None else {}),
        )
        tasks.extend(loop.create_task(finish(b)) for b in bodies)
        if consumer is not None:
            consumer.add_done_callback(cancel_all)
        try:
            running = len(tasks)
            reported_done, reported_at = 0, start
            while running:
                pending = agg.done > reported_done
                wait = max(0.0, reported_at + throttle - time.monotonic()) if pending else None
                item: Attempt | object | None = _TICK  # on timeout: report what arrived
                if not queue.empty():  # what already arrived needs no timer and no wait
                    item = queue.get_nowait()
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):  # cheaper than wait_for: no task
                            item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, Attempt):
                    agg.add(item, time.monotonic() - start)
                now = time.monotonic()
                if agg.done > reported_done and (
                    (isinstance(item, Attempt) and not item.ok)
                    or agg.done - reported_done >= every
                    or now - reported_at >= throttle
                ):
                    reported_done, reported_at = agg.done, now
                    yield agg.snapshot()
            error = None
            if crashed:
                error = f"{len(crashed)} of {len(tasks)} probe workers crashed: {crashed[0]}"
            final = agg.snapshot(complete=True, error=error)
            _log.info(
                "probe_finished",
                rule=rule.name,
                done=final.done,
                succeeded=final.succeeded,
                failures=final.failures_by_cause,
                seconds=round(time.monotonic() - start, 3),
            )
            yield final
        finally:
            if consumer is not None:
                consumer.remove_done_callback(cancel_all)
            cancel_all()
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_rules(
    rules: Sequence[Rule], target: Target, *, throttle: float = THROTTLE, shard: Shard = WHOLE
) -> AsyncGenerator[ProbeMeasurement, None]:
    """Run several probe rules concurrently (``shard``'s share of each), merging their streams.

    Each rule's snapshots arrive in order; snapshots of different rules
    interleave as they happen. Closing or cancelling the consumer stops them all.
    """
    for rule in rules:
        planned_attempts(rule)  # refuse a non-probe rule before anything starts
    queue: asyncio.Queue[ProbeMeasurement | None] = asyncio.Queue()

    async def pump(rule: Rule) -> None:
        try:
            stream_of = run_rule(rule, target, throttle=throttle, shard=shard)
            async with contextlib.aclosing(stream_of) as stream:
                async for m in stream:
                    queue.put_nowait(m)
        except Exception as exc:  # this rule's error, in words; the other rules go on
            error = redact_text(f"the probe crashed: {type(exc).__name__}: {exc}")
            _log.error("probe_crashed", rule=rule.name, error=error)
            queue.put_nowait(
                ProbeMeasurement(
                    rule=rule.name,
                    kind=rule.kind,
                    planned=planned_attempts(rule, shard),
                    done=0,
                    succeeded=0,
                    complete=True,
                    error=error,
                )
            )
        finally:
            queue.put_nowait(None)

    loop = asyncio.get_running_loop()
    pumps = [loop.create_task(pump(r)) for r in rules]

    def cancel_all(_: object = None) -> None:
        for t in pumps:
            t.cancel()

    consumer = asyncio.current_task()
    if consumer is not None:
        consumer.add_done_callback(cancel_all)
    try:
        running = len(pumps)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            else:
                yield item
    finally:
        if consumer is not None:
            consumer.remove_done_callback(cancel_all)
        cancel_all()
        await asyncio.gather(*pumps, return_exceptions=True)
