"""The probe's bounds against a hostile WebSocket server: nothing it does grows without limit.

A probe runs against code that may be broken in any way, and 1,000 sessions
run at once: a server that floods pings, never reads, never closes or sends
endless handshake headers must cost each session a bounded amount of memory
and time, and end with a cause the report can name. The limits live here, with
the connection class and the close that enforce them; the session runner is
:mod:`deploy_guard.probes.websocket`.

Memory per session is bounded for 10,000 held sessions too: permessage-deflate
is offered as browsers do (after an offer asking the server to reset its
context per message), and a session waiting or holding keeps no compressor
(:func:`drop_compressor`): websockets keeps one per connection, tens of KiB.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache

from websockets.asyncio.client import ClientConnection
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
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
#: Bytes of the close frame the probe sends (header, mask, code; no reason).
_CLOSE_FRAME = 8


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
    #: Set by :func:`close_bounded`: a close of ours, which websockets bounds itself.
    own_close = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.response is None:  # the opening handshake
            if self.protocol.handshake_exc is not None:
                self.transport.abort()  # the handshake raises the library's own error now
        elif self.close_deadline is not None and self._close_timer is None and not self.own_close:
            self._close_timer = self.loop.call_at(self.close_deadline, self.transport.abort)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.pause_reading()  # the write buffer is over the limit: stop reading too

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


def drop_compressor(ws: ClientConnection) -> None:
    """Free the compressor until the session sends again (after a send, when the hold begins).

    websockets keeps a compressor (about 40 KiB, 150 KiB with a 15-bit window)
    for the whole connection; most of a session's life is spent waiting for
    answers or holding, and thousands do at once. A sender may always forgo
    context takeover (RFC 7692, 7.1.1.2), so the next message simply gets a
    fresh compressor. The decompressor stays when the server keeps its
    context (the protocol needs it); when the server resets its context per
    message, websockets already frees it after each one.
    """
    for extension in ws.protocol.extensions:
        if isinstance(extension, PerMessageDeflate):
            extension.local_no_context_takeover = True
            extension.__dict__.pop("encoder", None)


@lru_cache(maxsize=1)
def deflate_offers() -> tuple[ClientPerMessageDeflateFactory, ...]:
    """What the probe offers, best first (shared: the factories keep no state).

    A server that resets its context per message (``server_no_context_takeover``)
    costs a held session no decompressor; one that does not, or that answers
    without the parameter, takes the second offer: the one browsers and
    websockets make.
    """
    settings = {"memLevel": 5}  # websockets' default
    return (
        ClientPerMessageDeflateFactory(server_no_context_takeover=True, compress_settings=settings),
        ClientPerMessageDeflateFactory(compress_settings=settings),
    )


@lru_cache(maxsize=2)
def tls_context(verify: bool) -> ssl.SSLContext:
    """One shared client TLS context per choice (loading CA certs per session is slow)."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def write_fits(ws: ClientConnection, size: int) -> bool:
    """Whether writing ``size`` more bytes leaves the write buffer under its limit.

    Then websockets cannot wait for the server to read (it waits only once the
    buffer went over the limit), and a send or close needs no timer of ours.
    """
    return not ws.paused and ws.transport.get_write_buffer_size() + size <= ws.write_limit_high


async def close_bounded(ws: ClientConnection) -> None:
    """Close with 1000 within :data:`CLOSE_TIMEOUT`, even from a server that reads nothing.

    websockets bounds the wait for the server's close frame, not the wait for
    its own close frame to be written: a server that stopped reading would
    keep the session (and its buffers) forever. When the close frame fits under
    the write limit, nothing can wait on a full buffer and websockets' own
    ``close_timeout`` bounds the rest: no timer of ours is needed.
    """
    if isinstance(ws, ProbeConnection):
        ws.own_close = True
    if write_fits(ws, _CLOSE_FRAME):
        await ws.close(1000)
        return
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
    "deflate_offers",
    "drop_compressor",
    "tls_context",
    "write_fits",
]
