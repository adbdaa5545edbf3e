"""The probe's bounds against a hostile WebSocket server: nothing it does grows without limit.

A probe runs against code that may be broken in any way, and 1,000 sessions
run at once: a server that floods pings, never reads, never closes or sends
endless handshake headers must cost each session a bounded amount of memory
and time, and end with a cause the report can name. The limits live here, with
the connection class and the close that enforce them; the session runner is
:mod:`deploy_guard.probes.websocket`.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

#: Transcript entries kept per session (only failed sessions' are reported).
TRANSCRIPT_CAP = 40
#: Characters of a message kept in a transcript entry.
TRANSCRIPT_TEXT = 200
#: Seconds the closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT = 2.0
#: Bytes of one received message at most; a longer one closes the session with 1009.
MAX_MESSAGE = 1 << 20
USER_AGENT = "deploy-guard-probe"


class ProbeConnection(ClientConnection):
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


async def close_bounded(ws: ClientConnection) -> None:
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


__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_MESSAGE",
    "TRANSCRIPT_CAP",
    "TRANSCRIPT_TEXT",
    "USER_AGENT",
    "ProbeConnection",
    "close_bounded",
    "tls_context",
]
