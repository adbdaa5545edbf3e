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
from websockets.exceptions import (
    ConnectionClosed,
    InvalidMessage,
    InvalidStatus,
    SecurityError,
    WebSocketException,
)
from websockets.frames import Frame, Opcode
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
#: Bytes of one received message at most; a longer one closes the session with 1009.
MAX_MESSAGE = 1 << 20
USER_AGENT = "deploy-guard-probe"


class _Fail(Exception):
    """A session failed for a named cause; carries the words for the report."""

    def __init__(self, cause: str, detail: str, close_code: int | None = None) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail
        self.close_code = close_code


class _ProbeConnection(ClientConnection):
    """websockets' client connection, bounded against a hostile server.

    - A handshake response the library refuses (endless headers, a line too
      long) ends the connection at once: the library would otherwise wait for
      the server to close, that is until ``connect_timeout``, and name nothing.
    - While the server does not read what the probe must answer (pongs to a
      flood of pings), the probe stops reading too, so unsent answers stay
      under the write limit instead of growing with every ping.
    - When the probe closes because the server broke the protocol (1002,
      1007, 1009), the socket is dropped ``close_timeout`` later if the server
      never closes: the library enforces that deadline only on a later send or
      ping, and a session waiting in ``recv`` would wait for its step timeout.
    """

    _close_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        state = self.protocol.state
        if state is State.CONNECTING:
            if getattr(self.protocol, "handshake_exc", None) is not None:
                transport.abort()  # the handshake raises the library's own error now
            return
        if state is State.CLOSING and self._close_timer is None and self.close_deadline:
            self._close_timer = self.loop.call_at(self.close_deadline, transport.abort)
        if transport.get_write_buffer_size() > self.write_limit_high:
            transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        super().connection_lost(exc)

    def resume_writing(self) -> None:
        super().resume_writing()
        # Reading stays paused while the received-message queue is full (the library's
        # own pause): only the pause taken above is lifted here.
        queue_full = getattr(self.recv_messages, "paused", False)
        if self.protocol.state is not State.CLOSED and not queue_full:
            self.transport.resume_reading()


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


async def _send(ws: ClientConnection, s: _Session, step: SendStep, number: int) -> None:
    """Send one message; a server that reads nothing fails it after ``connect_timeout``."""
    if step.json is not None:
        text = json.dumps(s.ids.render_json(step.json))
    else:
        text = s.ids.render(step.text or "")
    s.note("send", text)
    try:
        async with asyncio.timeout(s.spec.connect_timeout):
            await ws.send(text)
    except TimeoutError:
        raise _Fail(
            "timeout",
            f"send at step {number} not taken within {s.spec.connect_timeout:g} s: "
            "the server reads nothing",
        ) from None


async def _close(ws: ClientConnection) -> None:
    """Close with 1000 within :data:`CLOSE_TIMEOUT`, even from a server that reads nothing.

    websockets bounds the wait for the server's close frame, not the wait for
    its own close frame to be written: a server that stopped reading would
    keep the session (and its buffers) forever.
    """
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(1000)
    except TimeoutError:
        ws.transport.abort()


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
    field = s.spec.event_field
    unnamed = 0  # messages with no event name: not JSON, or no event_field in them
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + step.timeout) as cm:
            while remaining:
                name, _ = s.receive(await ws.recv())
                unnamed += name is None
                i = position.get(name) if name is not None else None
                if i is None or seen[i]:
                    if not step.allow_extra:
                        what = (
                            f"unexpected event {name!r}"
                            if name is not None
                            else f"a message with no {field!r} field (not a JSON object "
                            "naming its event)"
                        )
                        raise _Fail(
                            "unexpected_event",
                            f"{what} at step {number} while waiting for {_next(wanted, seen)}",
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
            f"after {step.timeout:.1f} s"
            + (
                f"; {unnamed} message{'s' if unnamed != 1 else ''} named no event (not a JSON "
                f"object with a {field!r} field: is event_field right?)"
                if unnamed
                else ""
            ),
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
    sent = exc.sent
    if sent is not None and sent.code in _PROBE_CLOSES and not exc.rcvd_then_sent:
        return _violation(exc, sent.code, sent.reason, s, during=during, after=after)
    if exc.rcvd is None:
        s.note("close", {"code": 1006, "by": "network"})
        if sent is not None and sent.code == 1011:  # the library's keepalive gave up
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
    codes = s.spec.close_codes
    if code in codes.fail:
        tail = f", hold wanted {hold:g} s" if hold is not None else ""
        return _Fail("close_code", f"close code {said} after {after} {during}{tail}", code)
    unclean = "" if code in codes.clean else f" ({_not_clean(codes.clean)})"
    if hold is not None:
        return _Fail(
            "close_code",
            f"server closed {said} after {after}, hold wanted {hold:g} s{unclean}",
            code,
        )
    if unclean:
        return _Fail("close_code", f"close code {said} {during} after {after}{unclean}", code)
    return _Fail("missing_event", f"stream closed {said} {during} after {after}", code)


def _not_clean(clean: list[int]) -> str:
    listed = ", ".join(str(c) for c in clean) or "none"
    return f"neither a fail nor a clean close code; close_codes.clean: {listed}"


#: Close codes the probe itself sends when the server breaks the protocol:
#: 1002 protocol error, 1007 invalid data (UTF-8), 1009 message too big.
_PROBE_CLOSES = {1002: "protocol_error", 1007: "protocol_error", 1009: "too_large"}
_CLOSE_NAMES = {1002: "protocol error", 1007: "invalid data", 1009: "message too big"}


def _violation(
    exc: ConnectionClosed, code: int, reason: str, s: _Session, *, during: str, after: str
) -> _Fail:
    """The server broke the protocol and the probe closed with ``code``: say what it sent."""
    s.note("close", {"code": code, "reason": reason, "by": "probe"})
    close = _bad_close_frame(exc)
    if close is not None:
        what = f"an invalid close frame ({close}): {reason}"
    elif code == 1009:
        what = f"a message over the {MAX_MESSAGE >> 20} MiB limit ({reason})"
    elif code == 1007:
        what = f"a text message that is not valid UTF-8 ({reason})"
    else:
        what = f"a frame that breaks the protocol ({reason})"
    return _Fail(
        _PROBE_CLOSES[code],
        f"the server sent {what} {during} after {after}; the probe closed with "
        f"{code} ({_CLOSE_NAMES[code]})",
        code,
    )


def _bad_close_frame(exc: BaseException) -> str | None:
    """The close frame the library refused, in words ("code 999, reason 'x'"), if any.

    websockets keeps only its own words ("invalid status code"); the frame it
    refused is still a local of the parser's traceback, read here after the
    fact so the hot path pays nothing.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        tb = cur.__traceback__
        while tb is not None:
            frame = tb.tb_frame.f_locals.get("frame")
            if isinstance(frame, Frame) and frame.opcode is Opcode.CLOSE:
                data = bytes(frame.data)
                if len(data) < 2:
                    return f"{len(data)}-byte payload {data!r}"
                code = int.from_bytes(data[:2], "big")
                return f"code {code}, reason {data[2:TRANSCRIPT_TEXT]!r}"
            tb = tb.tb_next
        cur = cur.__cause__ or cur.__context__
    return None


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
        max_size=MAX_MESSAGE,
        create_connection=_ProbeConnection,
        user_agent_header=USER_AGENT,
    )


def _bad_handshake(exc: InvalidMessage) -> _Fail:
    """An upgrade answer that is not valid HTTP: too large, or broken."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, EOFError):  # closed before it answered
        return _Fail("connect_error", redact_text(connect_failure(exc)))
    why = redact_text(f"{type(cause).__name__}: {cause}")
    if isinstance(cause, SecurityError):
        return _Fail("too_large", f"the handshake response is too large ({why})")
    return _Fail("protocol_error", f"the handshake response is not valid HTTP ({why})")


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
    except InvalidMessage as exc:
        return _attempt(s, _bad_handshake(exc), None)
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
                    await _send(ws, s, step, number)
            scenario_end = time.monotonic()
            await _hold(ws, s)
        except ConnectionClosed as exc:  # a send hit a closed connection
            raise _closed(exc, s, during="while sending") from None
    except _Fail as fail:
        await _close(ws)
        return _attempt(s, fail, status, scenario_end)
    finally:
        if ws.state is not State.CLOSED:
            # Cancellation or an unexpected error: still leave no socket behind.
            await asyncio.shield(_close(ws))
    return _finish(ws, s, status, scenario_end)


def _finish(ws: ClientConnection, s: _Session, status: int, scenario_end: float | None) -> Attempt:
    """After our own close: a server that closed first with a code that is not clean fails."""
    proto = ws.protocol
    rcvd = proto.close_rcvd
    codes = s.spec.close_codes
    if rcvd is not None and proto.close_rcvd_then_sent and rcvd.code not in codes.clean:
        s.note("close", {"code": rcvd.code, "reason": rcvd.reason, "by": "server"})
        said = f"{rcvd.code} ({rcvd.reason})" if rcvd.reason else str(rcvd.code)
        detail = f"close code {said} after {_fmt_s(s.since_open())}"
        if rcvd.code not in codes.fail:
            detail += f" ({_not_clean(codes.clean)})"
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
