"""Command modules: one per ``deploy-guard`` subcommand, imported lazily by the CLI."""

from __future__ import annotations

import os
import sys

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


def missing_project_region(project: str | None, region: str | None) -> str | None:
    """The error for a missing --project / --region (None when both are there)."""
    missing = [flag for flag, value in (("--project", project), ("--region", region)) if not value]
    if not missing:
        return None
    text = (
        f"missing {' and '.join(missing)}: pass them, or set GOOGLE_CLOUD_PROJECT and "
        "CLOUDSDK_RUN_REGION"
    )
    if os.environ.get("DEPLOY_GUARD_EMULATOR_HOST"):
        text += f" (the local emulator serves {EMULATOR_DEFAULTS} unless started with others)"
    return text
