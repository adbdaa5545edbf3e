"""Which WebSocket client library should the probe use? Raw loops of each, on the same server.

Issue 16 asks to measure whether another maintained client serves the engine better
than websockets. Each library here runs the same raw work with nothing around it:

1. 1,000 short sessions at concurrency 100 (connect, a message, five events, close):
   client CPU per session, median of alternating rounds;
2. 2,000 sessions held 5 s in a process of its own: RSS growth per session (read in
   that process every 0.1 s while they hold).

websockets and aiohttp (both dependencies already) always run; picows (Cython, the
fastest asyncio client) runs when it is installed (``pip install picows``): it is not a
dependency, and this benchmark is how the choice can be checked again. Compression is
each library's default and the other way round where the library has both
(websockets offers permessage-deflate by default, aiohttp does not; picows does not
implement it).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from ws_server import EVENTS, raise_fd_limit

HERE = Path(__file__).parent
SESSIONS, CONCURRENCY, ROUNDS = 1000, 100, 5
HELD, HOLD_S = 2000, 5.0

Session = Callable[[str, int, float], Awaitable[None]]


async def _websockets(url: str, k: int, hold: float, compression: str | None = "deflate") -> None:
    from websockets.asyncio.client import connect

    async with connect(url, ping_interval=None, proxy=None, compression=compression) as ws:
        await ws.send(json.dumps({"type": "message", "user_id": f"user-{k}"}))
        for _ in EVENTS:
            json.loads(await ws.recv())
        if hold:
            await asyncio.sleep(hold)


_aiohttp_session = None


async def _aiohttp(url: str, k: int, hold: float, compress: int = 0) -> None:
    import aiohttp

    global _aiohttp_session
    if _aiohttp_session is None:
        _aiohttp_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    async with _aiohttp_session.ws_connect(url, autoping=True, compress=compress) as ws:
        await ws.send_str(json.dumps({"type": "message", "user_id": f"user-{k}"}))
        for _ in EVENTS:
            json.loads(await ws.receive_str())
        if hold:
            await asyncio.sleep(hold)


async def _picows(url: str, k: int, hold: float) -> None:
    import picows

    loop = asyncio.get_running_loop()
    done = loop.create_future()

    class Listener(picows.WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: picows.WSTransport) -> None:
            self.left = len(EVENTS)
            message = json.dumps({"type": "message", "user_id": f"user-{k}"})
            transport.send(picows.WSMsgType.TEXT, message.encode())

        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.TEXT:
                json.loads(frame.get_payload_as_utf8_text())
                self.left -= 1
                if not self.left and not done.done():
                    done.set_result(None)

    transport, _ = await picows.ws_connect(Listener, url)
    await done
    if hold:
        await asyncio.sleep(hold)
    transport.send_close(picows.WSCloseCode.OK)
    await transport.wait_disconnected()


async def _websockets_plain(url: str, k: int, hold: float) -> None:
    await _websockets(url, k, hold, compression=None)


async def _aiohttp_deflate(url: str, k: int, hold: float) -> None:
    await _aiohttp(url, k, hold, compress=15)


#: name: (module it needs, one session). Each library's default first, then the same
#: with compression the other way, so that like is compared with like.
CLIENTS: dict[str, tuple[str, Session]] = {
    "websockets": ("websockets", _websockets),
    "websockets, no deflate": ("websockets", _websockets_plain),
    "aiohttp, no deflate": ("aiohttp", _aiohttp),
    "aiohttp, deflate": ("aiohttp", _aiohttp_deflate),
    "picows, no deflate": ("picows", _picows),
}


async def _loop(session: Session, url: str, sessions: int, concurrency: int) -> None:
    async def worker(k: int) -> None:
        for _ in range(k, sessions + 1, concurrency):
            await session(url, k, 0.0)

    await asyncio.gather(*(worker(k) for k in range(1, concurrency + 1)))


async def _cpu_per_session(url: str, names: list[str]) -> dict[str, float]:
    rounds: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        await _loop(CLIENTS[name][1], url, CONCURRENCY, CONCURRENCY)  # warm
    for _ in range(ROUNDS):
        for name in names:
            gc.collect()
            cpu = time.process_time()
            await _loop(CLIENTS[name][1], url, SESSIONS, CONCURRENCY)
            rounds[name].append((time.process_time() - cpu) * 1000 / SESSIONS)
    if _aiohttp_session is not None:
        await _aiohttp_session.close()
    return {name: statistics.median(values) for name, values in rounds.items()}


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def held_child(name: str, url: str) -> None:
    """In a process of its own: hold HELD sessions, print the RSS growth per session."""
    raise_fd_limit()
    session = CLIENTS[name][1]
    before, peak, stop = _rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], _rss())

    threading.Thread(target=sample, daemon=True).start()

    async def run() -> None:
        await asyncio.gather(*(session(url, k, HOLD_S) for k in range(1, HELD + 1)))

    asyncio.run(run())
    stop.set()
    print(json.dumps({"kib_per_session": (peak[0] - before) / HELD / 1024}))


def main() -> None:
    raise_fd_limit()
    names = [n for n, (module, _) in CLIENTS.items() if importlib.util.find_spec(module)]
    missing = sorted({module for module, _ in CLIENTS.values()} - {CLIENTS[n][0] for n in names})
    server = subprocess.Popen(
        [sys.executable, str(HERE / "ws_server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = f"ws://127.0.0.1:{server.stdout.readline().strip()}/"
        cpu = asyncio.run(_cpu_per_session(url, names))
        for name in names:
            out = subprocess.run(
                [sys.executable, __file__, "--held", name, url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            held = json.loads(out.strip().splitlines()[-1])["kib_per_session"]
            print(
                f"{name:>22}: {cpu[name]:.3f} ms CPU per short session (median of {ROUNDS}), "
                f"{held:.1f} KiB RSS per held session ({HELD} held)"
            )
        if missing:
            print(f"not installed, not measured: {', '.join(missing)}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--held"]:
        held_child(sys.argv[2], sys.argv[3])
    else:
        main()
