"""Threads that read Google APIs ask for their client before they import its library.

A watch starts its live tail, its first ``ListLogEntries`` pass and its metric reads at
the same moment, each in a thread of its own. When two threads import one package at
once, Python's import locks can answer a ``_DeadlockError``: seen by hand as "the live
tail broke: _DeadlockError (deadlock detected by _ModuleLock(...))" and a watch polling
for half a minute for nothing. :class:`~deploy_guard.gcp.clients.Clients` builds every
client under one lock, so the library is imported once, by one thread, as long as no
thread imports it before asking for the client. Each check runs in a fresh interpreter,
where the libraries are not imported yet.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import asyncio, sys
from datetime import UTC, datetime

class Clients:
    '''Says whether the library was imported before its client was asked for.'''

    def logging(self):
        return self._asked("google.cloud.logging_v2")

    def metrics(self):
        return self._asked("google.cloud.monitoring_v3")

    def _asked(self, library):
        print("imported first" if library in sys.modules else "client first")
        raise RuntimeError("enough")
"""

TAIL = """
from deploy_guard.gcp.tailstream import GrpcTail
assert "google.cloud.logging_v2" not in sys.modules

async def main():
    try:
        async for _ in GrpcTail(Clients(), "p")("severity>=ERROR", False):
            pass
    except RuntimeError:
        pass

asyncio.run(main())
"""

METRICS = """
from deploy_guard.gcp.metrics import CloudMonitoring
assert "google.cloud.monitoring_v3" not in sys.modules
source = CloudMonitoring(
    Clients(), project="p", service="s", revision="s-1", rules=[], since=datetime.now(UTC)
)
try:
    source._query(
        "run.googleapis.com/request_count", "s-1", datetime.now(UTC), datetime.now(UTC),
        aligner="ALIGN_DELTA", reducer="REDUCE_SUM", group_by=[],
    )
except RuntimeError:
    pass
"""


@pytest.mark.parametrize("reader", [TAIL, METRICS], ids=["tail", "metrics"])
def test_the_client_is_asked_for_before_its_library_is_imported(reader: str) -> None:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(reader)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["client", "first"], result.stdout
