"""What a WebSocket probe session records, and how its failures are named.

Every outcome becomes an :class:`~deploy_guard.measurements.Attempt` (errors
are data here): a session that fails raises :class:`Fail` with a cause and the
words for the report, and the runner (:mod:`deploy_guard.probes.websocket`)
turns it into an attempt. Library exceptions are mapped to causes in one
place: :func:`closed` for a connection that ended under the session (a close
frame, a dropped socket, a protocol violation the probe closed on) and
:func:`bad_handshake` for an upgrade answer that is not valid HTTP.

Per-session overhead is kept small for 10,000-session runs: no logging and no
snapshot per message, a transcript of plain tuples capped at
:data:`~deploy_guard.probes.ws_bounds.TRANSCRIPT_CAP` entries (made into the
report's dicts only for a failed session), and arrival times for the report's
picture only when a run records traces.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed, InvalidMessage, SecurityError
from websockets.frames import Frame, Opcode

from deploy_guard.log import redact_text
from deploy_guard.policy.model import WebSocketSpec
from deploy_guard.probes.target import connect_failure
from deploy_guard.probes.template import SessionIds
from deploy_guard.probes.ws_bounds import MAX_MESSAGE, TRANSCRIPT_CAP, TRANSCRIPT_TEXT
from deploy_guard.traces import EVENTS_PER_SESSION

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.probes.auth import BearerToken


class Fail(Exception):
    """A session failed for a named cause; carries the words for the report."""

    def __init__(self, cause: str, detail: str, close_code: int | None = None) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail
        self.close_code = close_code


def fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 1 else f"{seconds:.2f} s"


class Session:
    """State of one running session (a plain object: cheap to create)."""

    __slots__ = (
        "arrivals",
        "closed",
        "first_event",
        "held",
        "ids",
        "opened",
        "spec",
        "start",
        "stopped",
        "token",
        "traced",
        "transcript",
    )

    def __init__(
        self,
        spec: WebSocketSpec,
        ids: SessionIds,
        token: BearerToken | None,
        *,
        traced: bool = True,
    ) -> None:
        self.spec = spec
        self.token = token
        self.ids = ids
        self.start = time.monotonic()
        self.opened = self.start  # set again when the handshake completes
        self.first_event: float | None = None
        #: (seconds from the start, "send"/"recv"/"close", data): see :meth:`entries`.
        self.transcript: list[tuple[float, str, Any]] = []
        #: For the report's picture (:mod:`deploy_guard.traces`), kept only when
        #: ``traced``: (seconds from the start, event name or "") of each message
        #: received, capped; when the hold began; the close that ended the session
        #: (monotonic time, data).
        self.traced = traced
        self.arrivals: list[tuple[float, str]] = []
        self.held: float | None = None
        self.closed: tuple[float, dict[str, Any]] | None = None
        #: When the session was stopped from outside (cancelled), if it was.
        self.stopped: float | None = None

    def heard(self, name: Any, now: float | None = None) -> None:
        """A message arrived (now, or at ``now``); ``name``: its event, None when it named none."""
        if self.traced and len(self.arrivals) < EVENTS_PER_SESSION:
            at = round((time.monotonic() if now is None else now) - self.start, 4)
            self.arrivals.append((at, "" if name is None else str(name)))

    def note(self, direction: str, data: Any, now: float | None = None) -> None:
        """Keep a transcript entry (sent, received, the close), at ``now`` or now."""
        if now is None:
            now = time.monotonic()
        if direction == "close" and self.closed is None:
            self.closed = (now, data)
        if len(self.transcript) < TRANSCRIPT_CAP:
            self.transcript.append((now - self.start, direction, _clip(data)))

    def entries(self) -> tuple[dict[str, Any], ...]:
        """The transcript as the report shows it: ``{"t", "dir", "data"}`` each."""
        return tuple({"t": round(t, 3), "dir": d, "data": data} for t, d, data in self.transcript)

    def wants_body(self) -> bool:
        """Whether a message received during the hold must be parsed (isolation, traces)."""
        return self.spec.isolation is not None or (
            self.traced and len(self.arrivals) < EVENTS_PER_SESSION
        )

    def since_open(self) -> float:
        return time.monotonic() - self.opened

    def receive(self, raw: str | bytes) -> tuple[str | None, dict[str, Any] | None]:
        """Record a message; return its event name and parsed body (None if not JSON)."""
        now = time.monotonic()
        if self.first_event is None:
            self.first_event = now
        if len(self.transcript) < TRANSCRIPT_CAP:
            kept = raw if raw.__class__ is str and len(raw) <= TRANSCRIPT_TEXT else _clip(raw)
            self.transcript.append((now - self.start, "recv", kept))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if body.__class__ is not dict:
            self.heard(None, now)
            return None, None
        spec = self.spec
        name = body.get(spec.event_field)
        if self.traced:
            self.heard(name, now)
        iso = spec.isolation
        if iso is not None and iso.field in body and body[iso.field] != self.ids.user:
            self.check_isolation(name, body)  # raises, naming the breach
        return (name if name.__class__ is str else None if name is None else str(name)), body

    def check_isolation(self, name: Any, body: dict[str, Any]) -> None:
        iso = self.spec.isolation
        if iso is None or iso.field not in body:
            return
        owner = body[iso.field]
        if owner != self.ids.user:
            raise Fail(
                "isolation_breach",
                f"event {name} carried {iso.field}={owner!r} on {self.ids.user}'s session "
                f"{self.ids.session} (expected {self.ids.user!r})",
            )


def _clip(data: Any) -> Any:
    """What a transcript keeps of a message: its first characters, or the size of bytes."""
    if data.__class__ is str:
        return data if len(data) <= TRANSCRIPT_TEXT else data[:TRANSCRIPT_TEXT] + "..."
    if isinstance(data, bytes | bytearray | memoryview):
        return f"<{len(data)} bytes>"
    return data


def closed(exc: ConnectionClosed, s: Session, *, during: str, hold: float | None = None) -> Fail:
    """Map a connection that ended under us to a cause (the one seam for closes)."""
    after = fmt_s(s.since_open())
    sent = exc.sent
    if sent is not None and sent.code in _PROBE_CLOSES and not exc.rcvd_then_sent:
        return _violation(exc, sent.code, sent.reason, s, during=during, after=after)
    if exc.rcvd is None:
        s.note("close", {"code": 1006, "by": "network"})
        if sent is not None and sent.code == 1011:  # the library's keepalive gave up
            return Fail(
                "connection_reset",
                f"no pong within {s.spec.ping_interval:g} s (keepalive timeout) {during} "
                f"after {after}",
                1006,
            )
        return Fail(
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
        return Fail("close_code", f"close code {said} after {after} {during}{tail}", code)
    unclean = "" if code in codes.clean else f" ({not_clean(codes.clean)})"
    if hold is not None:
        return Fail(
            "close_code",
            f"server closed {said} after {after}, hold wanted {hold:g} s{unclean}",
            code,
        )
    if unclean:
        return Fail("close_code", f"close code {said} {during} after {after}{unclean}", code)
    return Fail("missing_event", f"stream closed {said} {during} after {after}", code)


def not_clean(clean: list[int]) -> str:
    listed = ", ".join(str(c) for c in clean) or "none"
    return f"neither a fail nor a clean close code; close_codes.clean: {listed}"


#: Close codes the probe itself sends when the server breaks the protocol:
#: 1002 protocol error, 1007 invalid data (UTF-8), 1009 message too big.
_PROBE_CLOSES = {1002: "protocol_error", 1007: "protocol_error", 1009: "too_large"}
_CLOSE_NAMES = {1002: "protocol error", 1007: "invalid data", 1009: "message too big"}


def _violation(
    exc: ConnectionClosed, code: int, reason: str, s: Session, *, during: str, after: str
) -> Fail:
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
    return Fail(
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


def bad_handshake(exc: InvalidMessage) -> Fail:
    """An upgrade answer that is not valid HTTP: too large, or broken."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, EOFError):  # closed before it answered
        return Fail("connect_error", redact_text(connect_failure(exc)))
    why = redact_text(f"{type(cause).__name__}: {cause}")
    if isinstance(cause, SecurityError):
        return Fail("too_large", f"the handshake response is too large ({why})")
    return Fail("protocol_error", f"the handshake response is not valid HTTP ({why})")


__all__ = ["Fail", "Session", "bad_handshake", "closed", "fmt_s", "not_clean"]
