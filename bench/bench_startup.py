"""Start-up cost of the commands that must stay fast, against ``python -c pass``.

``deploy-guard --help`` and ``deploy-guard policy validate policies/`` run in
pre-commit hooks and editors; they must not import the Google client
libraries (~270 ms). Each command runs in a fresh interpreter, the runs are
interleaved so that machine noise hits all of them alike, and the median is
reported with its ratio to a bare interpreter measured in the same run.

Also prints, without asserting, whether any Google or gRPC module is loaded
after importing everything the policy commands and the judge need.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = 9

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "deploy-guard --help": [sys.executable, "-m", "deploy_guard", "--help"],
    "deploy-guard policy validate policies/": [
        sys.executable,
        "-m",
        "deploy_guard",
        "policy",
        "validate",
        "policies/",
    ],
    "import the 3 Google client libraries": [
        sys.executable,
        "-c",
        "import google.cloud.run_v2, google.cloud.logging_v2, google.cloud.monitoring_v3",
    ],
}

PROBE = """
import sys
import deploy_guard.cli, deploy_guard.commands.policy, deploy_guard.policy, deploy_guard.judge
from deploy_guard.cli import main
try:
    main(["policy", "validate", "policies/"])
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("google", "grpc"))
print("google.cloud" in sys.modules, len(loaded), ",".join(loaded[:5]))
"""


def _once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )
    return time.perf_counter() - start


def main() -> None:
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for argv in COMMANDS.values():  # warm the OS file cache once
        _once(argv)
    for _ in range(RUNS):
        for name, argv in COMMANDS.items():
            samples[name].append(_once(argv))
    base = statistics.median(samples["python -c pass"])
    print(f"{'command':42} {'median ms':>10} {'x python':>9}   ({RUNS} runs each, interleaved)")
    for name, times in samples.items():
        median = statistics.median(times)
        print(f"{name:42} {median * 1000:10.1f} {median / base:9.2f}")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=False
    )
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()
    print(
        f"after the CLI + policy validate + judge imports: google.cloud in sys.modules, "
        f"google/grpc modules loaded, first few = {line}"
    )


if __name__ == "__main__":
    main()
