"""Fleets on the command line: ``--fleet FILE`` for check and watch, ``deploy-guard fleet``.

A guard of a fleet takes everything about its service from its entry of the fleet
file (:mod:`deploy_guard.policy.fleet`): the service, its policies, its project and
region, and its share of the project's Cloud Logging read quota
(:mod:`deploy_guard.analysis.budget`). :func:`take_entry` is the one hook: ``launch``
calls it before validating anything else, so a broken fleet file, a task index beyond
it or a job with the wrong task count is exit 2 with the report written, nothing
touched. ``deploy-guard fleet FILE`` validates a file the same way and prints the
arithmetic, for a pipeline's lint step and for the person sizing a fleet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.analysis.budget import LogBudget
    from deploy_guard.policy.fleet import Fleet
    from deploy_guard.report.model import CheckReport

F = TypeVar("F", bound=Callable[..., Any])

#: ``--fleet``, as check and watch take it.
fleet_option = click.option(
    "--fleet",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="A fleet file (docs/fleets.md): this guard checks its entry, picked by --service or "
    "CLOUD_RUN_TASK_INDEX, with the entry's policies, project and region, and reads Cloud "
    "Logging only in its share of the project's read quota. Replaces --policy.",
)


def take_entry(flags: dict[str, Any], report: CheckReport, *, command: str) -> LogBudget | None:
    """Fill ``flags`` from this guard's entry of ``flags["fleet"]``; the check's log budget.

    The entry's project and region win over ``--project``/``--region``, which only
    fill in what the file leaves out. A check gets a :class:`LogBudget` (its log
    passes keep to their slots; its bound grows by the longest wait for a turn); a
    watch, which tails its logs and polls only when tailing is refused, polls at most
    once per turn.
    """
    from deploy_guard.errors import ConfigError
    from deploy_guard.policy.fleet import load_fleet, pick

    path = flags["fleet"]
    if flags.get("policy_paths"):
        raise ConfigError(
            f"--policy and --fleet {path} both name policies: the fleet file says which "
            "policies judge each service; drop --policy"
        )
    fleet = load_fleet(path)
    index = pick(fleet, service=flags.get("service"), region=flags.get("region"))
    entry = fleet.entries[index]
    flags["service"] = entry.service
    flags["policy_paths"] = entry.policy_paths
    flags["project"] = entry.project or flags.get("project")
    flags["region"] = entry.region or flags.get("region")
    report.service = entry.service
    report.project, report.region = flags["project"] or "", flags["region"] or ""
    spacing = flags.get("log_interval") or 0.0
    budget = fleet.budget(index, flags["project"], min_spacing=spacing)
    report.notes.append(
        f"fleet {path}: entry {index} of {len(fleet.entries)}: "
        f"{entry.where(flags['region'])}; {budget.describe()}"
    )
    if command != "check":
        flags["log_interval"] = max(spacing, budget.turn)
        return None
    # the engine asks this often (a pass outside the guard's turn reads nothing); a huge
    # quota's short slots are not polled faster than the emulator's floor
    flags["log_interval"] = max(budget.slot / 2, 0.1)
    bound = flags.get("timeout")
    if bound is None:
        bound = min((p.timeout for p in entry.policies), default=600.0)
    flags["timeout"] = bound + budget.longest_wait + (flags.get("api_retry") or 30.0)
    return budget


def _plan(fleet: Fleet, project: str | None, region: str | None) -> list[str]:
    """``deploy-guard fleet``'s lines: the entries, then each project's budget."""
    from deploy_guard.analysis.budget import rate_text

    entries = fleet.entries
    rows = [
        (
            str(n),
            e.service,
            e.region or region or "(--region)",
            e.project or project or "(--project)",
            "policies: " + ", ".join(p.name for p in e.policies),
        )
        for n, e in enumerate(entries)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{fleet.file}: {len(entries)} service{'s' if len(entries) != 1 else ''}, valid"]
    for row in rows:
        cells = [row[i].ljust(widths[i]) if i else row[0].rjust(widths[0]) for i in range(4)]
        lines.append("  " + "  ".join([*cells, row[4]]))
    lines.append(
        f"Cloud Logging reads: quota {rate_text(fleet.log_read_quota)} per project "
        "(log_read_quota); the fleet's guards use half of it together:"
    )
    projects: dict[str, int] = {}
    for n, e in enumerate(entries):
        projects.setdefault(e.project or project or "(--project)", n)
    for name, first in projects.items():
        budget = fleet.budget(first, project)
        lines.append(
            f"  {name}: {budget.guards} guard{'s' if budget.guards != 1 else ''} share "
            f"{rate_text(budget.per_minute)}: one read in each {budget.slot:g} s slot, each "
            f"guard at most once every {budget.turn:g} s"
        )
    last = len(entries) - 1
    lines.append(
        f"Run one guard per entry: a Cloud Run job with taskCount {len(entries)} "
        f"(CLOUD_RUN_TASK_INDEX 0-{last}), or --service NAME per Cloud Build step."
    )
    return lines


@click.command(name="fleet", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--project", envvar="GOOGLE_CLOUD_PROJECT", metavar="PROJECT",
              help="Project of the entries that name none [env GOOGLE_CLOUD_PROJECT].")  # fmt: skip
@click.option("--region", envvar="CLOUDSDK_RUN_REGION", metavar="REGION",
              help="Region of the entries that name none [env CLOUDSDK_RUN_REGION].")  # fmt: skip
def fleet(file: str, project: str | None, region: str | None) -> None:
    """Validate a fleet FILE (its policies too) and show who reads Cloud Logging when.

    Every problem is printed compiler-style (file:line:col: path: message); exit 0 when
    the file is valid, 2 when not. Nothing is read from Google Cloud.
    """
    from deploy_guard.errors import PolicyError
    from deploy_guard.exitcodes import ExitCode
    from deploy_guard.policy.fleet import load_fleet

    try:
        loaded = load_fleet(file)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        count = len(exc.problems)
        click.echo(f"{count} problem{'s' if count != 1 else ''} in {file}", err=True)
        raise SystemExit(int(ExitCode.USAGE)) from None
    for line in _plan(loaded, project, region):
        click.echo(line)


__all__ = ["fleet", "fleet_option", "take_entry"]
