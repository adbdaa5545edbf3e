"""One WebSocket probe session: connect, run the scenario, hold, close.

This is the probe that catches the failure deploy-guard was born from: the
upgrade succeeds (101), the first events flow, and the server closes the
session with 1011 seven seconds later. A session therefore does not stop at
the last expected event; it keeps the connection for the rule's ``hold``
while reading (the library answers the server's pings and sends its own every
``ping_interval``), and a close during the hold fails the session *at the
moment it happens*.

Every outcome becomes an :class:`~deploy_guard.measurements.Attempt` (errors
are data here): nothing but cancellation escapes :func:`run_session`. Library
exceptions are mapped to causes in one place, :mod:`deploy_guard.probes.ws_outcomes`
(:func:`~deploy_guard.probes.ws_outcomes.closed` and
:func:`~deploy_guard.probes.ws_outcomes.bad_handshake`), called from the
``except`` clauses here; the bounds against a hostile server (message size,
close deadline, buffers) are :mod:`deploy_guard.probes.ws_bounds`.

Durations per session: ``handshake`` (connect to 101), ``first_event`` (101 to
the first message received), ``scenario`` (101 to the last expected event) and
``total`` (connect to closed, the hold included).

Per-session overhead is kept small for 10,000-session runs
(docs/probes-at-scale.md): sessions begin a few per turn of the event loop
(:class:`~deploy_guard.probes.admission.Admission`); one timer per worker, moved
by each step and each expected event without re-arming
(:func:`~deploy_guard.probes.deadline.task_deadline`); no task of its own and no
timer for a send or close the write buffer can take; websockets' ``connect`` and
a JSON send's text built once per rule; see
:mod:`~deploy_guard.probes.ws_outcomes` and :mod:`~deploy_guard.probes.ws_bounds`
for the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidMessage,
    InvalidStatus,
    WebSocketException,
)
from websockets.protocol import State
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from deploy_guard import traces
from deploy_guard.log import redact_text
from deploy_guard.measurements import Attempt
from deploy_guard.policy.model import ExpectStep, SendStep, WebSocketSpec
from deploy_guard.probes.admission import Admission
from deploy_guard.probes.deadline import Deadline, task_deadline
from deploy_guard.probes.target import auth_hint, connect_failure
from deploy_guard.probes.template import SessionIds, json_template
from deploy_guard.probes.ws_bounds import (
    CLOSE_TIMEOUT,
    MAX_MESSAGE,
    USER_AGENT,
    ProbeConnection,
    close_bounded,
    deflate_offers,
    drop_compressor,
    tls_context,
    write_fits,
)
from deploy_guard.probes.ws_outcomes import Fail, Session, bad_handshake, closed, fmt_s, not_clean
from deploy_guard.traces import SessionTrace

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.probes.auth import BearerToken
    from deploy_guard.probes.target import Target


#: Bytes a frame adds to its payload at most (header, length, mask; deflate's own few).
_FRAME_OVERHEAD = 64


async def _send(
    ws: ClientConnection,
    s: Session,
    step: SendStep,
    number: int,
    deadline: Deadline,
    template: str | None = None,
) -> None:
    """Send one message; a server that reads nothing fails it after ``connect_timeout``.

    ``template``: the step's JSON dumped once per rule (:func:`json_template`).
    """
    if template is not None and s.ids.json_safe():
        text = s.ids.render(template)
    elif step.json is not None:
        text = json.dumps(s.ids.render_json(step.json))
    else:
        text = s.ids.render(step.text or "")
    s.note("send", text)
    if write_fits(ws, 4 * len(text) + _FRAME_OVERHEAD):  # UTF-8: 4 bytes a character at most
        await ws.send(text)  # it cannot wait for the server to read: no timer needed
    else:
        try:
            with deadline.within(s.spec.connect_timeout):
                await ws.send(text)
        except TimeoutError:
            raise Fail(
                "timeout",
                f"send at step {number} not taken within {s.spec.connect_timeout:g} s: "
                "the server reads nothing",
            ) from None
    # No compressor kept while the session waits for answers (thousands of sessions do
    # at once while they open): a next message gets a fresh one.
    drop_compressor(ws)


async def _expect(
    ws: ClientConnection, s: Session, step: ExpectStep, number: int, deadline: Deadline
) -> None:
    """Read until every event of the step arrived in order (or fail, naming why).

    Order is judged when the evidence is complete: an expected event arriving
    after one that should follow it is ``wrong_order``; the step's last event
    arriving while an earlier one never did is ``missing_event`` (the agent
    finished without it, as when the server drops ``tool_completed``). Each
    expected event re-arms the step's timeout.
    """
    wanted = list(step.events)
    position = {name: i for i, name in enumerate(wanted)}
    seen = [False] * len(wanted)
    remaining = len(wanted)
    last, top = remaining - 1, -1  # top: the latest position seen so far
    field = s.spec.event_field
    unnamed = 0  # messages with no event name: not JSON, or no event_field in them
    timeout, recv, receive, move = step.timeout, ws.recv, s.receive, deadline.move
    try:
        with deadline.within(timeout):
            while remaining:
                name, _ = receive(await recv())
                if name is None:
                    unnamed += 1
                    i = None
                else:
                    i = position.get(name)
                if i is None or seen[i]:
                    if not step.allow_extra:
                        what = (
                            f"unexpected event {name!r}"
                            if name is not None
                            else f"a message with no {field!r} field (not a JSON object "
                            "naming its event)"
                        )
                        raise Fail(
                            "unexpected_event",
                            f"{what} at step {number} while waiting for {_next(wanted, seen)}",
                        )
                    continue
                seen[i] = True
                remaining -= 1
                if i < top:
                    later = wanted[seen.index(True, i + 1)]
                    raise Fail("wrong_order", f"got {name} after {later} at step {number}")
                top = i
                if i == last and remaining:
                    missing = ", ".join(w for w, ok in zip(wanted, seen, strict=True) if not ok)
                    raise Fail(
                        "missing_event",
                        f"{missing} never arrived: {name} came without it at step {number}",
                    )
                move(timeout)
    except TimeoutError:
        raise Fail(
            "timeout",
            f"timeout at step {number} waiting for {_next(wanted, seen)} "
            f"after {step.timeout:.1f} s"
            + (
                f"; {unnamed} message{'s' if unnamed != 1 else ''} named no event (not a JSON "
                f"object with a {field!r} field: is event_field right?)"
                if unnamed
                else ""
            ),
        ) from None
    except ConnectionClosed as exc:
        raise closed(exc, s, during=f"at step {number} before {_next(wanted, seen)}") from None


def _next(wanted: list[str], seen: list[bool]) -> str:
    """The first expected event not seen yet."""
    return next((w for w, ok in zip(wanted, seen, strict=True) if not ok), wanted[-1])


async def _hold(ws: ClientConnection, s: Session, deadline: Deadline) -> None:
    """Keep the connection for ``hold`` seconds, reading; a server close fails it now."""
    hold = float(s.spec.hold or 0.0)
    if hold <= 0:
        return
    drop_compressor(ws)  # nothing more is sent (a scenario may end without a send)
    try:
        with deadline.within(hold):
            while True:
                raw = await ws.recv()
                s.note("recv", raw)
                body = None
                if s.wants_body():
                    with contextlib.suppress(ValueError):
                        body = json.loads(raw)
                name = body.get(s.spec.event_field) if isinstance(body, dict) else None
                s.heard(name)
                if s.spec.isolation is not None and isinstance(body, dict):
                    s.check_isolation(name, body)
    except TimeoutError:
        return
    except ConnectionClosed as exc:
        raise closed(exc, s, during="during the hold", hold=hold) from None


@dataclass(frozen=True)
class SessionPlan:
    """What every session of a rule shares, worked out once per rule run.

    Building the URL, expanding ``${ENV}`` headers and asking the environment
    for a proxy cost more than a short session's own work when repeated
    1,000 times, so :func:`plan_sessions` does them once; only a query that
    uses ``{user}``/``{session}``/``{n}`` is rendered per session.
    """

    spec: WebSocketSpec
    url: str
    templated_query: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    ssl: ssl.SSLContext | None
    proxy: str | None
    token: BearerToken | None
    #: The rule's name, for the report's traces ("": not traced).
    rule: str = ""
    #: Paces how many of the rule's sessions begin per turn of the event loop.
    admission: Admission = field(default_factory=Admission, compare=False)
    #: websockets' ``connect`` for the rule's URL, built once (None: the URL is
    #: rendered per session); each session opens a shallow copy of it.
    connector: connect | None = field(default=None, compare=False)
    #: Per scenario step: a JSON send's text, dumped once (:func:`json_template`).
    sends: tuple[str | None, ...] = ()

    def url_for(self, ids: SessionIds) -> str:
        if not self.templated_query:
            return self.url
        extra = urlencode([(k, ids.render(v)) for k, v in self.templated_query])
        return f"{self.url}{'&' if '?' in self.url else '?'}{extra}"


def plan_sessions(spec: WebSocketSpec, target: Target, *, rule: str = "") -> SessionPlan:
    """Prepare a rule's sessions (URL, headers, TLS, proxy) once; ``rule`` names their traces."""
    static = {k: v for k, v in spec.query.items() if "{" not in v}
    templated = tuple((k, v) for k, v in spec.query.items() if "{" in v)
    url = target.url(spec.path, static, ws=True)
    secure = url.startswith("wss:")
    plan = SessionPlan(
        spec=spec,
        url=url,
        templated_query=templated,
        headers=target.headers_for(spec.headers),
        ssl=tls_context(target.verify_tls) if secure else None,
        proxy=get_proxy(parse_uri(url)),  # the environment's proxy settings, read once
        token=target.token,
        rule=rule,
        sends=tuple(
            json_template(step.json) if isinstance(step, SendStep) and step.json else None
            for step in spec.scenario
        ),
    )
    if templated:
        return plan
    try:
        connector = _connector(plan, url)
    except (ValueError, WebSocketException):  # each session says so (connect_error)
        return plan
    return dataclasses.replace(plan, connector=connector)


def _connector(plan: SessionPlan, url: str) -> connect:
    """websockets' ``connect`` for ``url`` with the probe's bounds (awaiting it opens one)."""
    spec = plan.spec
    return connect(
        url,
        additional_headers=plan.headers,
        subprotocols=list(spec.subprotocols) or None,  # type: ignore[arg-type]
        ssl=plan.ssl,
        proxy=plan.proxy,
        open_timeout=None,  # bounded by the session's Deadline (one timer less)
        ping_interval=spec.ping_interval,
        ping_timeout=spec.ping_interval,
        close_timeout=CLOSE_TIMEOUT,
        max_size=MAX_MESSAGE,
        create_connection=ProbeConnection,
        user_agent_header=USER_AGENT,
        compression=None,  # permessage-deflate is offered by deflate_offers() instead
        extensions=deflate_offers(),
    )


async def _open(plan: SessionPlan, ids: SessionIds) -> ClientConnection:
    if plan.connector is None:
        return await _connector(plan, plan.url_for(ids))
    # A copy, not the plan's own: following a redirect changes the object's URL and
    # headers, and that must not carry over to the rule's other sessions.
    fresh = object.__new__(connect)
    fresh.__dict__.update(plan.connector.__dict__)
    return await fresh


def _durations(s: Session, scenario_end: float | None) -> dict[str, float]:
    start, opened = s.start, s.opened
    out = {"handshake": round(opened - start, 6), "total": round(time.monotonic() - start, 6)}
    if s.first_event is not None:
        out["first_event"] = round(s.first_event - opened, 6)
    if scenario_end is not None:
        out["scenario"] = round(scenario_end - opened, 6)
    return out


async def run_session(plan: SessionPlan, ids: SessionIds) -> Attempt:
    """Run one session of a ``websocket`` rule and say how it went.

    Never raises except :class:`asyncio.CancelledError`; on cancellation the
    socket is closed (1000) before the error propagates. Either way the session
    is traced for the report's picture (:mod:`deploy_guard.traces`), a cut one too.
    """
    if not plan.admission.now():
        await plan.admission.wait()
    s = Session(plan.spec, ids, plan.token, traced=bool(plan.rule) and traces.current() is not None)
    try:
        attempt = await _run(plan, s)
    except asyncio.CancelledError:
        _record(plan, s, None)
        raise
    _record(plan, s, attempt)
    return attempt


def _record(plan: SessionPlan, s: Session, attempt: Attempt | None) -> None:
    """Trace the session, when a run records traces (nothing is built otherwise)."""
    if s.traced:
        traces.session(plan.rule, _trace(s, attempt), age=time.monotonic() - s.start)


def _trace(s: Session, attempt: Attempt | None) -> SessionTrace:
    """What the picture shows of a session; ``attempt`` None: cut before it ended."""
    now = time.monotonic()
    closed_at, close = (s.closed[0] - s.start, s.closed[1]) if s.closed else (None, {})
    code = close.get("code") if isinstance(close, dict) else None
    by = close.get("by", "") if isinstance(close, dict) else ""
    upgraded = s.opened > s.start
    if attempt is None:
        return SessionTrace(
            kind="websocket",
            ok=False,
            cut=True,
            end=(s.stopped or now) - s.start,
            handshake=s.opened - s.start if upgraded else None,
            events=tuple(s.arrivals),
            hold=s.held - s.start if s.held is not None else None,
            hold_wanted=float(s.spec.hold or 0.0) or None,
            close_code=code,
            closed_by=by,
            closed_at=closed_at,
            user=s.ids.user,
            session=s.ids.session,
        )
    return SessionTrace(
        kind="websocket",
        ok=attempt.ok,
        end=attempt.durations.get("total", now - s.start),
        handshake=attempt.durations.get("handshake") if upgraded else None,
        events=tuple(s.arrivals),
        hold=s.held - s.start if s.held is not None else None,
        hold_wanted=float(s.spec.hold or 0.0) or None,
        close_code=attempt.close_code,
        closed_by=by or ("client" if attempt.close_code is not None else ""),
        closed_at=closed_at,
        status=attempt.status,
        cause=attempt.cause,
        detail=attempt.detail,
        user=s.ids.user,
        session=s.ids.session,
    )


async def _run(plan: SessionPlan, s: Session) -> Attempt:
    spec, ids = plan.spec, s.ids
    deadline = task_deadline()  # one timer: the handshake, each step, the hold
    refused: tuple[Fail, int | None] | None = None
    try:
        with deadline.within(spec.connect_timeout):
            ws = await _open(plan, ids)
    except InvalidStatus as exc:
        status = exc.response.status_code
        detail = f"handshake answered HTTP {status}{auth_hint(status)}"
        refused = Fail("handshake_rejected", detail), status
    except TimeoutError:
        detail = f"handshake timed out after {spec.connect_timeout:.1f} s"
        refused = Fail("timeout", detail), None
    except InvalidMessage as exc:
        refused = bad_handshake(exc), None
    except (OSError, WebSocketException) as exc:
        refused = Fail("connect_error", redact_text(connect_failure(exc))), None
    if refused is not None:
        return _attempt(s, *refused)
    s.opened = time.monotonic()
    status = ws.response.status_code if ws.response is not None else 101
    scenario_end: float | None = None
    failed: Fail | None = None
    sends = plan.sends or (None,) * len(spec.scenario)
    try:
        try:
            for number, step in enumerate(spec.scenario, start=1):
                if isinstance(step, ExpectStep):
                    await _expect(ws, s, step, number, deadline)
                else:
                    await _send(ws, s, step, number, deadline, sends[number - 1])
            scenario_end = s.held = time.monotonic()
            await _hold(ws, s, deadline)
        except ConnectionClosed as exc:  # a send hit a closed connection
            failed = closed(exc, s, during="while sending")
        except Fail as fail:
            failed = fail
        await close_bounded(ws)
    finally:
        # The deadline stays armed for this task's next session (see task_deadline).
        if ws.state is not State.CLOSED:
            # Cancellation or an unexpected error: still leave no socket behind.
            s.stopped = time.monotonic()
            await asyncio.shield(close_bounded(ws))
    if failed is not None:
        return _attempt(s, failed, status, scenario_end)
    return _finish(ws, s, status, scenario_end)


def _finish(ws: ClientConnection, s: Session, status: int, scenario_end: float | None) -> Attempt:
    """After our own close: a server that closed first with a code that is not clean fails."""
    proto = ws.protocol
    rcvd = proto.close_rcvd
    codes = s.spec.close_codes
    if rcvd is not None and proto.close_rcvd_then_sent and rcvd.code not in codes.clean:
        s.note("close", {"code": rcvd.code, "reason": rcvd.reason, "by": "server"})
        said = f"{rcvd.code} ({rcvd.reason})" if rcvd.reason else str(rcvd.code)
        detail = f"close code {said} after {fmt_s(s.since_open())}"
        if rcvd.code not in codes.fail:
            detail += f" ({not_clean(codes.clean)})"
        return _attempt(s, Fail("close_code", detail, rcvd.code), status, scenario_end)
    if s.traced:  # a passed session's transcript is never shown: only its picture needs it
        s.note("close", {"code": 1000, "by": "client"})
    return Attempt(
        ok=True,
        close_code=rcvd.code if rcvd is not None else 1000,
        status=status,
        durations=_durations(s, scenario_end),
        user=s.ids.user,
        session=s.ids.session,
    )


def _attempt(
    s: Session, fail: Fail, status: int | None, scenario_end: float | None = None
) -> Attempt:
    if fail.close_code is None and status == 101:
        fail.close_code = 1000  # we closed it ourselves, cleanly, after the failure
    detail = redact_text(fail.detail)
    transcript = s.entries()
    if s.token is not None:  # a server may echo the token back: never report it
        detail = s.token.scrub(detail)
        transcript = tuple(s.token.scrub(e) for e in transcript)
    return Attempt(
        ok=False,
        cause=fail.cause,
        detail=detail,
        close_code=fail.close_code,
        status=status,
        durations=_durations(s, scenario_end),
        user=s.ids.user,
        session=s.ids.session,
        transcript=transcript,
    )


__all__ = ["SessionPlan", "plan_sessions", "run_session"]
