"""The probe's bounds against a hostile WebSocket server: nothing it does grows without limit.

A probe runs against code that may be broken in any way, and 1,000 sessions
run at once: a server that floods pings, never reads, never closes or sends
endless handshake headers must cost each session a bounded amount of memory
and time, and end with a cause the report can name. The limits live here, with
the connection class and the close that enforce them; the session runner is
:mod:`deploy_guard.probes.websocket`.

Memory per session is bounded for 10,000 held sessions too: permessage-deflate
is offered as browsers do, but the probe keeps no zlib state it does not need
between messages (:class:`LeanDeflate`), which websockets' own extension does
(a compressor of tens of KiB per connection, for a session that sends once).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.frames import CTRL_OPCODES, Frame
from websockets.protocol import State
from websockets.typing import ExtensionParameter

#: Transcript entries kept per session (only failed sessions' are reported).
TRANSCRIPT_CAP = 40
#: Characters of a message kept in a transcript entry.
TRANSCRIPT_TEXT = 200
#: Seconds the closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT = 2.0
#: Bytes of one received message at most; a longer one closes the session with 1009.
MAX_MESSAGE = 1 << 20
USER_AGENT = "deploy-guard-probe"
#: Window bits the probe compresses its own messages with, at most (the peer may allow 15;
#: a sender may always use less). 12 is websockets' server default: a compressor of
#: about 40 KiB that exists only while a message is being sent.
OWN_WINDOW_BITS = 12
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


class LeanDeflate(PerMessageDeflate):
    """permessage-deflate that keeps no zlib state between messages unless it must.

    - The probe compresses each of its messages afresh and frees the compressor
      after it: a sender may always forgo context takeover and use a smaller
      window than agreed (RFC 7692, 7.1.1.2 and 7.1.2.2), and a held session
      sends nothing after its scenario.
    - The decompressor is made at the first compressed message (a server may
      never compress); when the server agreed to reset its context per message
      (``server_no_context_takeover``), websockets frees it after each one.
      Otherwise it lives as long as the connection, as the protocol requires.

    Decoding, and its bound on inflated size (1009), is websockets' own.
    """

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        compress_settings: dict[Any, Any] | None = None,
    ) -> None:
        own_bits = min(local_max_window_bits, OWN_WINDOW_BITS)
        # (True, True): the base class makes no zlib object up front.
        super().__init__(True, True, remote_max_window_bits, own_bits, compress_settings)
        self.remote_no_context_takeover = remote_no_context_takeover

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.rsv1 and not self.remote_no_context_takeover and "decoder" not in self.__dict__:
            self.decoder = zlib.decompressobj(wbits=-self.remote_max_window_bits)
        return super().decode(frame, max_size=max_size)

    def encode(self, frame: Frame) -> Frame:
        encoded = super().encode(frame)  # a fresh compressor per message (no context takeover)
        if frame.fin and frame.opcode not in CTRL_OPCODES:
            self.__dict__.pop("encoder", None)
        return encoded


class LeanDeflateFactory(ClientPerMessageDeflateFactory):
    """websockets' permessage-deflate offer, answered with a :class:`LeanDeflate`."""

    def process_response_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> PerMessageDeflate:
        agreed = super().process_response_params(params, accepted_extensions)
        return LeanDeflate(
            agreed.remote_no_context_takeover,
            agreed.local_no_context_takeover,
            agreed.remote_max_window_bits,
            agreed.local_max_window_bits,
            agreed.compress_settings,
        )


@lru_cache(maxsize=1)
def deflate_offers() -> tuple[LeanDeflateFactory, ...]:
    """What the probe offers, best first (shared: the factories keep no state).

    A server that resets its context per message costs a held session no
    decompressor; one that does not (or answers without the parameter) takes
    the second offer, the one browsers and websockets make.
    """
    settings = {"memLevel": 5}  # websockets' default
    return (
        LeanDeflateFactory(server_no_context_takeover=True, compress_settings=settings),
        LeanDeflateFactory(compress_settings=settings),
    )


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
    keep the session (and its buffers) forever. When the close frame fits under
    the write limit, nothing can wait on a full buffer and websockets' own
    ``close_timeout`` bounds the rest: no timer of ours is needed.
    """
    if not ws.paused and (
        ws.transport.get_write_buffer_size() + _CLOSE_FRAME <= ws.write_limit_high
    ):
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
    "OWN_WINDOW_BITS",
    "TRANSCRIPT_CAP",
    "TRANSCRIPT_TEXT",
    "USER_AGENT",
    "LeanDeflate",
    "LeanDeflateFactory",
    "ProbeConnection",
    "close_bounded",
    "deflate_offers",
    "tls_context",
]
