"""What a deploy on the emulator costs, against the cost of starting the revision alone.

- baseline: spawn ``tests/apps/revision_app.py`` and wait until its port
  accepts a connection (what any local run of the app pays);
- deploy: ``CreateService`` / ``UpdateService`` with a new template through the
  official client, polled to done (process start + reconcile + routing);
- traffic-only ``UpdateService`` (no process starts) and ``GetService``, per call.

All in one run; the ratio deploy/baseline is the emulator's overhead on a
deploy and the one figure worth comparing across machines.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from google.api_core import retry
from google.api_core.future import polling
from google.cloud import run_v2

from deploy_guard.gcp.clients import Clients
from deploy_guard.log import configure

APP = Path(__file__).resolve().parent.parent / "tests" / "apps" / "revision_app.py"
ROUNDS = 8
CALLS = 200
FAST = retry.Retry(
    predicate=polling.POLLING_PREDICATE, initial=0.01, maximum=0.05, multiplier=1.5, timeout=60
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def baseline_start() -> float:
    """Seconds from spawn to a listening port for the bare app."""
    port = _free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(APP)],
        env={**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return time.perf_counter() - started
            except OSError:
                if time.perf_counter() - started > 30:
                    raise TimeoutError("the app never listened") from None
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait()


def _template(n: int) -> run_v2.RevisionTemplate:
    return run_v2.RevisionTemplate(
        containers=[
            run_v2.Container(
                image="bench",
                command=[sys.executable, str(APP)],
                env=[run_v2.EnvVar(name="N", value=str(n))],
            )
        ]
    )


def main() -> None:
    configure(json=True, level="error")
    # Imported after configure(): its module-level loggers bind the configuration at import.
    from deploy_guard.emulator.server import EmulatorThread

    base: list[float] = []
    with EmulatorThread() as emu:
        clients = Clients(host=emu.address)
        services = clients.services()
        deploys: list[float] = []
        base.append(baseline_start())  # interleaved with deploys: both see the same load
        started = time.perf_counter()
        svc = services.create_service(
            parent=emu.parent, service=run_v2.Service(template=_template(0)), service_id="bench"
        ).result(timeout=60, polling=FAST)
        deploys.append(time.perf_counter() - started)
        for n in range(1, ROUNDS):
            svc.template = _template(n)
            base.append(baseline_start())
            started = time.perf_counter()
            svc = services.update_service(service=svc).result(timeout=60, polling=FAST)
            deploys.append(time.perf_counter() - started)

        traffic_only: list[float] = []
        first = svc.latest_ready_revision.rsplit("/", 1)[-1]
        for n in range(CALLS // 4):
            svc.traffic = [
                run_v2.TrafficTarget(
                    type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                    revision=first,
                    percent=100,
                    tag=f"t{n % 2}",
                )
            ]
            started = time.perf_counter()
            svc = services.update_service(service=svc).result(timeout=60, polling=FAST)
            traffic_only.append(time.perf_counter() - started)

        gets: list[float] = []
        for _ in range(CALLS):
            started = time.perf_counter()
            services.get_service(name=svc.name)
            gets.append(time.perf_counter() - started)
        clients.close()

    b, d = statistics.median(base), statistics.median(deploys)
    print(f"baseline app start to listening   median {b * 1000:8.1f} ms  ({ROUNDS} runs)")
    print(f"deploy (new revision) to done      median {d * 1000:8.1f} ms  ({ROUNDS} runs)")
    print(f"  ratio deploy / baseline          {d / b:8.2f}x")
    print(
        f"traffic-only UpdateService         median "
        f"{statistics.median(traffic_only) * 1000:8.1f} ms  ({len(traffic_only)} calls)"
    )
    print(
        f"GetService                         median "
        f"{statistics.median(gets) * 1000:8.2f} ms  ({len(gets)} calls)"
    )


if __name__ == "__main__":
    main()
