"""``deploy-guard check --cloud-deploy``: the check as a Cloud Deploy verify container.

The flags are check's; what this module adds is where the target comes from
(Cloud Deploy's ``CLOUD_DEPLOY_*`` and ``CLOUD_RUN_*`` variables, read by
:mod:`deploy_guard.runtime.cloud_deploy_env`, flags given on the command line
winning) and which driver runs (:class:`~deploy_guard.runtime.cloud_deploy.VerifyGate`,
which writes nothing). Everything after that is :func:`~deploy_guard.commands.launch.launch`'s:
policies validated before any API call, reports always written, the exit code
the outcome's. A variable missing or garbled is exit 2, with the reports
written, before any API call.
"""

from __future__ import annotations

import os
from typing import Any

import click

from deploy_guard.errors import ConfigError, GuardError
from deploy_guard.report.model import CheckReport

#: The flags whose command-line value wins over Cloud Deploy's variables.
TARGET_FLAGS = ("project", "region", "service", "revision")


def _given(flags: dict[str, Any]) -> dict[str, str | None]:
    """The target flags as typed on the command line (not from GOOGLE_CLOUD_PROJECT & co.)."""
    from click.core import ParameterSource

    commandline = ParameterSource.COMMANDLINE
    ctx = click.get_current_context(silent=True)
    given: dict[str, str | None] = {}
    for name in TARGET_FLAGS:
        source = ctx.get_parameter_source(name) if ctx is not None else None
        given[name] = flags.get(name) if ctx is None or source is commandline else None
    return given


def launch_verify(
    revision: str | None, flags: dict[str, Any], *, promote: bool, dry_run: bool
) -> None:
    """Read the phase from the environment, then run the check with :class:`VerifyGate`."""
    from deploy_guard.commands.launch import _fail_early, launch
    from deploy_guard.runtime.cloud_deploy import VerifyGate, VerifyOptions
    from deploy_guard.runtime.cloud_deploy_env import resolve

    given = {**_given(flags), "revision": revision}
    try:
        if promote:
            raise ConfigError(
                "--promote cannot go with --cloud-deploy: Cloud Deploy owns the traffic (it "
                "advances the rollout when the verify job exits 0)"
            )
        fallback = os.environ.get("GOOGLE_CLOUD_PROJECT")
        target = resolve(os.environ, given, fallback_project=fallback)
    except GuardError as exc:
        report = CheckReport(revision=revision or "")
        report.service = flags.get("service") or ""
        paths = flags["report_path"], flags["summary_path"], flags.get("html_path")
        _fail_early(report, exc, *paths)
        raise AssertionError("unreachable") from None
    resolved = {
        **flags,
        "project": target.project,
        "region": target.region,
        "service": target.service,
    }

    def prepare(report: CheckReport) -> None:
        report.cloud_deploy = target.phase.as_dict()
        report.service = target.service
        report.notes.extend(target.notes)

    launch(
        target.revision,
        resolved,
        VerifyOptions,
        gate_class=VerifyGate,
        prepare=prepare,
        dry_run=dry_run,
        cloud_deploy=target.phase,
    )
