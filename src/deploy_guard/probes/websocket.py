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
exceptions are mapped to causes in one place, :func:`_closed` and the
``except`` clauses of :func:`run_session`.

Durations per session: ``handshake`` (connect to 101), ``first_event`` (101 to
the first message received), ``scenario`` (101 to the last expected event) and
``total`` (connect to closed, the hold included).

Per-session overhead is kept small for 1,000-session runs: no logging and no
snapshot per message, one timeout context per expect step (re-armed per event)
and a transcript capped at :data:`TRANSCRIPT_CAP` entries.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from deploy_guard.log import redact_text
from deploy_guard.measurements import Attempt
from deploy_guard.policy.model import ExpectStep, SendStep, WebSocketSpec
from deploy_guard.probes.target import auth_hint, connect_failure
from deploy_guard.probes.template import SessionIds

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.probes.auth import BearerToken
    from deploy_guard.probes.target import Target

#: Transcript entries kept per session (only failed sessions' are reported).
TRANSCRIPT_CAP = 40
#: Characters of a message kept in a transcript entry.
TRANSCRIPT_TEXT = 200
#: Seconds the closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT = 2.0
USER_AGENT = "deploy-guard-probe"


class _Fail(Exception):
    """A session failed for a named cause; carries the words for the report."""

    def __init__(self, cause: str, detail: str, close_code: int | None = None) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail
        self.close_code = close_code


@lru_cache(maxsize=2)
def tls_context(verify: bool) -> ssl.SSLContext:
    """One shared client TLS context per choice (loading CA certs per session is slow)."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2f} s"


class _Session:
    """State of one running session (a plain object: cheap to create)."""

    __slots__ = (
        "events_seen",
        "first_event",
        "ids",
        "opened",
        "spec",
        "start",
        "token",
        "transcript",
    )

    def __init__(self, spec: WebSocketSpec, ids: SessionIds, token: BearerToken | None) -> None:
        self.spec = spec
        self.token = token
        self.ids = ids
        self.start = time.monotonic()
        self.opened = self.start  # set again when the handshake completes
        self.first_event: float | None = None
        self.events_seen = 0
        self.transcript: list[dict[str, Any]] = []

    def note(self, direction: str, data: Any) -> None:
        if len(self.transcript) < TRANSCRIPT_CAP:
            if isinstance(data, bytes):
                data = f"<{len(data)} bytes>"
            elif isinstance(data, str) and len(data) > TRANSCRIPT_TEXT:
                data = data[:TRANSCRIPT_TEXT] + "..."
            entry = {"t": round(time.monotonic() - self.start, 3), "dir": direction, "data": data}
            self.transcript.append(entry)

    def since_open(self) -> float:
        return time.monotonic() - self.opened

    def receive(self, raw: str | bytes) -> tuple[str | None, dict[str, Any] | None]:
        """Record a message; return its event name and parsed body (None if not JSON)."""
        now = time.monotonic()
        if self.first_event is None:
            self.first_event = now
        self.note("recv", raw)
        try:
            body = json.loads(raw)
        except ValueError:
            return None, None
        if not isinstance(body, dict):
            return None, None
        name = body.get(self.spec.event_field)
        self.check_isolation(name, body)
        return (str(name) if name is not None else None), body

    def check_isolation(self, name: Any, body: dict[str, Any]) -> None:
        iso = self.spec.isolation
        if iso is None or iso.field not in body:
            return
        owner = body[iso.field]
        if owner != self.ids.user:
            raise _Fail(
                "isolation_breach",
                f"event {name} carried {iso.field}={owner!r} on {self.ids.user}'s session "
                f"{self.ids.session} (expected {self.ids.user!r})",
            )


async def _send(ws: ClientConnection, s: _Session, step: SendStep) -> None:
    if step.json is not None:
        text = json.dumps(s.ids.render_json(step.json))
    else:
        text = s.ids.render(step.text or "")
    s.note("send", text)
    await ws.send(text)


async def _expect(ws: ClientConnection, s: _Session, step: ExpectStep, number: int) -> None:
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
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + step.timeout) as cm:
            while remaining:
                name, _ = s.receive(await ws.recv())
                i = position.get(name) if name is not None else None
                if i is None or seen[i]:
                    if not step.allow_extra:
                        raise _Fail(
                            "unexpected_event",
                            f"unexpected event {name!r} at step {number} "
                            f"while waiting for {_next(wanted, seen)}",
                        )
                    continue
                seen[i] = True
                remaining -= 1
                s.events_seen += 1
                if any(seen[i + 1 :]):
                    later = wanted[seen.index(True, i + 1)]
                    raise _Fail("wrong_order", f"got {name} after {later} at step {number}")
                if i == len(wanted) - 1 and remaining:
                    missing = ", ".join(w for w, ok in zip(wanted, seen, strict=True) if not ok)
                    raise _Fail(
                        "missing_event",
                        f"{missing} never arrived: {name} came without it at step {number}",
                    )
                cm.reschedule(loop.time() + step.timeout)
    except TimeoutError:
        raise _Fail(
            "timeout",
            f"timeout at step {number} waiting for {_next(wanted, seen)} "
            f"after {step.timeout:.1f} s",
        ) from None
    except ConnectionClosed as exc:
        raise _closed(exc, s, during=f"at step {number} before {_next(wanted, seen)}") from None


def _next(wanted: list[str], seen: list[bool]) -> str:
    """The first expected event not seen yet."""
    return next((w for w, ok in zip(wanted, seen, strict=True) if not ok), wanted[-1])


async def _hold(ws: ClientConnection, s: _Session) -> None:
    """Keep the connection for ``hold`` seconds, reading; a server close fails it now."""
    hold = float(s.spec.hold or 0.0)
    if hold <= 0:
        return
    try:
        async with asyncio.timeout(hold):
            while True:
                raw = await ws.recv()
                s.note("recv", raw)
                if s.spec.isolation is not None:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(body, dict):
                        s.check_isolation(body.get(s.spec.event_field), body)
    except TimeoutError:
        return
    except ConnectionClosed as exc:
        raise _closed(exc, s, during="during the hold", hold=hold) from None


def _closed(exc: ConnectionClosed, s: _Session, *, during: str, hold: float | None = None) -> _Fail:
    """Map a connection that ended under us to a cause (the one seam for closes)."""
    after = _fmt_s(s.since_open())
    if exc.rcvd is None:
        s.note("close", {"code": 1006, "by": "network"})
        if exc.sent is not None and exc.sent.code == 1011:  # the library's keepalive gave up
            return _Fail(
                "connection_reset",
                f"no pong within {s.spec.ping_interval:g} s (keepalive timeout) {during} "
                f"after {after}",
                1006,
            )
        return _Fail(
            "connection_reset",
            f"connection dropped without a close frame (1006) {during} after {after}",
            1006,
        )
    code, reason = exc.rcvd.code, exc.rcvd.reason
    s.note("close", {"code": code, "reason": reason, "by": "server"})
    said = f"{code} ({reason})" if reason else str(code)
    if code in s.spec.close_codes.fail:
        tail = f", hold wanted {hold:g} s" if hold is not None else ""
        return _Fail("close_code", f"close code {said} after {after} {during}{tail}", code)
    if hold is not None:
        return _Fail(
            "close_code", f"server closed {said} after {after}, hold wanted {hold:g} s", code
        )
    return _Fail("missing_event", f"stream closed {said} {during} after {after}", code)


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

    def url_for(self, ids: SessionIds) -> str:
        if not self.templated_query:
            return self.url
        extra = urlencode([(k, ids.render(v)) for k, v in self.templated_query])
        return f"{self.url}{'&' if '?' in self.url else '?'}{extra}"


def plan_sessions(spec: WebSocketSpec, target: Target) -> SessionPlan:
    """Prepare a rule's sessions (URL, headers, TLS, proxy) once."""
    static = {k: v for k, v in spec.query.items() if "{" not in v}
    templated = tuple((k, v) for k, v in spec.query.items() if "{" in v)
    url = target.url(spec.path, static, ws=True)
    secure = url.startswith("wss:")
    return SessionPlan(
        spec=spec,
        url=url,
        templated_query=templated,
        headers=target.headers_for(spec.headers),
        ssl=tls_context(target.verify_tls) if secure else None,
        proxy=get_proxy(parse_uri(url)),  # the environment's proxy settings, read once
        token=target.token,
    )


async def _open(plan: SessionPlan, ids: SessionIds) -> ClientConnection:
    spec = plan.spec
    return await connect(
        plan.url_for(ids),
        additional_headers=plan.headers,
        subprotocols=list(spec.subprotocols) or None,  # type: ignore[arg-type]
        ssl=plan.ssl,
        proxy=plan.proxy,
        open_timeout=spec.connect_timeout,
        ping_interval=spec.ping_interval,
        ping_timeout=spec.ping_interval,
        close_timeout=CLOSE_TIMEOUT,
        user_agent_header=USER_AGENT,
    )


def _durations(s: _Session, scenario_end: float | None) -> dict[str, float]:
    end = time.monotonic()
    out = {"handshake": s.opened - s.start, "total": end - s.start}
    if s.first_event is not None:
        out["first_event"] = s.first_event - s.opened
    if scenario_end is not None:
        out["scenario"] = scenario_end - s.opened
    return {k: round(v, 6) for k, v in out.items()}


async def run_session(plan: SessionPlan, ids: SessionIds) -> Attempt:
    """Run one session of a ``websocket`` rule and say how it went.

    Never raises except :class:`asyncio.CancelledError`; on cancellation the
    socket is closed (1000) before the error propagates.
    """
    spec = plan.spec
    s = _Session(spec, ids, plan.token)
    try:
        ws = await _open(plan, ids)
    except InvalidStatus as exc:
        status = exc.response.status_code
        detail = f"handshake answered HTTP {status}{auth_hint(status)}"
        return _attempt(s, _Fail("handshake_rejected", detail), status)
    except TimeoutError:
        detail = f"handshake timed out after {spec.connect_timeout:.1f} s"
        return _attempt(s, _Fail("timeout", detail), None)
    except (OSError, WebSocketException) as exc:
        detail = redact_text(connect_failure(exc))
        return _attempt(s, _Fail("connect_error", detail), None)
    s.opened = time.monotonic()
    status = ws.response.status_code if ws.response is not None else 101
    scenario_end: float | None = None
    try:
        try:
            for number, step in enumerate(spec.scenario, start=1):
                if isinstance(step, ExpectStep):
                    await _expect(ws, s, step, number)
                else:
                    await _send(ws, s, step)
            scenario_end = time.monotonic()
            await _hold(ws, s)
        except ConnectionClosed as exc:  # a send hit a closed connection
            raise _closed(exc, s, during="while sending") from None
    except _Fail as fail:
        await ws.close(1000)
        return _attempt(s, fail, status, scenario_end)
    finally:
        if ws.state is not State.CLOSED:
            # Cancellation or an unexpected error: still leave no socket behind.
            await asyncio.shield(ws.close(1000))
    return _finish(ws, s, status, scenario_end)


def _finish(ws: ClientConnection, s: _Session, status: int, scenario_end: float | None) -> Attempt:
    """After our own close: a server that closed first with a failure code still fails."""
    proto = ws.protocol
    rcvd = proto.close_rcvd
    if rcvd is not None and proto.close_rcvd_then_sent and rcvd.code in s.spec.close_codes.fail:
        s.note("close", {"code": rcvd.code, "reason": rcvd.reason, "by": "server"})
        detail = f"close code {rcvd.code} ({rcvd.reason}) after {_fmt_s(s.since_open())}"
        return _attempt(s, _Fail("close_code", detail, rcvd.code), status, scenario_end)
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
    s: _Session, fail: _Fail, status: int | None, scenario_end: float | None = None
) -> Attempt:
    if fail.close_code is None and status == 101:
        fail.close_code = 1000  # we closed it ourselves, cleanly, after the failure
    detail = redact_text(fail.detail)
    transcript = tuple(s.transcript)
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
