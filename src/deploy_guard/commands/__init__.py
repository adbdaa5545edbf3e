"""Command modules: one per ``deploy-guard`` subcommand, imported lazily by the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: What `deploy-guard emulator` serves unless started with --project / --region.
EMULATOR_DEFAULTS = "--project local-project --region us-central1"


def terminal_output(*, keep_explicit_level: bool = True) -> bool:
    """True when the command draws its own progress on a terminal; quiets info logs then.

    On a terminal a command's progress lines (or live view) are what a person
    reads; structlog's info events interleaved with them would tear the output.
    So when stderr is a TTY and logs are not forced to JSON, only warnings and
    errors are logged, unless ``--log-level`` (or ``DEPLOY_GUARD_LOG_LEVEL``)
    asked for a level and ``keep_explicit_level`` honours it. Off a terminal
    (Cloud Build, CI, a pipe) nothing changes: every event is logged as JSON.
    """
    import click
    from click.core import ParameterSource

    from deploy_guard import log as guard_log

    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    fmt = (root.params.get("log_format") if root is not None else None) or os.environ.get(
        "DEPLOY_GUARD_LOG_FORMAT", "auto"
    )
    if not sys.stderr.isatty() or fmt == "json":
        return False
    explicit = root is not None and root.get_parameter_source("log_level") not in (
        None,
        ParameterSource.DEFAULT,
    )
    if not (explicit and keep_explicit_level):
        guard_log.configure(level="warning")
    return True


def location_options(command: F) -> F:
    """``--region`` and ``--project`` as every Cloud Run command takes them (from the
    environment gcloud users already set); :func:`missing_project_region` checks them."""
    import click

    command = click.option(
        "--project",
        envvar="GOOGLE_CLOUD_PROJECT",
        metavar="PROJECT",
        help="Project id [env GOOGLE_CLOUD_PROJECT].",
    )(command)
    return click.option(
        "--region",
        envvar="CLOUDSDK_RUN_REGION",
        metavar="REGION",
        help="Cloud Run region [env CLOUDSDK_RUN_REGION].",
    )(command)


def run_or_exit(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; a :class:`~deploy_guard.errors.GuardError` (google-auth's
    "not logged in" mapped to one) ends the command: its message, redacted, on stderr
    and its exit code."""
    import click

    from deploy_guard.errors import GuardError
    from deploy_guard.gcp.errors import map_credentials_error
    from deploy_guard.log import redact_text

    try:
        try:
            return asyncio.run(main)
        except Exception as exc:  # google-auth's "not logged in" is the user's to fix
            mapped = map_credentials_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
    except GuardError as exc:
        click.echo(f"error: {redact_text(str(exc))}", err=True)
        sys.exit(int(exc.exit_code))


def missing_project_region(project: str | None, region: str | None) -> str | None:
    """The error for a missing --project / --region (None when both are there)."""
    flags = (
        ("--project", "GOOGLE_CLOUD_PROJECT", project),
        ("--region", "CLOUDSDK_RUN_REGION", region),
    )
    missing = [(flag, env) for flag, env, value in flags if not value]
    if not missing:
        return None
    text = (
        f"missing {' and '.join(flag for flag, _ in missing)}: "
        f"pass {'it' if len(missing) == 1 else 'them'}, "
        f"or set {' and '.join(env for _, env in missing)}"
    )
    if os.environ.get("DEPLOY_GUARD_EMULATOR_HOST"):
        text += f" (the local emulator serves {EMULATOR_DEFAULTS} unless started with others)"
    return text


@contextlib.asynccontextmanager
async def cancelled_by_signals(
    announce: Callable[[str], None] | None = None,
) -> AsyncIterator[list[str]]:
    """While the block runs, the first SIGINT or SIGTERM cancels the running task.

    The loop-side twin of :mod:`deploy_guard.signals` (which defers signals
    from the entry point on): a signal received before the block started
    cancels it at its first ``await``. Yields a list that receives the
    signal's name (``"SIGTERM"``): the caller catches
    :class:`asyncio.CancelledError` (or finds the list filled after a clean-up
    swallowed the cancellation) and reports an interruption, exit 3. A second
    signal, while the cancelled work cleans up, ends the process promptly
    (:func:`deploy_guard.signals.stop_now`: the command's last word, such as the
    check's reports, then exit 130/143 or the decided outcome's code). On the way out the
    handlers that were in place before (the CLI's deferral, or Python's) are
    put back. Outside the main thread nothing is installed. ``announce`` is
    called with the signal's name the moment it cancels (a log line, say).
    """
    from deploy_guard import signals

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    caught: list[str] = []

    def on_signal(name: str, *, noted: bool = False) -> None:
        if caught:  # the second one: the person insists
            signals.stop_now(name)
            return
        if task is not None:
            caught.append(name)
            if not noted:
                signals.note(name)
            if announce is not None:
                announce(name)
            task.cancel()

    before: dict[signal.Signals, Any] = {}
    for sig in signals.STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal, sig.name)
            before[sig] = previous
    early = signals.pending()
    if early is not None:  # it came before the loop took over
        on_signal(early, noted=True)
    try:
        yield caught
    finally:
        for sig, previous in before.items():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, TypeError):
                loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)
