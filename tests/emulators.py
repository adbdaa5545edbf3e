"""An emulator for a test or a fixture (``from emulators import running_emulator``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from deploy_guard.emulator.server import EmulatorThread


@contextlib.contextmanager
def running_emulator(**options: Any) -> Iterator[EmulatorThread]:
    """An emulator started with ``options`` (revisions get 10 s to listen), stopped after."""
    emu = EmulatorThread(**{"startup_timeout": 10.0, **options})
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
