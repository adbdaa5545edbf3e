"""The watch's speed and cost: first 1011 to traffic back, and what a long watch costs.

Real ``deploy-guard watch`` runs (subprocesses, as a Cloud Run job runs them)
against an in-process emulator with the chat agent, measured from each run's
JSON report, the emulator's own counters and, for the watcher's CPU and memory,
``/proc`` read from outside. Issue 12's targets:

1. **First 1011 to traffic verified back < 1 s.** A chat revision with
   ``CHAT_BAD_AFTER`` is promoted (as ``check --promote`` records it) and
   watched; once bad, every new session dies with 1011 and the revision logs the
   orchestrator error. Three clocks per run: the report's
   ``watch.rollbacks[0].first_bad_to_verified_s``; the timeline's
   ``window_judged`` (fail) -> ``watch_rolled_back``; and the emulator's log
   entry of the revision's first 1011 line (wall clock) -> the rollback's
   ``verified_at``. Twice: **canary-driven** (the canary user meets the bad
   server) and **logs-driven** (no canary, no probes: users' sessions fail and
   the ``TailLogEntries`` stream carries the first bad line). p50 / max.
2. **An idle watcher under 2 % of one core and under 100 MiB RSS** over
   ``--minutes`` (10): a healthy revision watched with the shipped
   ``policies/chat-agent.yaml`` (its ``watch:`` section: probe rounds every
   5 m, a canary renewed every 30 s, metrics every minute) plus one logs rule
   for the steady stream of (5). CPU time and VmRSS from ``/proc/PID`` every
   second.
3. **One log stream, not a poll**: ``TailLogEntries`` opens and the most
   sessions open at once (the emulator's ``TailHub``), ``ListLogEntries``
   calls (the catch-up reads), during (2).
4. **At most one metric read per rule per minute**: ``ListTimeSeries`` calls
   during (2), stamped as they reach the emulator; a read of every metric rule
   is one burst (``error_rate`` is one call, ``latency`` two).
5. **Memory flat with a steady log stream**: during (2) a writer puts
   ``--rate`` (20) INFO lines a second into the revision's logs, each matched
   by a logs rule that allows them (``max_count`` far above the window's
   count), so every line is streamed, counted and kept in the window; RSS at
   the start vs the end.

Run: ``python -m bench watch`` (part of ``make bench``: about 13 minutes, 10 of
them the long watch; ``BENCH_WATCH_MINUTES`` shortens it), or
``python -m bench.bench_watch --minutes 1 --reps 2`` for a quick look.

Last measured (2-core VM, Python 3.11, ``python -m bench watch``: 10 minutes, 5 reps):

1. canary-driven, p50 / max: first bad -> verified (report) 11 / 13 ms; window_judged
   fail -> watch_rolled_back 8 / 12 ms; 1011 logged by the revision -> verified
   10 / 14 ms. Logs-driven (the tail carried the line): 13 / 21, 10 / 16, 13 / 21 ms.
   Target < 1 s: met, by far (the emulator answers at once; no route delay).
2. CPU 6.17 % of one core over 600 s (per minute 4.5 rising to 6.5-7.1 as the 5 m
   window fills): target < 2 % MISSED, by the steady stream of (5): the same watch
   with ``--rate 0`` (6 min) used 0.59 % (0.37 % after its first minute). Each
   streamed batch wakes a look at the window (``_Watch._look``: ``judge()``, every
   rule's ``update_rule``), at 20 lines a second 20 looks a second, 2-3 ms each.
   RSS max 111.4 MiB: target < 100 MiB MISSED, by imports: the process holds
   ~97 MiB once it has imported what it uses (google.cloud run_v2, logging_v2,
   monitoring_v3 and grpc alone ~75 MiB), 104 MiB after its first minute, 110 once
   the monitoring client is first used (3 min in: Monitoring's lag).
3. tail mode: TailLogEntries opened 1, at most 1 open at once; ListLogEntries 1 (the
   catch-up read at start); no poll. Met.
4. ListTimeSeries: 21 calls in 7 reads of the 2 metric rules (3 calls a read), the
   first 180 s in; between reads min 59.95 s, mean 60.00 s: one read per rule per
   minute. Met.
5. 12,017 lines at 20/s: RSS per minute 104 105 105 110 110 111 111 111 111 111 MiB:
   flat (111.2 at the end) once the window is full and every client loaded.

After news (log lines, metric reads) was judged at most every 0.25 s instead of once per
streamed batch (``runtime/watch.py`` ``NEWS_DELAY``), ``--only long --minutes 3``:
``--rate 20`` 3.27 % of one core over 180 s (2.92 % after the first minute; the machine
was also running tests), RSS 104.8 MiB; ``--rate 0`` (an idle watcher) 1.03 % over 120 s,
0.33 % after the first minute, RSS 103.7 MiB. An idle watcher meets the CPU target; RSS
stays ~4 % over it, by imports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "chat-agent"  # the demo's service, which the shipped policy names
#: Seconds of its process's life after which the promoted revision turns bad: the
#: watcher (about 2 s to start) has its stream open and its canary connected by then.
BAD_AFTER = 8.0
REPS = 5
MINUTES = 10.0
RATE = 20.0
MIB = 1024 * 1024

# -- the policies of section 1 ------------------------------------------------------------

#: Section 1's policy: a canary renewed every second (or none: CANARY off, its rule gone)
#: and the 1011 logs rule, no probe rounds. Data, as a user would write it.
WATCH_POLICY = """\
version: 1
name: NAME
services: [chat-agent]
on_fail: rollback
timeout: 60s
auth: {id_token: none}
watch:
  window: 60s
  probe_interval: off
  canary: CANARY
rules:
  - name: no-1011-in-logs
    kind: logs
    logs:
      filter: 'severity>=ERROR'
      patterns: ['close code 1011', 'orchestrator.*NoneType']
      max_count: 0
"""
GOLDEN_RULE = """\
  - name: chat-golden-path
    kind: websocket
    websocket:
      path: /ws/chat
      scenario:
        - send: {json: {type: message, user_id: "{user}", session_id: "{session}", text: hi}}
        - expect: [agent_started, agent_thinking, tool_executing, tool_completed, agent_completed]
          timeout: 5s
"""


def watch_policy(name: str, canary: bool) -> str:
    """Section 1's policy text: canary-driven, or logs-driven (no canary)."""
    text = WATCH_POLICY.replace("NAME", name)
    if not canary:
        return text.replace("CANARY", "off")
    return text.replace("CANARY", "{rule: chat-golden-path, renew: 1s}") + GOLDEN_RULE


#: Section 5's lines and the rule that lets them through (they are counted, never a fail).
STEADY_TEXT = "bench steady line"
STEADY_RULE = {
    "name": "steady-lines",
    "kind": "logs",
    "logs": {"filter": "severity=INFO", "patterns": [STEADY_TEXT], "max_count": 10_000_000},
}


# -- reading a report (pure) --------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """p50 and max of some seconds."""

    p50: float
    max: float
    n: int

    def __str__(self) -> str:
        return f"p50 {self.p50 * 1000:4.0f} ms, max {self.max * 1000:4.0f} ms (n={self.n})"


def spread(values: Sequence[float | None]) -> Spread | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return Spread(statistics.median(known), max(known), len(known))


@dataclass(frozen=True)
class RollbackTiming:
    """One watch's rollback, three ways (seconds; None: not in the report)."""

    #: The report's ``watch.rollbacks[0].first_bad_to_verified_s``.
    reported: float | None
    #: Timeline: the ``window_judged`` that failed -> ``watch_rolled_back``.
    judged: float | None
    #: The revision's first 1011 line as the emulator logged it -> ``verified_at``.
    logged: float | None


def rollback_timing(doc: dict[str, Any], first_logged: datetime | None) -> RollbackTiming:
    """:class:`RollbackTiming` of a watch's report (``first_logged``: the emulator's entry)."""
    rollbacks = doc.get("watch", {}).get("rollbacks", [])
    first = rollbacks[0] if rollbacks else {}
    timeline = doc.get("timeline", [])
    failed = next(
        (
            e["t"]
            for e in timeline
            if e["event"] == "window_judged" and e.get("detail", {}).get("status") == "fail"
        ),
        None,
    )
    back = next((e["t"] for e in timeline if e["event"] == "watch_rolled_back"), None)
    judged = back - failed if failed is not None and back is not None else None
    logged = None
    if first_logged is not None and first.get("verified_at"):
        verified = datetime.fromisoformat(first["verified_at"])
        logged = (verified - first_logged).total_seconds()
    return RollbackTiming(first.get("first_bad_to_verified_s"), judged, logged)


# -- helpers of the runs ------------------------------------------------------------------


def one_session(url: str, n: int) -> None:
    """A user's chat session through the service's URL (a broken one dies with 1011)."""
    from websockets.sync.client import connect

    message = {"type": "message", "user_id": f"u{n}", "session_id": f"s{n}", "text": "hi"}
    try:
        with connect(url, open_timeout=5, close_timeout=1) as ws:
            ws.send(json.dumps(message))
            while json.loads(ws.recv(timeout=5)).get("type") != "agent_completed":
                pass
    except Exception:  # a broken session is what this user is for
        pass


def steady_line(emulator: Any, revision: str, rate: float) -> Callable[[int], None]:
    """Writes line ``n`` as the revision's stdout would put it in Cloud Logging (none at 0)."""
    from deploy_guard.emulator.contracts import RevisionRef

    ref = RevisionRef(emulator.project, emulator.region, SERVICE, revision, SERVICE)

    def write(n: int) -> None:
        if not rate:
            return
        line = json.dumps({"severity": "INFO", "message": f"{STEADY_TEXT} {n}"})
        emulator.logs.revision_output(ref, "stdout", line, datetime.now(UTC))

    return write


def promote(deployer: Any, base: str, cand: str) -> None:
    """``cand`` serves 100 %, recorded as a passing ``check --promote`` records it."""
    from google.cloud import run_v2

    from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, SERVED_BEFORE, encode_split

    services = deployer.clients.services()
    svc = services.get_service(name=deployer.name)
    kind = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    svc.traffic = [run_v2.TrafficTarget(type_=kind, revision=cand, percent=100)]
    svc.annotations[LAST_KNOWN_GOOD] = cand
    svc.annotations[SERVED_BEFORE] = encode_split({base: 100})
    services.update_service(service=svc).result(timeout=60, polling=deployer.polling)


def start_watch(host: str, policy: Path, name: str, *flags: str) -> subprocess.Popen[bytes]:
    folder = policy.parent
    args = ["watch", "--service", SERVICE, "--policy", str(policy)]
    args += ["--report", str(folder / f"{name}.json"), *flags]
    env = {
        **os.environ,
        "DEPLOY_GUARD_EMULATOR_HOST": host,
        "GOOGLE_CLOUD_PROJECT": "local-project",
        "CLOUDSDK_RUN_REGION": "us-central1",
    }
    with (folder / f"{name}.log").open("wb") as log:  # its JSON log lines, for a post-mortem
        return subprocess.Popen(
            [sys.executable, "-m", "deploy_guard", *args], env=env, stderr=log, stdout=log
        )


def finish(proc: subprocess.Popen[bytes], folder: Path, name: str, within: float) -> Any:
    """The watch's exit code and report, once it ends by itself (killed if it does not)."""
    try:
        code = proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"the watch {name} outlived its --for by far: see {folder}") from None
    finally:
        if proc.poll() is None:  # timed out, or the bench was interrupted
            proc.kill()
            proc.wait()
    report = folder / f"{name}.json"
    return code, json.loads(report.read_text()) if report.exists() else {}


def _emulator() -> Any:
    from deploy_guard.emulator.server import EmulatorThread
    from deploy_guard.log import configure

    configure(level="warning")  # the in-process emulator's own log lines
    return EmulatorThread(startup_timeout=30.0).start()


# -- the runs -----------------------------------------------------------------------------


def rollback_runs(demo: Any, folder: Path, *, canary: bool, reps: int) -> None:
    """Section 1, one way: ``reps`` promoted revisions that turn bad, each watched and undone."""
    from bench.sampling import Ticker

    mode = "canary" if canary else "logs"
    policy = folder / f"watch-{mode}.yaml"
    policy.write_text(watch_policy(f"bench-watch-{mode}", canary))
    emulator = _emulator()
    timings: list[RollbackTiming] = []
    try:
        deployer = demo.Deployer(emulator.address)
        base = deployer.first()
        url = str(deployer.clients.services().get_service(name=deployer.name).uri)
        ws_url = url.replace("http", "ws", 1) + "/ws/chat"
        users = Ticker(0.25, lambda n: one_session(ws_url, n)) if not canary else None
        print(
            f"1.{1 if canary else 2} {mode}-driven: {reps} promoted revisions turning bad "
            f"{BAD_AFTER:g} s into their life" + ("" if canary else ", users every 0.25 s")
        )
        with users or contextlib.nullcontext():
            for rep in range(reps):
                timings.append(_one_rollback(deployer, emulator.address, base, policy, rep))
        deployer.clients.close()
    finally:
        emulator.stop()
    for what, field in (
        ("first bad -> verified (report)   ", "reported"),
        ("fail judged -> verified (timeline)", "judged"),
        ("1011 logged -> verified (emulator)", "logged"),
    ):
        print(f"   {what}: {spread([getattr(t, field) for t in timings])}")
    print("   target < 1 s")


def _one_rollback(deployer: Any, host: str, base: str, policy: Path, rep: int) -> RollbackTiming:
    """One promoted revision that turns bad, watched until the watch rolls it back."""
    from bench.bench_gate import first_entry

    # a template like the last one makes no new revision: each rep's is its own
    env = {"CHAT_BAD_AFTER": f"{BAD_AFTER:g}", "DEMO_REVISION": f"{policy.stem}-{rep}"}
    cand = deployer.candidate(env, tag=None)
    promote(deployer, base, cand)
    name = f"{policy.stem}-{rep}"
    code, doc = finish(start_watch(host, policy, name, "--for", "60s"), policy.parent, name, 120)
    first = first_entry(deployer, cand, 'jsonPayload.message=~"close code 1011"')
    timing = rollback_timing(doc, first)
    print(
        f"   {cand}: exit {code}, {doc.get('action')} by {doc.get('deciding_rules')} (logs "
        f"{doc.get('watch', {}).get('logs_mode')}), traffic after {doc.get('traffic_after')}; "
        f"{_ms(timing.reported)} reported, {_ms(timing.judged)} judged->verified, "
        f"{_ms(timing.logged)} logged->verified"
    )
    return timing


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def long_watch(demo: Any, folder: Path, *, minutes: float, rate: float) -> None:
    """Sections 2 to 5: a healthy revision watched for ``minutes`` with the shipped policy."""
    from bench.bench_rollout import CallClock
    from bench.sampling import WARM, ProcSampler, Ticker, cpu_shares, every, usage

    policy = _long_policy(folder)
    emulator = _emulator()
    try:
        deployer = demo.Deployer(emulator.address)
        base = deployer.first()
        cand = deployer.candidate({"DEMO_REVISION": "2"}, tag=None)
        promote(deployer, base, cand)
        faults = emulator.faults
        before = {m: faults.count(m) for m in ("TailLogEntries", "ListLogEntries")}
        proc = start_watch(emulator.address, policy, "long", "--for", f"{minutes * 60:g}s")
        with (
            ProcSampler(proc.pid, emulator.tails.open_sessions) as sampler,
            CallClock(faults, "ListTimeSeries") as clock,
            Ticker(1.0 / rate if rate else 3600.0, steady_line(emulator, cand, rate)) as writer,
        ):
            code, doc = finish(proc, folder, "long", minutes * 60 + 120)
        opened = {m: faults.count(m) - n for m, n in before.items()}
        deployer.clients.close()
    finally:
        emulator.stop()
    print(
        f"2. healthy {cand} watched {minutes:g} min with policies/chat-agent.yaml's watch: "
        f"exit {code}, verdict {doc.get('verdict')}, action {doc.get('action')}"
    )
    if len(sampler.samples) < 2:
        print("   no samples of the watcher's process")
        return
    use = usage(sampler.samples, warm=min(WARM, minutes * 30))
    print(
        f"   CPU {use.cpu_percent:.2f} % of one core over {use.seconds:.0f} s "
        f"({use.cpu_percent_warm:.2f} % after the first {min(WARM, minutes * 30):g} s); "
        "target < 2 %"
    )
    print(
        f"   RSS max {use.rss_max / MIB:.1f} MiB; first {use.rss_first / MIB:.1f}, after "
        f"warm-up {use.rss_warm / MIB:.1f}, end {use.rss_end / MIB:.1f} MiB; target < 100 MiB"
    )
    minutely = " ".join(f"{s.rss / MIB:.0f}" for s in every(sampler.samples))
    print(f"   RSS each minute (MiB): {minutely}")
    shares = " ".join(f"{c:.1f}" for c in cpu_shares(sampler.samples))
    print(f"   CPU each minute (% of one core): {shares}")
    watch = doc.get("watch", {})
    calls = doc.get("api_calls", {})
    print(
        f"3. logs: {watch.get('logs_mode')} mode; TailLogEntries opened {opened['TailLogEntries']}"
        f" (the watcher's count {watch.get('tail_opens')}), at most {sampler.also_max} open at "
        f"once; ListLogEntries {opened['ListLogEntries']} (catch-up reads); target 1 stream"
    )
    print(f"   the report's api_calls: {calls}")
    _metric_reads(doc, clock.stamps, rules=2)
    print(
        f"5. steady log stream: {writer.done if rate else 0} lines at {rate:g}/s, streamed and "
        "counted; "
        f"RSS after warm-up {use.rss_warm / MIB:.1f} MiB -> end {use.rss_end / MIB:.1f} MiB "
        f"({(use.rss_end - use.rss_warm) / MIB:+.1f} MiB)"
    )


def _metric_reads(doc: dict[str, Any], stamps: list[datetime], rules: int) -> None:
    """Section 4: the ``ListTimeSeries`` calls, stamped, grouped into reads."""
    from bench.sampling import bursts, gaps

    first = doc["timeline"][0]
    zero = datetime.fromisoformat(first["at"]).timestamp() - first["t"]
    times = sorted(s.timestamp() - zero for s in stamps)
    reads = bursts(times)
    between = gaps([t for t, _ in reads])
    sizes = sorted({n for _, n in reads})
    print(
        f"4. metrics: {len(times)} ListTimeSeries calls in {len(reads)} reads of the {rules} "
        f"metric rules (calls per read {sizes}: error_rate 1, latency 2); "
        + (f"the first {reads[0][0]:.0f} s in" if reads else "none yet")
        + f" (none before Monitoring's lag); the watcher's passes "
        f"{doc.get('watch', {}).get('metric_reads')}"
    )
    if between:
        print(
            f"   between reads: min {min(between):.2f} s, mean "
            f"{statistics.mean(between):.2f} s -> {60 / min(between):.2f} reads per rule per "
            "minute at most; target <= 1"
        )


def _long_policy(folder: Path) -> Path:
    """The shipped chat policy, with the steady lines' rule added (nothing else changed)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc: Any = yaml.load((ROOT / "policies" / "chat-agent.yaml").read_text())
    doc["rules"].append(STEADY_RULE)
    out = folder / "chat-agent-long.yaml"
    with out.open("w") as fh:
        yaml.dump(doc, fh)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_watch", description=__doc__)
    default_minutes = float(os.environ.get("BENCH_WATCH_MINUTES", MINUTES))
    parser.add_argument("--minutes", type=float, default=default_minutes)
    parser.add_argument("--reps", type=int, default=REPS, help="rollbacks per way")
    parser.add_argument("--rate", type=float, default=RATE, help="steady log lines a second")
    parser.add_argument("--only", choices=["rollback", "long"], help="one part only")
    args = parser.parse_args(argv if argv is not None else [])
    from bench.bench_gate import load_demo

    demo = load_demo()
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        folder = Path(tmp)
        if args.only != "long":
            rollback_runs(demo, folder, canary=True, reps=args.reps)
            rollback_runs(demo, folder, canary=False, reps=args.reps)
        if args.only != "rollback":
            long_watch(demo, folder, minutes=args.minutes, rate=args.rate)


if __name__ == "__main__":
    main(sys.argv[1:])
