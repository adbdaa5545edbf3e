"""What a benchmark sees of a process from outside: CPU and memory, and calls in time.

``/proc/PID/stat`` (user + system CPU time) and ``/proc/PID/status`` (``VmRSS``)
read every second from another process, so what is measured is the process as
the kernel accounts it, imports and threads included, with nothing inside it
changed; and calls stamped as they reach a server, grouped into the reads they
belong to. Pure functions and two small threads, standard library only (the
tests load this file by its path).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

#: Seconds a long-running process is given to settle (imports, its first round of
#: work) before its "start" memory is read.
WARM = 60.0


# -- a process seen from outside (pure) ---------------------------------------------------


def cpu_seconds(stat: str, ticks: int) -> float:
    """User + system CPU seconds from a ``/proc/PID/stat`` line (``ticks``: SC_CLK_TCK)."""
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces: cut after it
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15


def rss_bytes(status: str) -> int | None:
    """``VmRSS`` of a ``/proc/PID/status`` text, in bytes (None: a zombie has none)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass(frozen=True)
class Sample:
    t: float
    cpu: float
    rss: int


@dataclass(frozen=True)
class Usage:
    """A process's CPU (share of one core) and memory over a run of samples."""

    seconds: float
    cpu_percent: float
    #: From the first sample at or after ``warm`` to the end (start-up left out).
    cpu_percent_warm: float
    rss_first: int
    rss_warm: int
    rss_end: int
    rss_max: int


def usage(samples: Sequence[Sample], warm: float = WARM) -> Usage:
    """:class:`Usage` of ``samples`` (oldest first, at least two)."""
    first, last = samples[0], samples[-1]
    settled = next((s for s in samples if s.t - first.t >= warm), samples[len(samples) // 2])

    def share(a: Sample, b: Sample) -> float:
        return 100.0 * (b.cpu - a.cpu) / (b.t - a.t) if b.t > a.t else 0.0

    return Usage(
        seconds=last.t - first.t,
        cpu_percent=share(first, last),
        cpu_percent_warm=share(settled, last),
        rss_first=first.rss,
        rss_warm=settled.rss,
        rss_end=last.rss,
        rss_max=max(s.rss for s in samples),
    )


def every(samples: Sequence[Sample], period: float = 60.0) -> list[Sample]:
    """The first sample, then the first one at or after each further ``period`` seconds."""
    out: list[Sample] = []
    for sample in samples:
        if not out or sample.t - samples[0].t >= len(out) * period:
            out.append(sample)
    return out


def cpu_shares(samples: Sequence[Sample], period: float = 60.0) -> list[float]:
    """CPU as a percentage of one core in each ``period`` (the samples :func:`every` picks)."""
    marks = every(samples, period)
    return [100.0 * (b.cpu - a.cpu) / (b.t - a.t) for a, b in itertools.pairwise(marks)]


# -- calls in time (pure) -----------------------------------------------------------------


def bursts(stamps: Sequence[float], gap: float = 1.0) -> list[tuple[float, int]]:
    """Calls (sorted seconds) grouped where less than ``gap`` apart: (start, calls) each."""
    out: list[tuple[float, int]] = []
    last = None
    for t in stamps:
        if last is None or t - last >= gap:
            out.append((t, 1))
        else:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        last = t
    return out


def gaps(starts: Sequence[float]) -> list[float]:
    """Seconds between consecutive ``starts`` (sorted)."""
    return [b - a for a, b in itertools.pairwise(starts)]


# -- sampling and loading, from threads ---------------------------------------------------


class Background:
    """A daemon thread running ``_run`` for the span of a ``with`` block.

    ``_run`` loops on ``self._stop.wait(...)``: it returns True once the block
    ends, and ``__exit__`` waits for the thread to finish its last round.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


class ProcSampler(Background):
    """Reads ``/proc/PID`` every ``period`` s from a thread (and ``also()``, its max)."""

    def __init__(self, pid: int, also: Callable[[], int], period: float = 1.0) -> None:
        self.pid, self.also, self.period = pid, also, period
        self.samples: list[Sample] = []
        self.also_max = 0
        self._ticks = os.sysconf("SC_CLK_TCK")
        super().__init__()

    def _run(self) -> None:
        proc = Path(f"/proc/{self.pid}")
        while True:
            try:
                cpu = cpu_seconds((proc / "stat").read_text(), self._ticks)
                rss = rss_bytes((proc / "status").read_text())
            except (OSError, IndexError, ValueError):
                return  # the process ended
            if rss is not None:
                self.samples.append(Sample(time.monotonic(), cpu, rss))
            self.also_max = max(self.also_max, self.also())
            if self._stop.wait(self.period):
                return


class Ticker(Background):
    """Calls ``act(n)`` every ``period`` s in a thread (n from 0) until stopped."""

    def __init__(self, period: float, act: Callable[[int], None]) -> None:
        self.period, self.act = period, act
        self.done = 0
        super().__init__()

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(max(0.0, start + self.done * self.period - time.monotonic())):
            self.act(self.done)
            self.done += 1
