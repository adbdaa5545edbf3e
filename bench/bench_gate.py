"""The gate's speed: how fast a 1011 becomes a verified rollback, and what a check costs.

Three measurements, in one run, against the local emulator with the chat agent
(the check runs as a subprocess, the way Cloud Build runs it):

1. **1011 to rollback verified**: a canary holding 10 % closes every session with
   1011 at 7 s. From the first 1011 (the revision's own log entry, wall clock) and
   from the guard seeing it (timeline), to the re-read that shows traffic back on
   the baseline. Target: under 1 s (Flagger's defaults take about 5 minutes).
2. **Healthy check overhead**: wall time of a passing check beyond its longest
   probe hold, for the CLI process (imports included) and inside the gate.
   Target: under 1 s.
3. **Cloud API calls of a 60 s check** (the shipped policy, default intervals),
   against Cloud Logging's read quota of 60 per minute per project.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_demo() -> Any:
    """The demo's helpers (emulator start/stop, deployer, check runner)."""
    spec = importlib.util.spec_from_file_location("deploy_guard_demo", ROOT / "examples/demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def first_entry(deployer: Any, revision: str, clause: str) -> datetime | None:
    """When the revision first logged an entry matching ``clause`` (a Logging filter term)."""
    flt = (
        f'resource.type="cloud_run_revision" AND resource.labels.revision_name="{revision}" '
        f'AND {clause} AND timestamp>="2000-01-01T00:00:00Z"'
    )
    entries = deployer.clients.logging().list_log_entries(
        request={
            "resource_names": ["projects/local-project"],
            "filter": flt,
            "order_by": "timestamp asc",
            "page_size": 1,
        }
    )
    for entry in entries:
        return entry.timestamp  # type: ignore[no-any-return]
    return None


def _first_1011(deployer: Any, revision: str) -> datetime | None:
    return first_entry(deployer, revision, 'jsonPayload.message=~"close code 1011"')


def _report(folder: Path, name: str) -> dict[str, Any]:
    return json.loads((folder / f"{name}.json").read_text())  # type: ignore[no-any-return]


def rollback_latency(demo: Any, folder: Path) -> None:
    emulator, host = demo.start_emulator()
    try:
        deployer = demo.Deployer(host)
        base = deployer.first()
        cand = deployer.candidate({"CHAT_FAIL_1011_AFTER": "7"}, tag="candidate", percent=10)
        policy = demo.demo_policy("15s", folder)
        code = demo.check(host, cand, policy, "rollback", folder=folder, quiet=True)
        doc = _report(folder, "rollback")
        first = _first_1011(deployer, cand)
        verified = next(e for e in doc["timeline"] if e["event"] == "rollback_verified")
        seen_to_verified = next(
            (
                v["t"] - s["t"]
                for s in doc["timeline"]
                if s["event"] == "first_failure_seen"
                for v in doc["timeline"]
                if v["event"] == "rollback_verified"
            ),
            None,
        )
        wall = (datetime.fromisoformat(verified["at"]) - first).total_seconds() if first else None
        print(f"1. canary {cand} at 10 % (1011 at 7 s): exit {code}, action {doc['action']}")
        print(f"   traffic before {doc['traffic_before']} -> after {doc['traffic_after']} ({base})")
        print(f"   first 1011 logged by the revision -> rollback verified: {wall:.3f} s")
        print(f"   guard saw the failure -> rollback verified:         {seen_to_verified:.3f} s")
        print("   target < 1 s; Flagger's defaults: ~300 s")
        deployer.clients.close()
    finally:
        demo.stop(emulator)


def healthy_overhead(demo: Any, folder: Path, hold: float = 5.0) -> None:
    emulator, host = demo.start_emulator()
    try:
        deployer = demo.Deployer(host)
        deployer.first()
        cand = deployer.candidate({"DEMO_REVISION": "2"}, tag="candidate")
        policy = demo.demo_policy(f"{hold:g}s", folder)
        start = time.monotonic()
        code = demo.check(host, cand, policy, "healthy", folder=folder, quiet=True)
        wall = time.monotonic() - start
        doc = _report(folder, "healthy")
        at = {e["event"]: e["t"] for e in doc["timeline"]}
        gate = at["check_finished"]
        evidence = gate - at["evidence_started"]
        print(f"2. healthy check, longest hold {hold:g} s: exit {code}, verdict {doc['verdict']}")
        print(f"   CLI process wall time {wall:.3f} s -> beyond the hold: {wall - hold:.3f} s")
        print(f"   inside the gate       {gate:.3f} s -> beyond the hold: {gate - hold:.3f} s")
        print(
            f"   evidence phase        {evidence:.3f} s -> beyond the hold: {evidence - hold:.3f} s"
        )
        print(
            f"   (before evidence: {at['evidence_started']:.3f} s resolving service and revision,"
        )
        print("    mostly importing the Google client; the CLI's own start-up is the rest)")
        print("   target < 1 s beyond the hold")
        deployer.clients.close()
    finally:
        demo.stop(emulator)


def api_calls_of_a_60s_check(demo: Any, folder: Path) -> None:
    emulator, host = demo.start_emulator()
    try:
        deployer = demo.Deployer(host)
        deployer.first()
        cand = deployer.candidate({"DEMO_REVISION": "2"}, tag="candidate")
        code = demo.check(host, cand, demo.POLICY, "sixty", folder=folder, quiet=True)
        doc = _report(folder, "sixty")
        minutes = doc["duration_s"] / 60
        reads = doc["api_calls"].get("logging", {}).get("ListLogEntries", 0)
        print(f"3. the shipped policy (60 s hold), default intervals: exit {code}")
        print(f"   duration {doc['duration_s']:.1f} s; Cloud API calls {doc['api_calls']}")
        print(
            f"   Cloud Logging reads: {reads} ({reads / minutes:.1f}/min) vs the quota of "
            f"60/min per project: {reads / minutes / 60:.0%} of it"
        )
        deployer.clients.close()
    finally:
        demo.stop(emulator)


def main() -> None:
    demo = load_demo()
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
        folder = Path(tmp)
        rollback_latency(demo, folder)
        healthy_overhead(demo, folder)
        api_calls_of_a_60s_check(demo, folder)


if __name__ == "__main__":
    main()
