"""``deploy-guard rollout``: walk a candidate through traffic steps judged on real users.

The flags, the validation before any API call, the reports and the signal
handling are the check's (:func:`deploy_guard.commands.check.launch`); the
sequence is :class:`deploy_guard.runtime.rollout.RolloutGate`'s.
"""

from __future__ import annotations

from typing import Any

import click

from deploy_guard.commands.check import evidence_options
from deploy_guard.commands.launch import launch

HELP = """Move traffic to REVISION in steps, judging each on real users; then 100 %.

\b
What it does, in order:
  1. everything `deploy-guard check` does before acting: validates every
     --policy, waits for the revision to be Ready, records the split;
  2. judges the policy's probe and log rules through the tag URL (a
     temporary 0 % dg- tag if it has none) before any user sees it: a
     failure there rejects it with no traffic moved (metric rules need
     real users: they are judged at the steps);
  3. for each step (policy `rollout.steps`, or --steps): writes the split
     (the revisions that served before keep the rest, in their proportions),
     verifies it by re-reading, and judges the step's window: probe rules
     again (unless `every_step: false`), the candidate's logs, and Cloud
     Monitoring metrics of the candidate and of its baseline over the same
     window, counting only points older than `rollout.metric_lag`. A step
     passes when its duration is over and no fail rule failed; fail_fast
     ends it at the first failure;
  4. after the last step: 100 % to the revision, pinned by name, recorded as
     the last known good revision.

\b
On a fail at any step the split from before the rollout is put back,
verified, and the revision recorded as rejected (exit 1). Inconclusive:
the policy's on_inconclusive (hold at the current step, exit 3, or roll
back). Someone else's deploy meanwhile: nothing more is written (exit 4).
The service's annotation deploy-guard.dev/rollout says where a rollout is:
a second rollout is refused while one runs; `deploy-guard status` shows a
rollout whose process died; --resume continues it, `deploy-guard rollback`
undoes it.

\b
Exit codes: 0 promoted, 1 failed (traffic put back, or never moved),
2 usage/config, 3 inconclusive or interrupted (held, or put back),
4 an action failed or was refused (the report says what to check).

\b
Signals: the first SIGINT/SIGTERM finishes the traffic write in flight,
puts the split from before the rollout back (--on-interrupt hold keeps
the current step), writes the reports, exit 3. A second one stops at
once, after writing the reports.

\b
Examples:
  deploy-guard rollout --revision chat-agent-00002-abc --policy policies/chat-agent.yaml
  deploy-guard rollout --revision chat-agent-00002-abc --steps 5:5m,25:10m,50:10m
  deploy-guard rollout --resume --service chat-agent       # after a rollout's process died
"""


def _steps(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from deploy_guard.errors import GuardError
    from deploy_guard.policy.rollout import parse_steps

    try:
        return tuple(parse_steps(value))
    except GuardError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command(name="rollout", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--revision",
    metavar="REV",
    help="Revision to roll out: short name or full resource name (with --resume: the one "
    "recorded on the service).",
)
@evidence_options
@click.option(
    "--steps",
    callback=_steps,
    metavar="P:DURATION,...",
    help="Traffic steps, overriding the policy's rollout.steps: percent to the revision and "
    "how long to judge it there, e.g. 10:2m,50:5m.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the rollout recorded on the service from its last verified step "
    "(its process died; `deploy-guard status` shows it).",
)
@click.option(
    "--on-interrupt",
    type=click.Choice(["rollback", "hold"]),
    default="rollback",
    show_default=True,
    help="What the first SIGINT/SIGTERM does once traffic moved: put the split from "
    "before the rollout back, or keep the current step.",
)
def rollout(
    revision: str | None, steps: Any, resume: bool, on_interrupt: str, **flags: Any
) -> None:
    from deploy_guard.runtime.rollout import RolloutGate, RolloutOptions

    if revision is None:
        revision = _recorded_revision(flags, resume)
    launch(
        revision,
        flags,
        RolloutOptions,
        gate_class=RolloutGate,
        command="rollout",
        steps=steps,
        resume=resume,
        on_interrupt=on_interrupt,
    )


def _recorded_revision(flags: dict[str, Any], resume: bool) -> str:
    """``--resume --service S``: the revision the service's rollout record names."""
    if not resume:
        raise click.UsageError("Missing option '--revision' (only --resume may leave it out).")
    service = flags.get("service")
    if not service:
        raise click.UsageError("--resume needs --service (or --revision)")
    from deploy_guard.commands import missing_project_region, run_or_exit
    from deploy_guard.errors import ConfigError
    from deploy_guard.gcp.rollouts import current

    problem = missing_project_region(flags.get("project"), flags.get("region"))
    if problem:
        raise click.UsageError(problem)

    async def read() -> str:
        from deploy_guard.gcp.cloudrun import open_service

        async with open_service(flags["project"], flags["region"], service) as (_run, state):
            try:
                record = current(state.annotations)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if record is None:
                raise ConfigError(f"no rollout is recorded on {service}: nothing to resume")
            return record.revision

    return run_or_exit(read())
