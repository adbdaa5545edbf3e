"""Ramp and rate: how fast a probe rule opens its sessions (or sends its requests).

A probe that opens 10,000 sessions at once tests the backend's handshake storm, not
its steady state; load tools therefore pace the arrivals. The two settings follow
the meaning most load tools give these words:

- ``rate: 200/s`` (also ``/m`` and ``/h``): at most this many sessions *start* per
  second, evenly spaced ``1/rate`` apart, never a burst to catch up after a pause:
  k6's arrival-rate executors (``rate`` iterations per ``timeUnit``, "iteration
  starts are spaced fractionally"), Artillery's ``arrivalRate`` (new virtual users
  per second), Gatling's ``constantUsersPerSec``. Where k6 *drops* an iteration
  when no VU is free, deploy-guard waits for a free user instead: ``concurrency``
  stays the cap on sessions open at once, and every planned session runs, because
  the judge counts them all.
- ``ramp: 2m``: the number of concurrent users grows linearly from 1 to
  ``concurrency`` over that time: k6's ``ramping-vus`` with one stage (``startVUs``
  1, ``target`` = concurrency), Locust's ``--spawn-rate`` of ``(concurrency - 1) /
  ramp`` users a second, Gatling's ``rampConcurrentUsers``. User ``k`` (of ``C``)
  starts at ``ramp * (k - 1) / (C - 1)`` and then runs its own sessions ``k, k+C,
  k+2C, ...`` one after the other, as without a ramp: each user still has one
  session open at a time, so isolation keeps its meaning.

Both together: users join along the ramp, and every start, of any user, waits for
its turn at the rate. The functions here are pure: the policy checks and explains
with them, the runner (:mod:`deploy_guard.probes.pacer`) schedules with them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator, WithJsonSchema

from deploy_guard.policy.units import (
    MAX_DURATION,
    format_duration,
    format_measured,
    shown,
    written_unit,
)

RATE_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*/\s*(s|m|h)$"
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(s|m|h)$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: The most session starts a second a rule may ask for. One process opens a few
#: thousand a second at best; above this, leave ``rate`` out (concurrency alone paces).
MAX_RATE = 10_000.0
#: The fewest: one start a day (:data:`~deploy_guard.policy.units.MAX_DURATION` apart).
MIN_RATE = 1.0 / MAX_DURATION


def parse_rate(value: Any, *, strict: bool = True) -> float:
    """``"200/s"``, ``"30/m"``, ``"10/h"`` -> starts per second (float).

    With ``strict=False`` (models built from Python) a bare number is per second;
    in files it is refused: is ``rate: 200`` per second or per minute?
    Raises :class:`ValueError` with a message that shows the accepted forms.
    """
    hint = f"{shown(value)} is not a rate (use 200/s or 30/m: starts per second or per minute)"
    if isinstance(value, bool):
        raise ValueError(hint)
    if isinstance(value, int | float):
        if strict:
            raise ValueError(hint)
        per_second = float(value)
    elif isinstance(value, str) and (m := _RATE.match(value.strip())):
        per_second = float(m.group(1)) / _PER[m.group(2)]
    else:
        raise ValueError(hint)
    if not math.isfinite(per_second):
        raise ValueError(hint)
    if per_second <= 0:
        raise ValueError(f"{shown(value)} would never start a session: give a rate above 0")
    if per_second > MAX_RATE:
        raise ValueError(
            f"{shown(value)} is more than {MAX_RATE:,.0f}/s, more session starts a second "
            "than one process can make: leave rate out to start them as fast as concurrency "
            "allows"
        )
    if per_second < MIN_RATE:
        raise ValueError(
            f"{shown(value)} is less than one start a day: starts that far apart cannot be meant"
        )
    return per_second


def format_rate(per_second: float) -> str:
    """Starts per second -> a written form: 200 -> ``200/s``, 0.5 -> ``30/m``."""
    for unit in ("s", "m", "h"):
        count = per_second * _PER[unit]
        if count >= 1 and abs(count - round(count, 3)) < 1e-9:
            return f"{round(count, 3):g}/{unit}"
    return f"{per_second:.3g}/s"


_rate = written_unit(parse_rate, "rate")


#: Starts per second; written ``200/s``, ``30/m`` or ``10/h`` in files.
Rate = Annotated[
    float,
    BeforeValidator(_rate),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": RATE_PATTERN,
            "description": "sessions (or requests) started per second, minute or hour: 200/s, 30/m",
        }
    ),
]


# --------------------------------------------------------------------------- schedule


class _Paced(Protocol):
    """What an ``http`` or ``websocket`` block says about pacing (duck-typed: no import cycle)."""

    @property
    def concurrency(self) -> int: ...
    @property
    def rate(self) -> float | None: ...
    @property
    def ramp(self) -> float | None: ...


@dataclass(frozen=True)
class Pacing:
    """One rule run's pacing: ``count`` attempts, ``concurrency`` users, ``rate``, ``ramp``."""

    count: int
    concurrency: int
    rate: float | None = None
    ramp: float | None = None

    @classmethod
    def of(cls, spec: _Paced) -> Pacing:
        """The pacing of an ``http`` block (``requests``) or a ``websocket`` one (``sessions``)."""
        count = getattr(spec, "sessions", None) or getattr(spec, "requests", 1)
        return cls(int(count or 1), spec.concurrency, spec.rate, spec.ramp)

    @property
    def paced(self) -> bool:
        """True when anything holds starts back (a ramp with one user does not)."""
        return self.rate is not None or self.ramping

    @property
    def ramping(self) -> bool:
        return bool(self.ramp) and self.concurrency > 1

    @property
    def users(self) -> int:
        """Users (workers) that run: never more than attempts."""
        return max(1, min(self.concurrency, self.count))

    def user_start(self, k: int) -> float:
        """Seconds after the run starts when user ``k`` (1-based) may open its first session."""
        if not self.ramping or k <= 1:
            return 0.0
        assert self.ramp is not None
        if k >= self.concurrency:
            return self.ramp
        return self.ramp * (k - 1) / (self.concurrency - 1)

    def allowance(self, elapsed: float) -> int:
        """Users allowed to be active ``elapsed`` seconds into the run: those whose
        :meth:`user_start` has come (the ramp's line, from 1 to ``concurrency``)."""
        if not self.ramping:
            return self.concurrency
        assert self.ramp is not None
        if elapsed >= self.ramp:
            return self.concurrency
        k = 1 + max(0, math.floor((self.concurrency - 1) * elapsed / self.ramp))
        # the same answer as counting user_start(k) <= elapsed, rounding and all
        while k < self.concurrency and self.user_start(k + 1) <= elapsed:
            k += 1
        while k > 1 and self.user_start(k) > elapsed:
            k -= 1
        return k

    @property
    def last_user_start(self) -> float:
        """When the last user that runs may start: the ramp's end, or earlier for few attempts."""
        return self.user_start(self.users)

    @property
    def rate_span(self) -> float:
        """Seconds the rate alone spreads the starts over: ``(count - 1) / rate``."""
        return (self.count - 1) / self.rate if self.rate else 0.0

    @property
    def least(self) -> float:
        """The fewest seconds before the last attempt can start, however fast the server."""
        return max(self.last_user_start, self.rate_span)

    @property
    def most(self) -> float:
        """The most seconds the pacing adds to a run's bound (ramp, then every rate wait).

        A user that is not waiting for its ramp start or its turn at the rate is in
        a session; a turn at the rate comes at most ``1/rate`` after the previous
        start, so all the waiting of any one user adds up to at most the ramp plus
        ``(count - 1) / rate``.
        """
        return self.last_user_start + self.rate_span

    def words(self) -> str:
        """``starts at most 200/s; users ramp from 1 to 50 over 2m`` ("" when unpaced)."""
        parts = []
        if self.rate is not None:
            parts.append(f"starts at most {format_rate(self.rate)}")
        if self.ramping:
            assert self.ramp is not None
            parts.append(
                f"users ramp from 1 to {self.concurrency} over {format_duration(self.ramp)}"
            )
        return "; ".join(parts)

    def bound_words(self) -> str:
        """The pacing's share of a round's bound, for :func:`round_bound`'s sum."""
        parts = []
        if self.ramping and self.last_user_start:
            parts.append(f"ramp {format_duration(self.last_user_start)}")
        if self.rate is not None and self.count > 1:
            parts.append(f"{self.count - 1} starts at {format_rate(self.rate)}")
        return " + ".join(parts)


def pacing_problem(
    spec: _Paced, timeout: float, hold: float = 0.0, *, bound: str = "the policy timeout"
) -> tuple[str, str] | None:
    """Why a rule's pacing cannot work in a policy whose check lasts ``timeout``, or None.

    Returns (field, message). A ramp needs more than one user to raise; the last
    start (the ramp's end, or ``(count - 1) / rate``) plus the ``hold`` of that
    last session must fit in the policy's ``timeout``, or every check would be cut
    before its sessions all ran. ``bound`` names the limit in the message.
    """
    pacing = Pacing.of(spec)
    if spec.ramp is not None and spec.concurrency <= 1:
        return (
            "ramp",
            f"ramp raises the number of concurrent users from 1 to concurrency over "
            f"{format_duration(spec.ramp)}; with concurrency 1 there is nothing to raise: "
            "drop ramp, or raise concurrency",
        )
    held = f" (+ hold {format_duration(hold)})" if hold else ""
    if spec.ramp is not None and spec.ramp + hold > timeout:
        return (
            "ramp",
            f"ramp {format_duration(spec.ramp)}{held} does not fit in {bound} "
            f"{format_duration(timeout)}: the check would end before the last users "
            "started; shorten ramp or raise timeout",
        )
    if pacing.rate is not None and pacing.rate_span + hold > timeout:
        noun = "sessions" if hasattr(spec, "sessions") else "requests"
        return (
            "rate",
            f"at {format_rate(pacing.rate)} the last of {pacing.count} {noun} starts "
            f"{format_measured(pacing.rate_span)} in{held}, more than {bound} "
            f"{format_duration(timeout)}: the check would end first; raise rate, "
            f"lower {noun} or raise timeout",
        )
    return None


def rate_out_of_reach(spec: _Paced, hold: float = 0.0) -> str | None:
    """Why ``rate`` cannot be reached (every session lasts ``hold`` at least), or None.

    Sessions open at once never exceed ``concurrency``, and each lasts at least its
    hold, so starts cannot come faster than ``concurrency / hold`` a second: a rate
    above that only says what the rule cannot do.
    """
    pacing = Pacing.of(spec)
    if pacing.rate is None or not hold or pacing.count <= pacing.users:
        return None
    reachable = pacing.users / hold
    if pacing.rate <= reachable:
        return None
    needed = math.ceil(pacing.rate * hold)
    return (
        f"rate {format_rate(pacing.rate)} is out of reach: each session is held "
        f"{format_duration(hold)}, so {pacing.users} users start at most "
        f"{format_rate(reachable)} once they are all busy (at {format_rate(pacing.rate)} "
        f"about {needed:,} would be open at once); raise concurrency to {needed:,} or "
        "lower rate to what it can do"
    )


def explain_pacing(spec: _Paced, hold: float = 0.0, noun: str = "session") -> list[str]:
    """``policy explain``'s lines about a rule's ramp and rate ([] when it has neither)."""
    pacing = Pacing.of(spec)
    who = "users" if noun == "session" else "workers"
    lines: list[str] = []
    if pacing.rate is not None:
        gap = format_measured(1 / pacing.rate)
        lines.append(
            f"Rate: {noun}s start at most {format_rate(pacing.rate)}, one every {gap}, never "
            f"in a burst; a start waits for one of the {who} to be free (concurrency stays "
            f"the cap, and every {noun} runs)."
        )
    if pacing.ramping:
        assert pacing.ramp is not None
        every = format_measured(pacing.ramp / (pacing.concurrency - 1))
        lines.append(
            f"Ramp: {who} join one by one, from 1 to {pacing.concurrency} over "
            f"{format_duration(pacing.ramp)} (one more every {every}); each then runs its "
            f"{noun}s one after another."
        )
    elif pacing.ramp is not None:
        lines.append("Ramp: none in effect (concurrency 1).")
    if pacing.paced and pacing.count > 1:
        lines.append(
            f"The last {noun} starts {format_measured(pacing.least)} in at the earliest; "
            f"pacing adds up to {format_measured(pacing.most)} to the run."
        )
    if problem := rate_out_of_reach(spec, hold):
        lines.append(f"Note: {problem}.")
    return lines
