"""SIGINT and SIGTERM outside an event loop: noted, then acted on where stopping is safe.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main
thread happens to be: inside an import, a policy validation, a library that
swallows it (pydantic does, and the check then runs to the end and may promote).
So from the entry point on, the first SIGINT or SIGTERM is only *recorded*.
Commands look at :func:`pending` at their safe points, and their event loops take
over while they run (:func:`deploy_guard.commands.cancelled_by_signals`, which
puts the deferral back when the block ends). A second signal is not
deferred: it stops the process at once (exit 130 for SIGINT, the default death
for SIGTERM), which is what pressing Ctrl-C twice asks for.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

#: The signals deploy-guard turns into a clean stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_pending: list[str] = []


def defer() -> None:
    """Record the first SIGINT/SIGTERM instead of acting on it (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _note)


def pending() -> str | None:
    """The name of the first stop signal received so far (``"SIGTERM"``), or None."""
    return _pending[0] if _pending else None


def note(name: str) -> None:
    """Record a stop signal that an event loop's own handler received."""
    _pending.append(name)


def stop_now(name: str) -> None:
    """A second stop signal: end the process at once, skipping every clean-up.

    Exit 130 for SIGINT; for SIGTERM the default death (143), as a supervisor
    that sends it twice expects.
    """
    sig = signal.Signals[name]
    sys.stderr.write(f"\n{name}: a second stop signal; stopping at once, without clean-up\n")
    sys.stderr.flush()
    if sig == signal.SIGINT:
        os._exit(130)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def _note(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _pending:  # the second one
        stop_now(name)
        return
    _pending.append(name)
