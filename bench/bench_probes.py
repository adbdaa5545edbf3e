"""Probe engine at scale: speed against a raw ``websockets`` loop, and 10,000 held sessions.

Measures, in one run on this machine, with the server in its own process
(``bench/ws_server.py``: its CPU and memory are not the probe's):

1. sessions/s and client CPU per session for 1,000 short sessions (connect,
   one message, five events, close) at concurrency 100: the probe engine
   (``run_rule``) against a raw ``websockets`` client loop doing the same work
   on the same wire (the same permessage-deflate offers), the practical limit.
   Rounds alternate, each after a full garbage collection (so that none pays
   for the garbage of the one before), and the median of each is compared; the ratios
   engine/raw are the figures to compare across machines (issue 16: >= 0.9).
2. 1,000 and 10,000 sessions held at once (a message, five events, a 30 s
   hold pinged every 10 s), each run in a probe process of its own: its RSS
   read from outside every 0.25 s (``/proc/PID/status``; the peak is the whole
   process, the interpreter and imports included), its CPU, the worst
   event-loop lag a ticker task saw, the longest garbage-collection pause, and
   in a second run the tracemalloc peak (tracing costs memory and time of its
   own, so it is never on while RSS is read). The server counts the
   connections open at once: every session was held at the same time.
   10,000 sessions with websockets alone (the same offers) give the floor.

``python -m bench probes`` takes about four minutes; ``--quick`` holds 1,000 only.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from sampling import ProcSampler, Sample
from ws_server import EVENTS, raise_fd_limit

HERE = Path(__file__).parent
SESSIONS = 1000
CONCURRENCY = 100
ROUNDS = 11
HELD = (1000, 10000)
HOLD_S = 30.0
PING_S = 10.0


# -- short sessions: the engine against a raw loop, in this process ----------------------


def _rule(sessions: int, concurrency: int) -> Any:
    from deploy_guard.policy.model import Rule

    message = {"type": "message", "user_id": "{user}", "session_id": "{session}", "text": "hi {n}"}
    return Rule.model_validate(
        {
            "name": "bench",
            "kind": "websocket",
            "websocket": {
                "path": "/",
                "scenario": [{"send": {"json": message}}, {"expect": EVENTS, "timeout": "30s"}],
                "sessions": sessions,
                "concurrency": concurrency,
                "isolation": {"field": "user_id"},
                "ping_interval": None,
                "connect_timeout": "10s",  # websockets' default open_timeout, as the raw loop
            },
        }
    )


async def _engine(url: str, rule: Any) -> int:
    from deploy_guard.probes.runner import run_rule
    from deploy_guard.probes.target import Target

    last = None
    async for m in run_rule(rule, Target(url)):
        last = m
    assert last is not None
    assert last.succeeded == last.planned, last.failures_by_cause
    return int(last.succeeded)


async def _raw(url: str, sessions: int, concurrency: int) -> int:
    """The practical limit: the same work with nothing but the websockets client."""
    from websockets.asyncio.client import connect
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    from websockets.proxy import get_proxy
    from websockets.uri import parse_uri

    ws_url = url.replace("http://", "ws://") + "/"
    # Like the engine, read the proxy settings once (websockets' default reads the
    # environment on every connect, which would make the baseline needlessly slow),
    # and offer what it offers, so that the server answers both alike.
    proxy = get_proxy(parse_uri(ws_url))
    settings = {"memLevel": 5}
    offers = [
        ClientPerMessageDeflateFactory(server_no_context_takeover=True, compress_settings=settings),
        ClientPerMessageDeflateFactory(compress_settings=settings),
    ]
    ok = 0

    async def worker(k: int) -> None:
        nonlocal ok
        for n in range(k, sessions + 1, concurrency):
            async with connect(
                ws_url, ping_interval=None, proxy=proxy, compression=None, extensions=offers
            ) as ws:
                await ws.send(json.dumps({"type": "message", "user_id": f"user-{k}", "n": n}))
                for _ in EVENTS:
                    json.loads(await ws.recv())
            ok += 1

    await asyncio.gather(*(worker(k) for k in range(1, concurrency + 1)))
    return ok


@dataclass(frozen=True)
class Round:
    per_s: float
    cpu_ms: float


def compare(rounds: dict[str, list[Round]]) -> dict[str, float]:
    """Medians per contender and the ratios engine/raw (speed) and raw/engine (CPU)."""
    med = {
        name: (
            statistics.median(r.per_s for r in runs),
            statistics.median(r.cpu_ms for r in runs),
        )
        for name, runs in rounds.items()
    }
    return {
        "raw_per_s": med["raw"][0],
        "engine_per_s": med["engine"][0],
        "raw_cpu_ms": med["raw"][1],
        "engine_cpu_ms": med["engine"][1],
        "speed_ratio": med["engine"][0] / med["raw"][0],
        "cpu_ratio": med["raw"][1] / med["engine"][1],
    }


async def _throughput(url: str) -> dict[str, list[Round]]:
    """Alternating rounds (raw first, then engine; the order flips each round)."""
    rule = _rule(SESSIONS, CONCURRENCY)
    await _engine(url, _rule(CONCURRENCY, CONCURRENCY))  # warm: imports, first connections
    await _raw(url, CONCURRENCY, CONCURRENCY)
    rounds: dict[str, list[Round]] = {"raw": [], "engine": []}
    for i in range(ROUNDS):
        for name in ("raw", "engine") if i % 2 == 0 else ("engine", "raw"):
            gc.collect()  # no round pays for the garbage of the one before
            start, cpu = time.perf_counter(), time.process_time()
            done = await (_raw(url, SESSIONS, CONCURRENCY) if name == "raw" else _engine(url, rule))
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            assert done == SESSIONS
            rounds[name].append(Round(SESSIONS / wall, used * 1000 / SESSIONS))
    return rounds


# -- held sessions: a probe process of their own, read from outside ----------------------


def _stats(url: str) -> dict[str, int]:
    """The server's connection counts (and it starts counting the peak afresh)."""
    from websockets.sync.client import connect

    with connect(url.replace("http://", "ws://") + "/stats", proxy=None) as ws:
        return dict(json.loads(ws.recv()))


def held(url: str, sessions: int, *, trace: bool = False, raw: bool = False) -> dict[str, Any]:
    """Run ``bench/probe_hold.py`` and read its RSS from outside while it holds."""
    _stats(url)
    args = [sys.executable, str(HERE / "probe_hold.py"), url, str(sessions)]
    args += [str(HOLD_S), str(PING_S)] + ["--trace"] * trace + ["--raw"] * raw
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    with ProcSampler(proc.pid, lambda: 0, period=0.25) as sampler:
        out, _ = proc.communicate(timeout=HOLD_S + 600)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    samples: list[Sample] = sampler.samples
    result["rss_max"] = max((s.rss for s in samples), default=0)
    result["held_at_once"] = _stats(url)["peak"]
    return result


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def _say_held(sessions: int, r: dict[str, Any], t: dict[str, Any] | None) -> None:
    per = (r["rss_max"] - r["rss_before"]) / sessions / 1024
    traced = (
        f", tracemalloc peak {_mib(t['tracemalloc_peak'])} "
        f"({t['tracemalloc_peak'] / sessions / 1024:.1f} KiB/session)"
        if t is not None
        else ""
    )
    print(
        f"  {sessions:>6} held {HOLD_S:g} s (pings every {PING_S:g} s): "
        f"{r['succeeded']}/{r['done']} ok, {r['held_at_once']} open at once; "
        f"RSS peak {_mib(r['rss_max'])} (idle {_mib(r['rss_before'])}, "
        f"+{per:.1f} KiB/session){traced}"
    )
    print(
        f"         CPU {r['cpu_s']:.1f} s ({r['cpu_s'] * 1000 / sessions:.2f} ms/session), "
        f"worst loop lag {r['lag_max'] * 1000:.0f} ms (p99 {r['lag_p99'] * 1000:.0f} ms), "
        f"longest GC pause {r['gc_max'] * 1000:.0f} ms ({r['gc_full']} full collections)"
    )
    if r["failures"] or r["samples"]:
        print(f"         failures {r['failures']}: {r['samples']}")


def main(argv: list[str] | None = None) -> None:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    raise_fd_limit()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet
    server = subprocess.Popen(
        [sys.executable, str(HERE / "ws_server.py")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        c = compare(asyncio.run(_throughput(url)))
        print(
            f"{SESSIONS} short sessions at concurrency {CONCURRENCY} (median of {ROUNDS}): "
            f"raw websockets {c['raw_per_s']:.0f}/s, probe engine {c['engine_per_s']:.0f}/s, "
            f"ratio {c['speed_ratio']:.2f}"
        )
        print(
            f"client CPU per session: raw {c['raw_cpu_ms']:.3f} ms, "
            f"engine {c['engine_cpu_ms']:.3f} ms, ratio raw/engine {c['cpu_ratio']:.2f}"
        )
        for sessions in HELD[:1] if quick else HELD:
            r = held(url, sessions)
            t = held(url, sessions, trace=True)
            _say_held(sessions, r, t)
        if not quick:
            floor = held(url, HELD[-1], raw=True)
            per = (floor["rss_max"] - floor["rss_before"]) / HELD[-1] / 1024
            print(
                f"  websockets alone, {HELD[-1]} held: RSS peak {_mib(floor['rss_max'])} "
                f"(+{per:.1f} KiB/session), CPU {floor['cpu_s']:.1f} s, "
                f"worst loop lag {floor['lag_max'] * 1000:.0f} ms"
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
