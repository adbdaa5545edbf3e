"""The rollout record's holder: a process gone on this host does not hold a rollout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from deploy_guard.gcp.rollouts import RolloutRecord, holder_gone


def record(by: str) -> RolloutRecord:
    now = datetime.now(UTC)
    return RolloutRecord("svc-2", {"svc-1": 100}, 1, 10, ((10, 60.0),), by, now, now + timedelta(1))


def test_a_holder_whose_process_ended_on_this_host_is_gone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    pid = int(done.stdout)
    assert holder_gone(record(f"{socket.gethostname()}/{pid}"))
    assert holder_gone(record(f"build abc ({socket.gethostname()}/{pid})"))


def test_a_live_holder_or_one_on_another_host_is_not_gone() -> None:
    here = socket.gethostname()
    assert not holder_gone(record(f"{here}/{os.getppid()}"))  # alive
    assert not holder_gone(record(f"{here}/{os.getpid()}"))  # this very process
    assert not holder_gone(record("another-host/1"))
    assert not holder_gone(record("whoever"))
