"""The rollout's speed and cost: what each step adds, how fast a failure is undone, reads.

Real ``deploy-guard rollout`` runs (subprocesses, as Cloud Build runs them)
against the local emulator with the chat agent, measured from each run's JSON
report (its timeline and ``api_calls``). Issue 11's targets:

1. **Overhead of each step beyond its duration**: a healthy candidate, a policy
   whose probes end well within the steps (the chat policy, hold 3 s) and
   ``--steps 10:10s,50:10s``. Per step: ``shift_requested`` -> ``shift_verified``
   (the write and the re-read that verifies it), and ``step_started`` ->
   ``stage_judged`` minus the step's duration (the step's last complete pass and
   the judge). Target: under 1 s together.
2. **First failure to traffic verified back**, at step 1 and at step 2: a
   candidate that passes the stage before traffic (its tag URL) and then dies
   (``CHAT_CRASH_AFTER``: the process exits that long after its first chat
   session) while a step's probes hold their sessions. ``first_failure_seen`` ->
   ``rollback_verified``, and from the crash as Cloud Run logs it (``Container
   called exit(1).``, wall clock). Target: under 1 s.
3. **Cloud Logging reads per minute per rollout** with the default
   ``--log-interval 10s``: ``--steps 10:1m,50:1m``, the report's
   ``ListLogEntries`` count over the run's minutes, and where the reads fall:
   per stage, in any 60 s, and across each stage boundary (this run's emulator
   is in-process, so its per-RPC counter can be sampled to time each read).
   Target: at most 6 a minute.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.sampling import Background

ROOT = Path(__file__).resolve().parents[1]
#: The chat policy's WebSocket hold in these runs: every stage's probes end in ~3.5 s.
HOLD = "3s"
#: Section 1's steps: each much longer than its probes, so its end is its duration.
SHORT_STEPS = ((10, 10.0), (50, 10.0))
#: Section 3's steps: a rollout of about two minutes.
MINUTE_STEPS = ((10, 60.0), (50, 60.0))


def _steps_flag(steps: tuple[tuple[int, float], ...]) -> str:
    return ",".join(f"{percent}:{duration:g}s" for percent, duration in steps)


# -- reading a report's timeline (pure) ------------------------------------------------


@dataclass(frozen=True)
class StepTiming:
    """One step's time beyond its duration, from the rollout's timeline (seconds)."""

    step: int
    percent: int
    duration: float
    #: ``shift_requested`` -> ``shift_verified``: the write and the re-read.
    write_verify: float
    #: ``step_started`` -> ``stage_judged``, less the duration: last pass and judge.
    end_beyond: float

    @property
    def overhead(self) -> float:
        return self.write_verify + self.end_beyond


def step_timings(timeline: list[dict[str, Any]], durations: list[float]) -> list[StepTiming]:
    """Each step's :class:`StepTiming` (a step's shift: the events before its ``step_started``)."""
    out: list[StepTiming] = []
    requested = verified = None
    started: dict[int, tuple[float, float, float, int]] = {}
    for entry in timeline:
        event, t, detail = entry["event"], entry["t"], entry.get("detail", {})
        if event == "shift_requested":
            requested = t
        elif event == "shift_verified":
            verified = t
        elif event == "step_started" and requested is not None and verified is not None:
            started[detail["step"]] = (requested, verified, t, detail["percent"])
        elif event == "stage_judged" and detail.get("stage") in started:
            step = detail["stage"]
            req, ver, begun, percent = started.pop(step)
            duration = durations[step - 1]
            out.append(StepTiming(step, percent, duration, ver - req, t - begun - duration))
    return out


def event_time(timeline: list[dict[str, Any]], name: str) -> float | None:
    """When ``name`` first happened (seconds into the run), or None."""
    return next((e["t"] for e in timeline if e["event"] == name), None)


def stage_spans(timeline: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(stage, start, end) in seconds into the run: ``evidence_started`` to ``stage_judged``."""
    out: list[tuple[str, float, float]] = []
    begun: float | None = None
    for entry in timeline:
        if entry["event"] == "evidence_started":
            begun = entry["t"]
        elif entry["event"] == "stage_judged" and begun is not None:
            stage = entry.get("detail", {}).get("stage", "?")
            out.append(("tag" if stage == 0 else f"step {stage}", begun, entry["t"]))
            begun = None
    return out


@dataclass(frozen=True)
class ReadPattern:
    """Where a rollout's Cloud Logging reads fall (times in seconds into the run)."""

    #: (stage, its length, its reads).
    per_stage: list[tuple[str, float, int]]
    #: At each stage boundary: the gap from one stage's last read to the next one's first.
    boundaries: list[float]
    #: The most reads in any 60 s (what a per-minute quota sees).
    peak_minute: int


def read_pattern(reads: list[float], spans: list[tuple[str, float, float]]) -> ReadPattern:
    """:class:`ReadPattern` of ``reads`` (sorted) over the stages' ``spans``.

    A read belongs to the first stage that had not yet ended: a stage's last
    read (its complete pass) comes just before its ``stage_judged``; the
    sampling's few milliseconds are absorbed by a small slack, well under the
    tens of milliseconds before the next stage's first read.
    """
    slack = 0.03
    stage_of = [next((i for i, s in enumerate(spans) if r <= s[2] + slack), None) for r in reads]
    per_stage = [(n, end - start, stage_of.count(i)) for i, (n, start, end) in enumerate(spans)]
    boundaries = [
        b - a
        for (a, sa), (b, sb) in itertools.pairwise(zip(reads, stage_of, strict=True))
        if sa is not None and sb is not None and sb == sa + 1
    ]
    peak = max((sum(1 for r in reads if a <= r < a + 60) for a in reads), default=0)
    return ReadPattern(per_stage, boundaries, peak)


# -- the runs ------------------------------------------------------------------------


def _report(folder: Path, name: str) -> dict[str, Any]:
    return json.loads((folder / f"{name}.json").read_text())  # type: ignore[no-any-return]


def _rollout(demo: Any, host: str, cand: str, policy: Path, name: str, *flags: str) -> int:
    folder = policy.parent
    code: int = demo.check(
        host, cand, policy, name, *flags, folder=folder, quiet=True, command="rollout"
    )
    return code


def step_overhead(demo: Any, folder: Path) -> None:
    emulator, host = demo.start_emulator()
    try:
        deployer = demo.Deployer(host)
        deployer.first()
        cand = deployer.candidate({"DEMO_REVISION": "2"}, tag="candidate")
        policy = demo.demo_policy(HOLD, folder)
        flag = _steps_flag(SHORT_STEPS)
        code = _rollout(demo, host, cand, policy, "steps", "--steps", flag)
        doc = _report(folder, "steps")
        timeline = doc["timeline"]
        rows = step_timings(timeline, [d for _, d in SHORT_STEPS])
        print(f"1. healthy rollout, --steps {flag}, probes hold {HOLD}: exit {code}")
        for row in rows:
            print(
                f"   step {row.step} ({row.percent:>2} % for {row.duration:g} s): write+verify "
                f"{row.write_verify * 1000:5.0f} ms, end beyond its duration "
                f"{row.end_beyond * 1000:5.0f} ms -> overhead {row.overhead * 1000:5.0f} ms"
            )
        promote = event_time(timeline, "promote_requested")
        promoted = event_time(timeline, "promote_verified")
        if promote is not None and promoted is not None:
            print(f"   promotion (100 %): write+verify {(promoted - promote) * 1000:5.0f} ms")
        worst = max((r.overhead for r in rows), default=float("nan"))
        print(f"   worst step overhead {worst * 1000:.0f} ms; target < 1 s per step")
        deployer.clients.close()
    finally:
        demo.stop(emulator)


def _crash_logged(deployer: Any, revision: str) -> datetime | None:
    """When Cloud Run logged the candidate's process dying (its system log entry)."""
    from bench.bench_gate import first_entry

    return first_entry(deployer, revision, 'textPayload:"Container called exit"')


def failure_to_rollback(demo: Any, folder: Path, step: int, crash_after: float) -> None:
    """A candidate that dies ``crash_after`` s after its first session, during ``step``."""
    emulator, host = demo.start_emulator()
    try:
        deployer = demo.Deployer(host)
        base = deployer.first()
        env = {"DEMO_REVISION": "2", "CHAT_CRASH_AFTER": f"{crash_after:g}"}
        cand = deployer.candidate(env, tag="candidate")
        policy = demo.demo_policy(HOLD, folder)
        flag = _steps_flag(SHORT_STEPS)
        name = f"crash-{step}"
        code = _rollout(demo, host, cand, policy, name, "--steps", flag)
        doc = _report(folder, name)
        timeline = doc["timeline"]
        failed = [s for s in doc["steps"] if s["status"] == "fail"]
        where = f"{failed[0]['phase']} {failed[0]['index']}" if failed else "no stage failed"
        seen = event_time(timeline, "first_failure_seen")
        verified = event_time(timeline, "rollback_verified")
        rule = next(
            (e["detail"].get("rule") for e in timeline if e["event"] == "first_failure_seen"), None
        )
        print(
            f"2.{step} candidate dies {crash_after:g} s after its first session, "
            f"--steps {flag}: exit {code}, failed at {where} (rule {rule}), action {doc['action']}"
        )
        split = failed[0]["traffic_verified"] if failed else None
        print(f"   traffic at the failing stage {split} -> after {doc['traffic_after']} ({base})")
        if seen is not None and verified is not None:
            print(f"   first failure seen -> rollback verified: {(verified - seen) * 1000:.0f} ms")
        crash = _crash_logged(deployer, cand)
        back = next((e["at"] for e in timeline if e["event"] == "rollback_verified"), None)
        if crash is not None and back is not None:
            wall = (datetime.fromisoformat(back) - crash).total_seconds()
            print(f"   exit logged by Cloud Run -> rollback verified: {wall * 1000:.0f} ms")
        print("   target < 1 s at any step")
        deployer.clients.close()
    finally:
        demo.stop(emulator)


class CallClock(Background):
    """When an in-process emulator received each call of ``method``: its counter, sampled.

    The emulator counts every RPC it receives (:meth:`FaultInjector.count`); a
    thread reads the count every ``period`` s and stamps each increase. The
    calls themselves are the guard's, untouched.
    """

    def __init__(self, faults: Any, method: str, period: float = 0.005) -> None:
        self.faults, self.method, self.period = faults, method, period
        self.stamps: list[datetime] = []
        super().__init__()

    def _run(self) -> None:
        seen = self.faults.count(self.method)
        while not self._stop.wait(self.period):
            now = self.faults.count(self.method)
            self.stamps += [datetime.now(UTC)] * (now - seen)
            seen = now


def _run_zero(timeline: list[dict[str, Any]]) -> datetime:
    """The wall-clock time of the run's ``t`` = 0."""
    first = timeline[0]
    return datetime.fromisoformat(first["at"]) - timedelta(seconds=first["t"])


def logging_reads(demo: Any, folder: Path, interval: float = 10.0) -> None:
    from deploy_guard.emulator.server import EmulatorThread
    from deploy_guard.log import configure

    configure(level="warning")  # the in-process emulator's own log lines
    emulator = EmulatorThread(startup_timeout=30.0)
    emulator.start()
    try:
        deployer = demo.Deployer(emulator.address)
        deployer.first()
        cand = deployer.candidate({"DEMO_REVISION": "2"}, tag="candidate")
        policy = demo.demo_policy(HOLD, folder)
        flag = _steps_flag(MINUTE_STEPS)
        with CallClock(emulator.emulator.faults, "ListLogEntries") as clock:
            code = _rollout(demo, emulator.address, cand, policy, "minutes", "--steps", flag)
        deployer.clients.close()
    finally:
        emulator.stop()
    doc = _report(folder, "minutes")
    minutes = doc["duration_s"] / 60
    reads = doc["api_calls"].get("logging", {}).get("ListLogEntries", 0)
    zero = _run_zero(doc["timeline"])
    times = sorted((stamp - zero).total_seconds() for stamp in clock.stamps)
    pattern = read_pattern(times, stage_spans(doc["timeline"]))
    stages = ", ".join(
        f"{n} {d:.1f} s: {c} ({d / interval:.1f} intervals)" for n, d, c in pattern.per_stage
    )
    gaps = ", ".join(f"{g * 1000:.0f} ms" for g in pattern.boundaries)
    print(f"3. healthy rollout, --steps {flag}, default --log-interval {interval:g}s: exit {code}")
    print(f"   duration {doc['duration_s']:.1f} s; Cloud API calls {doc['api_calls']}")
    print(f"   Cloud Logging reads: {reads} -> {reads / minutes:.1f}/min; target <= 6/min")
    print(f"   reads per stage: {stages}")
    print(f"   most reads in any 60 s: {pattern.peak_minute}")
    print(f"   a stage's last read (its complete pass) -> the next stage's first read: {gaps}")


def main() -> None:
    from bench.bench_gate import load_demo

    demo = load_demo()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        folder = Path(tmp)
        step_overhead(demo, folder)
        # The crash clock starts at the first chat session (~0.4 s into the run); the tag
        # stage ends ~3.5 s in, each step lasts 10 s and its hold sessions its first ~3.5 s.
        failure_to_rollback(demo, folder, step=1, crash_after=5.0)
        failure_to_rollback(demo, folder, step=2, crash_after=15.0)
        logging_reads(demo, folder)


if __name__ == "__main__":
    main()
