"""The ``deploy-guard`` command line.

Only parsing and dispatch live here. Each subcommand is a module under
:mod:`deploy_guard.commands` that is imported when that subcommand runs, so
``deploy-guard --help`` and ``deploy-guard policy validate`` never pay for the
Google client libraries (about 270 ms to import).

Exit codes (see :class:`deploy_guard.exitcodes.ExitCode`): 0 pass, 1 fail
(traffic rolled back or never shifted), 2 usage or configuration error,
3 inconclusive, 4 an action failed or was refused.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from deploy_guard import __version__
from deploy_guard import log as guard_log
from deploy_guard.errors import GuardError
from deploy_guard.exitcodes import ExitCode

#: subcommand name -> (module, attribute, one-line help shown by --help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "check": (
        "deploy_guard.commands.check",
        "check",
        "Judge a revision by policy; roll back on failure, promote on success.",
    ),
    "rollout": (
        "deploy_guard.commands.rollout",
        "rollout",
        "Move traffic to a revision in steps judged on real users, then promote it.",
    ),
    "watch": (
        "deploy_guard.commands.watch",
        "watch",
        "Keep judging what serves a service; roll back by itself when it fails.",
    ),
    "fleet": (
        "deploy_guard.commands.fleet",
        "fleet",
        "Validate a fleet file and show each guard's share of the Cloud Logging quota.",
    ),
    "report": (
        "deploy_guard.commands.report",
        "report",
        "Render a saved JSON report as one self-contained HTML page.",
    ),
    "rollback": (
        "deploy_guard.commands.rollback",
        "rollback",
        "Put 100% of a service's traffic back on a known good revision.",
    ),
    "status": (
        "deploy_guard.commands.status",
        "status",
        "Show a service's traffic, tags and what the guard recorded; remove stale tags.",
    ),
    "probe": (
        "deploy_guard.commands.probe",
        "probe",
        "Run a policy's HTTP and WebSocket probes against any URL.",
    ),
    "judge": (
        "deploy_guard.commands.judge",
        "judge",
        "Merge probe shards' measurement files into one verdict.",
    ),
    "policy": (
        "deploy_guard.commands.policy",
        "policy",
        "Validate, explain and export the schema of policy files.",
    ),
    "notify": (
        "deploy_guard.commands.notify",
        "notify",
        "Print the notification payload's schema; send a test event to your notifiers.",
    ),
    "emulator": (
        "deploy_guard.commands.emulator",
        "emulator",
        "Run a local Cloud Run, Cloud Logging and Cloud Monitoring emulator.",
    ),
}

EPILOG = """\b
Exit codes:
  0  pass             1  fail (traffic rolled back or never shifted)
  2  usage/config     3  inconclusive      4  an action failed or was refused

\b
Start with:  deploy-guard policy validate policies/
             deploy-guard emulator            (a local Cloud Run to try it on)
             deploy-guard status --service S  (what serves, tags, what is rejected)
"""


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attr, _help = spec
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _not_built(cmd_name)
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static one-line help so that --help imports no subcommand module.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _not_built(name: str) -> click.Command:
    @click.command(name=name, help=COMMANDS[name][2])
    def _missing() -> None:
        raise click.UsageError(f"'{name}' is not available in this build of deploy-guard")

    return _missing


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deploy-guard")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    envvar="DEPLOY_GUARD_LOG_FORMAT",
    help="auto: readable on a terminal, Cloud Logging JSON otherwise.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    envvar="DEPLOY_GUARD_LOG_LEVEL",
)
def cli(log_format: str, log_level: str) -> None:
    """deploy-guard: a deployment gate for Google Cloud Run.

    After a rollout it probes the new revision (HTTP and WebSocket sessions),
    reads Cloud Logging and Cloud Monitoring, judges the evidence by your
    policies, and puts traffic back on the previous revision when the new one
    is unhealthy.
    """
    as_json = None if log_format == "auto" else log_format == "json"
    guard_log.configure(json=as_json, level=log_level)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: map :class:`GuardError` to its exit code."""
    from deploy_guard import signals

    signals.defer()  # from the first instant: a signal is acted on where it is safe
    guard_log.redact_uncaught()  # even a crash's traceback shows no secret
    try:
        return cli.main(args=argv, prog_name="deploy-guard", standalone_mode=True)
    except GuardError as exc:  # pragma: no cover - commands normally map their own
        click.echo(f"error: {guard_log.redact_text(str(exc))}", err=True)
        sys.exit(int(exc.exit_code))


__all__ = ["COMMANDS", "ExitCode", "cli", "main"]
