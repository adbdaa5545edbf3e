"""SIGINT and SIGTERM outside an event loop: noted, then acted on where stopping is safe.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the main
thread happens to be: inside an import, a policy validation, a library that
swallows it (pydantic does, and the check then runs to the end and may promote).
So from the entry point on, the first SIGINT or SIGTERM is only *recorded*.
Commands look at :func:`pending` at their safe points, and their event loops take
over while they run (:func:`deploy_guard.commands.cancelled_by_signals`, which
puts the deferral back when the block ends).

A second signal is not deferred: :func:`stop_now` ends the process promptly,
without the clean-up the first one allows (no Cloud Run write is waited for).
It first gives the command its *last word* (:func:`on_second_signal`): the
check writes its reports there, with the true state, and names the exit code.
Without a last word the code is 128 + the signal's number (130 for SIGINT, 143
for SIGTERM), the shell's convention for "stopped by that signal". Once a
command's outcome is final (:func:`settle`), any stop signal ends the process
at once with that outcome's code, and none can turn it into a death by signal
while the interpreter tears down.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

#: The signals deploy-guard turns into a clean stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds the last word may take (writing the reports) before the process ends anyway.
LAST_WORD_BOUND = 5.0

#: What a command does on a second signal: given the signal's name and the settled
#: exit code (None while the outcome is open), write what it must; return the exit code.
LastWord = Callable[[str, int | None], int]

_pending: list[str] = []
_last_word: list[LastWord] = []
_settled: list[int] = []
_stopping: list[str] = []
#: The code the process ends with if the last word overruns its bound.
_exit_code: list[int] = []
_teardown_quieted: list[bool] = []


def defer() -> None:
    """Record the first SIGINT/SIGTERM instead of acting on it (main thread only)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _note)
    if not _teardown_quieted:
        # Registered when the CLI starts, before any library registers its own, so it
        # runs last among atexit handlers: after it only the interpreter's C teardown
        # is left, where Python resets signal handlers to the default (a stop signal
        # there would kill the process and replace its exit code) but keeps SIG_IGN.
        _teardown_quieted.append(True)
        atexit.register(_quiet_teardown)


def pending() -> str | None:
    """The name of the first stop signal received so far (``"SIGTERM"``), or None."""
    return _pending[0] if _pending else None


def note(name: str) -> None:
    """Record a stop signal that an event loop's own handler received."""
    _pending.append(name)


def on_second_signal(last_word: LastWord | None) -> None:
    """Register what :func:`stop_now` runs before the process ends (None: nothing)."""
    _last_word[:] = [last_word] if last_word is not None else []


def settle(code: int) -> None:
    """The command's outcome is final: from now on a stop signal exits with ``code`` at once.

    Nothing is left to stop safely (the reports are written, or being written):
    the process may still wait for worker threads (a cancelled API read, bounded
    by ``--api-retry``) or tear the interpreter down, and a signal then must
    neither cost that time nor change the exit code a pipeline reads.
    """
    _settled[:] = [code]


def settled() -> int | None:
    """The exit code :func:`settle` fixed, or None while the outcome is open."""
    return _settled[0] if _settled else None


def exit_with(code: int) -> None:
    """Called by a last word as soon as it knows the exit code, before its writes.

    Should a write then hang (a stalled disk, a full pipe on stderr), the
    process still ends after :data:`LAST_WORD_BOUND` with this code, the one
    the report says, rather than the signal's.
    """
    _exit_code[:] = [code]


def signal_exit_code(name: str) -> int:
    """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signal.Signals[name])


def stop_now(name: str) -> None:
    """A second stop signal (or any after :func:`settle`): end the process promptly.

    The last word runs first (the check writes its reports), bounded by
    :data:`LAST_WORD_BOUND`; further stop signals meanwhile are ignored. The
    exit code is the one the last word returns, else the settled one, else
    :func:`signal_exit_code`.
    """
    if _stopping:  # a third signal while the last word is said: it ends the process anyway
        return
    _stopping.append(name)
    for sig in STOP_SIGNALS:  # process-wide, so no thread dies of one either
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)
    code = settled()
    if code is None:
        code = signal_exit_code(name)
    exit_with(code)
    watchdog = threading.Timer(LAST_WORD_BOUND, lambda: os._exit(_exit_code[0]))
    watchdog.daemon = True
    watchdog.start()
    if _last_word:
        try:
            code = _last_word[0](name, settled())
            exit_with(code)
        except Exception as exc:  # the process ends anyway, with the code it had
            code = _exit_code[0]
            sys.stderr.write(f"\n{name}: could not finish the last word: {exc!r}\n")
    if settled() is None:
        sys.stderr.write(
            f"\n{name}: a second stop signal; stopped without clean-up (exit {code})\n"
        )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _note(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _pending or _settled:  # the second one, or the outcome is final already
        stop_now(name)
        return
    _pending.append(name)


def _quiet_teardown() -> None:
    """The exit code is decided: ignore stop signals while the interpreter tears down."""
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)
