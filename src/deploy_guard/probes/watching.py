"""The watch's probes: a canary user that is always connected, and probe rounds.

A check probes a candidate for minutes; ``deploy-guard watch`` judges whatever
serves a service for hours, and the failures it is for start late (every new
chat session closing with 1011 once a cache fills). Two sources feed its judge:

- :class:`CanaryUser`: one WebSocket user, always connected. Each session runs
  the rule's scenario, holds the connection for the rule's ``hold`` (the watch
  plan sets it to ``renew``), closes and opens the next one at once, so a server
  that turns bad is met by the next renewal, and the failed session reaches the
  judge (``changed``) the moment it ends. Its :meth:`~CanaryUser.measurement` is
  the sessions that ended within a sliding window, judged as any probe is.
- :class:`ProbeRounds`: the policy's probe rules (with the watch's smaller
  counts) every ``probe_interval``, each round a :func:`~deploy_guard.probes.runner.run_rules`
  run; a round's failure is visible before the round ends.

Both only drive the probe engine (:func:`~deploy_guard.probes.websocket.run_session`,
:func:`~deploy_guard.probes.runner.run_rules`): what a session is, how it fails
and how its socket is closed stays in one place. What they add is what running
for hours needs: memory bounded whatever the run length (a capped window,
capped samples, one snapshot per rule), every session bounded in time, a
back-off so a dead server is not hammered, and retargeting without leaking a
socket. Stopping (or cancelling) either waits until their sockets are closed.

A session that could not connect at all (``connect_error``: DNS, a refused or
reset TCP connection, TLS) never reached the service: Cloud Run's front end
answers for every revision, so it is the watcher's network or the front end
that is down, not the revision watched. A check may fail on it (it promotes
nothing it could not reach); a watch would roll back a healthy revision. Both
sources leave such sessions out of what they measure and say so as the
measurement's ``error`` (the watch is then degraded), unless sessions that
did reach the service failed: those are judged as ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from deploy_guard.errors import ConfigError
from deploy_guard.log import get_logger
from deploy_guard.measurements import Attempt, ProbeMeasurement
from deploy_guard.policy.model import ExpectStep, SendStep, WebSocketSpec
from deploy_guard.probes.aggregate import Aggregator
from deploy_guard.probes.runner import _guarded, planned_attempts, run_rules
from deploy_guard.probes.template import SessionIds
from deploy_guard.probes.websocket import SessionPlan, plan_sessions, run_session
from deploy_guard.probes.ws_bounds import CLOSE_TIMEOUT

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule
    from deploy_guard.probes.target import Target

#: Seconds before the session that follows a failed one; doubled per failure in a row.
BACKOFF_FIRST = 1.0
#: The longest back-off: a dead server still gets a session every 30 s.
BACKOFF_MAX = 30.0
#: Shortest time from one session's start to the next one's: a rule without a
#: ``hold`` would otherwise renew as fast as a healthy server answers.
MIN_SPACING = 0.1
#: Seconds granted past a session's own timeouts before the canary ends it.
SESSION_SLACK = 5.0
#: The canary's user id (``{user}`` in the scenario, and the isolation check's).
CANARY_USER = "canary"
#: The cause of a session that never reached the service (see the module docstring).
UNREACHED = "connect_error"

_log = get_logger("deploy_guard.probes.watching")


def backoff_delay(failures: int, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> float:
    """Seconds to wait before the next session after ``failures`` failed sessions in a row."""
    if failures <= 0:
        return 0.0
    return min(cap, first * 2.0 ** min(failures - 1, 60))


def without_unreached(m: ProbeMeasurement) -> ProbeMeasurement:
    """``m`` without the attempts that never reached the service (see the module docstring).

    They are its ``error`` when no attempt that reached the service failed;
    otherwise those failures are judged on their own.
    """
    unreached = m.failures_by_cause.get(UNREACHED, 0)
    if not unreached:
        return m
    causes = {c: n for c, n in m.failures_by_cause.items() if c != UNREACHED}
    why = next((a.detail for a in m.samples if a.cause == UNREACHED), "") or "could not connect"
    error = None
    if not any(causes.values()):
        error = f"{unreached} of {m.done} attempts could not reach the service: {why}"
    return replace(
        m,
        planned=max(0, m.planned - unreached),
        done=m.done - unreached,
        failures_by_cause=causes,
        samples=tuple(a for a in m.samples if a.cause != UNREACHED),
        error=m.error or error,
    )


def session_bound(spec: WebSocketSpec) -> float:
    """The longest a session can last by the engine's own timeouts, plus slack.

    The handshake and every send are bounded by ``connect_timeout``, an expect
    step by its ``timeout`` re-armed once per expected event, the hold by itself
    and the close (twice: on a failure, then on cancellation) by
    :data:`~deploy_guard.probes.ws_bounds.CLOSE_TIMEOUT`. The canary enforces
    this bound as well, so a bug in any one of those can never stall it.
    """
    sends = sum(isinstance(step, SendStep) for step in spec.scenario)
    expects = sum(
        step.timeout * len(step.events) for step in spec.scenario if isinstance(step, ExpectStep)
    )
    return (
        spec.connect_timeout * (1 + sends)
        + expects
        + float(spec.hold)
        + 2 * CLOSE_TIMEOUT
        + SESSION_SLACK
    )


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever comes first."""
    if seconds <= 0 or event.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def _cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished (its sockets closed)."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait({task})


class CanaryUser:
    """One WebSocket user always connected to ``target``, judged over a sliding window.

    Sessions run one after another, never two at once. A failed session is
    recorded, and told to ``changed``, the moment it ends; the next one starts
    after :func:`backoff_delay` (1 s, doubling to 30 s while failures go on,
    back to none after a success). ``changed`` hears of every session that
    ends (``attempt.ok`` says how it went); it runs on the event loop and must
    not block. ``clock`` dates the sessions' ends (the window and
    :attr:`first_failure_at`); the waits use the event loop's own clock.
    """

    def __init__(
        self,
        rule: Rule,
        target: Target,
        *,
        window: float,
        changed: Callable[[Attempt], None] | None = None,
        clock: Callable[[], float] = time.time,
        max_kept: int = 2000,
        backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
    ) -> None:
        if rule.websocket is None:
            raise ConfigError(f"rule {rule.name!r} is a {rule.kind} rule: a canary needs websocket")
        if window <= 0 or max_kept < 1:
            raise ValueError("a canary needs a window > 0 and max_kept >= 1")
        self.rule = rule
        self.window = float(window)
        self._spec: WebSocketSpec = rule.websocket
        # header errors: now; the sessions are traced under the rule's name
        self._plan: SessionPlan = plan_sessions(self._spec, target, rule=rule.name)
        self._bound = session_bound(self._spec)
        self._changed = changed
        self._clock = clock
        self._backoff = backoff
        self._ended: deque[tuple[float, Attempt]] = deque(maxlen=max_kept)
        self._since = clock()
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._session: asyncio.Task[Attempt] | None = None
        self._wake = asyncio.Event()
        self._logged: set[str] = set()
        #: Clock time the first failed session since the last retarget()/reset() ended.
        self.first_failure_at: float | None = None
        #: Sessions ended since start (a session cut short by retarget/reset not counted).
        self.sessions = 0
        #: Failed sessions in a row (0 after a success); the back-off follows it.
        self.failures_in_row = 0
        #: Why the last session could not reach the service (None: it did).
        self.unreached: str | None = None
        #: Sessions in a row that could not reach it (the back-off follows them too).
        self.unreached_in_row = 0

    async def start(self) -> None:
        """Start the sessions in the background; returns at once (a second call does nothing)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
            _log.info("canary_started", rule=self.rule.name, window=self.window)

    async def stop(self) -> None:
        """Stop, and return once the open session's socket is closed (idempotent)."""
        await _cancel_and_wait(self._task)

    def retarget(self, target: Target) -> None:
        """Send the sessions to ``target`` from now on; the window starts empty.

        The session in flight is cut (its socket closed, its outcome dropped:
        it spoke to the old target) and the next one starts at once.
        """
        self._plan = plan_sessions(self._spec, target, rule=self.rule.name)
        self._restart()

    def use(self, target: Target) -> None:
        """The same revision with fresh credentials (an ID token lasts an hour): the next
        session uses ``target``; the window and the session in flight are kept."""
        self._plan = plan_sessions(self._spec, target, rule=self.rule.name)

    def reset(self) -> None:
        """Forget the window and :attr:`first_failure_at` (after a rollback).

        The session in flight is cut and its outcome dropped too: it was opened
        on what was just rolled back, and an open WebSocket stays on its instance.
        """
        self._restart()

    def _restart(self) -> None:
        self._generation += 1
        self._ended.clear()
        self._since = self._clock()
        self.first_failure_at = None
        self.failures_in_row = 0
        self.unreached, self.unreached_in_row = None, 0
        if self._session is not None:
            self._session.cancel()
        self._wake.set()

    def measurement(self) -> ProbeMeasurement:
        """The sessions that ended within the last ``window`` seconds, as the rule's measurement.

        ``planned`` is what ended, and the snapshot is complete: the judge
        decides on what the window holds. None yet: ``done=0, complete=False``
        (pending). ``first_failure_after`` counts from the start (or the last
        retarget/reset). While the sessions cannot reach the service, and none
        that did failed, ``error`` says so (never a failed session).
        """
        self._prune(self._clock())
        agg = Aggregator(self.rule.name, "websocket", len(self._ended))
        for ended, attempt in self._ended:
            agg.add(attempt, max(0.0, ended - self._since))
        error = None
        if self.unreached is not None and agg.done == agg.succeeded:
            error = f"the canary could not reach the service: {self.unreached}"
        return agg.snapshot(complete=agg.done > 0, error=error)

    def _prune(self, now: float) -> None:
        oldest = now - self.window
        while self._ended and self._ended[0][0] < oldest:
            self._ended.popleft()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        try:
            while True:
                self._wake.clear()
                generation = self._generation
                n += 1
                ids = SessionIds(user=CANARY_USER, session=uuid.uuid4().hex[:16], n=n)
                started = loop.time()
                session = loop.create_task(self._bounded(self._plan, ids))
                self._session = session
                try:
                    await asyncio.wait({session})
                finally:
                    self._session = None
                    await _cancel_and_wait(session)  # when stop() cancelled us mid-session
                if session.cancelled() or generation != self._generation:
                    continue  # retargeted or reset mid-session: start afresh at once
                self._record(session.result())
                missed = self.failures_in_row + self.unreached_in_row
                if missed:
                    pause = backoff_delay(missed, *self._backoff)
                else:
                    pause = started + MIN_SPACING - loop.time()
                await _wait_event(self._wake, pause)
        finally:
            _log.info("canary_stopped", rule=self.rule.name, sessions=self.sessions)

    async def _bounded(self, plan: SessionPlan, ids: SessionIds) -> Attempt:
        """One session through the engine, ended by :func:`session_bound` at the latest."""

        async def session() -> Attempt:
            try:
                async with asyncio.timeout(self._bound):
                    return await run_session(plan, ids)
            except TimeoutError:
                return Attempt(
                    ok=False,
                    cause="timeout",
                    detail=f"session still open after {self._bound:g} s, past its own "
                    "timeouts and hold",
                    user=ids.user,
                    session=ids.session,
                )

        return await _guarded(session(), self.rule.name, self._logged)

    def _record(self, attempt: Attempt) -> None:
        now = self._clock()
        self.sessions += 1
        self._prune(now)
        if not attempt.ok and attempt.cause == UNREACHED:
            self._unreached(attempt)
            return
        self.unreached, self.unreached_in_row = None, 0
        self._ended.append((now, attempt))
        if attempt.ok:
            if self.failures_in_row:
                _log.info("canary_recovered", rule=self.rule.name, after=self.failures_in_row)
            self.failures_in_row = 0
        else:
            self.failures_in_row += 1
            if self.first_failure_at is None:
                self.first_failure_at = now
            if self.failures_in_row == 1:
                _log.warning(
                    "canary_session_failed",
                    rule=self.rule.name,
                    cause=attempt.cause,
                    close_code=attempt.close_code,
                    detail=attempt.detail,
                )
        self._tell(attempt)

    def _unreached(self, attempt: Attempt) -> None:
        """Not the service's doing: out of the window, the back-off all the same."""
        if self.unreached is None:
            _log.warning("canary_unreached", rule=self.rule.name, detail=attempt.detail)
        self.unreached = attempt.detail or "could not connect"
        self.unreached_in_row += 1
        self._tell(attempt)

    def _tell(self, attempt: Attempt) -> None:
        if self._changed is not None:
            try:
                self._changed(attempt)
            except Exception as exc:  # the listener's bug must not stop the canary
                _log.error("canary_listener_failed", rule=self.rule.name, error=repr(exc))


class ProbeRounds:
    """The probe rules run in rounds, one round every ``interval`` seconds.

    Round 1 starts at once; the next starts ``interval`` seconds after the
    previous one started, or when it ends if it ran longer (rounds never
    overlap). ``changed`` hears of each snapshot that has a new failure, at
    once, and of each rule's final snapshot of a round; it runs on the event
    loop and must not block.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        target: Target,
        *,
        interval: float,
        changed: Callable[[ProbeMeasurement], None] | None = None,
    ) -> None:
        for rule in rules:
            planned_attempts(rule)  # a rule that is not a probe: ConfigError now
        if interval <= 0:
            raise ValueError("probe rounds need an interval > 0")
        self.rules = tuple(rules)
        self.interval = float(interval)
        self._target = target
        self._changed = changed
        self._complete: dict[str, ProbeMeasurement] = {}
        self._running: dict[str, ProbeMeasurement] = {}
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._round: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: Rounds completed (a round cut by retarget() is not one).
        self.rounds = 0

    async def start(self) -> None:
        """Start round 1 now and the others in the background; returns at once."""
        if self.rules and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop, and return once every probe socket is closed (idempotent)."""
        await _cancel_and_wait(self._task)

    def retarget(self, target: Target) -> None:
        """Probe ``target`` from now on: the running round is cut, a new one starts at once.

        What was measured on the old target is forgotten.
        """
        self._target = target
        self._generation += 1
        self._complete.clear()
        self._running.clear()
        if self._round is not None:
            self._round.cancel()
        self._wake.set()

    def use(self, target: Target) -> None:
        """The same revision with fresh credentials: the next round uses ``target``."""
        self._target = target

    def measurements(self) -> dict[str, ProbeMeasurement]:
        """Per rule, the last complete round's final snapshot, or the running round's
        latest one when it already has failures. A rule not measured yet is absent.
        Attempts that could not reach the service are left out (:func:`without_unreached`)."""
        out: dict[str, ProbeMeasurement] = {}
        for rule in self.rules:
            running = self._running.get(rule.name)
            if running is not None and running.failed > running.failures_by_cause.get(UNREACHED, 0):
                out[rule.name] = without_unreached(running)
            elif rule.name in self._complete:
                out[rule.name] = without_unreached(self._complete[rule.name])
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            generation = self._generation
            started = loop.time()
            one = loop.create_task(self._one_round(self._target, generation))
            self._round = one
            try:
                await asyncio.wait({one})
            finally:
                self._round = None
                await _cancel_and_wait(one)  # when stop() cancelled us mid-round
            if one.cancelled() or generation != self._generation:
                continue  # retargeted: the next round starts at once
            if one.exception() is None:
                self.rounds += 1
            else:  # run_rules turns a rule's crash into data: this is a bug of ours
                _log.error("probe_round_crashed", error=repr(one.exception()))
            await _wait_event(self._wake, started + self.interval - loop.time())

    async def _one_round(self, target: Target, generation: int) -> None:
        failed: dict[str, int] = {}
        try:
            async with contextlib.aclosing(run_rules(self.rules, target)) as stream:
                async for m in stream:
                    if generation != self._generation:
                        return
                    new_failure = m.failed > failed.get(m.rule, 0)
                    failed[m.rule] = m.failed
                    if m.complete:
                        self._complete[m.rule] = m
                        self._running.pop(m.rule, None)
                    else:
                        self._running[m.rule] = m
                    if (new_failure or m.complete) and self._changed is not None:
                        try:
                            self._changed(m)
                        except Exception as exc:  # the listener's bug must not stop the round
                            _log.error("probe_round_listener_failed", rule=m.rule, error=repr(exc))
        finally:
            if generation == self._generation:
                self._running.clear()  # a round cut short leaves no half-round behind


__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "UNREACHED",
    "CanaryUser",
    "ProbeRounds",
    "backoff_delay",
    "session_bound",
    "without_unreached",
]
