"""``deploy-guard watch``: keep judging what serves a service; roll back by itself on a fail.

The flags shared with ``check`` (reports, Cloud Logging reads, the probes'
token) and the start-up path (validate everything before any API call, run
under SIGINT/SIGTERM handling, always write the reports) are the check's
(:func:`deploy_guard.commands.launch.launch`); the loop is
:class:`deploy_guard.runtime.watch.WatchGate`'s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from deploy_guard.commands import location_options
from deploy_guard.commands.check import SHARED_OPTIONS, _at_least, policy_option
from deploy_guard.commands.fleet import fleet_option
from deploy_guard.commands.launch import launch

HELP = """Keep judging whatever serves --service; roll back by itself when it fails.

\b
What it does, for as long as it runs (--for, or until stopped):
  - logs: the serving revision's entries stream live (Cloud Logging
    TailLogEntries, one stream for every logs rule), judged over the
    policy's sliding `watch.window`; when tailing is refused or breaks it
    polls ListLogEntries (at most once per --log-interval) and says so;
  - probes: the policy's probe rules every `watch.probe_interval`, with at
    most `watch.sessions` sessions each, plus a canary user: one WebSocket
    session kept open and renewed, so 1011 closes are seen within seconds;
  - metrics: each metric rule read once per `watch.metric_interval`,
    counting only points older than Cloud Monitoring's lag;
  - follows the service: a new revision taking traffic is watched from
    then on; while a `deploy-guard rollout` runs the watch stands aside.

\b
On a fail: traffic goes back to the last known good revision (what a
passing check or rollout recorded), verified, the failing revision is
recorded as rejected, and the report says how long it took from the first
bad session or log line to traffic verified back: exit 1, or with
--keep-watching it watches the restored revision. A Cloud Logging,
Monitoring or Run API outage makes the watch "degraded" (logged, in the
report), never a rollback. A `watch_heartbeat` event is logged every
`watch.heartbeat` (1m): alert when it stops.

\b
Exit codes: 0 --for elapsed and healthy, or stopped by SIGTERM/SIGINT
without --for (a watcher being shut down); 1 failed and rolled back (with
--keep-watching: when --for ends), or failed with on_fail: none; 2
usage/config; 3 stopped before --for elapsed, or --for elapsed while
degraded; 4 the rollback failed or was refused (a human is needed).

\b
Fleets: several --service (or --services-file, one name per line) with
CLOUD_RUN_TASK_INDEX (set by Cloud Run jobs) picking the one this task
watches: one job, one task per service, no coordinator.

\b
Examples:
  deploy-guard watch --service chat-agent --for 30m     # a bake time after promotion
  deploy-guard watch --service chat-agent --keep-watching --report watch.json
  CLOUD_RUN_TASK_INDEX=1 deploy-guard watch --service a --service b --for 24h
"""


def pick_service(
    services: tuple[str, ...], services_file: str | None, env: dict[str, str] | None = None
) -> str:
    """The one service this process watches (a fleet's task picks by its index).

    ``CLOUD_RUN_TASK_INDEX`` beyond the list is a usage error, one service
    included: a job with more tasks than services would run two watchers on
    one service, racing to roll it back.
    """
    env = dict(os.environ) if env is None else env
    names = list(services)
    if services_file:
        try:
            text = Path(services_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.UsageError(f"cannot read --services-file {services_file}: {exc}") from None
        names += [
            line.split("#", 1)[0].strip()
            for line in text.splitlines()
            if line.split("#", 1)[0].strip()
        ]
    if not names:
        raise click.UsageError("Missing option '--service' (or --services-file).")
    raw = env.get("CLOUD_RUN_TASK_INDEX")
    if raw is None and len(names) == 1:
        return names[0]
    if raw is None:
        raise click.UsageError(
            f"{len(names)} services given ({', '.join(names)}): one watch watches one service. "
            "Run one task per service (a Cloud Run job sets CLOUD_RUN_TASK_INDEX), or set "
            "CLOUD_RUN_TASK_INDEX=K to pick the K-th (from 0)"
        )
    try:
        index = int(raw)
    except ValueError:
        raise click.UsageError(f"CLOUD_RUN_TASK_INDEX={raw!r} is not a number") from None
    if not 0 <= index < len(names):
        raise click.UsageError(
            f"CLOUD_RUN_TASK_INDEX={index} but only {len(names)} "
            f"{'services are' if len(names) > 1 else 'service is'} listed "
            f"({', '.join(names)}): the job's task count must equal the number of services"
        )
    return names[index]


def _options(command: Any) -> Any:
    decorators = [
        click.option(
            "--service",
            "services",
            multiple=True,
            metavar="NAME",
            help="The service to watch (repeatable: a fleet, see CLOUD_RUN_TASK_INDEX).",
        ),
        click.option(
            "--services-file",
            type=click.Path(),
            metavar="FILE",
            help="Services to watch, one per line (# comments): a fleet's list.",
        ),
        location_options,
        policy_option,
        fleet_option,
        click.option(
            "--for",
            "duration",
            callback=_at_least(1.0, "a watch needs time to judge anything (e.g. 30m)"),
            metavar="DURATION",
            help="Watch this long, then exit 0 if healthy (a bake time) [default: until stopped].",
        ),
        click.option(
            "--keep-watching",
            is_flag=True,
            help="After a rollback, watch the restored revision instead of exiting 1.",
        ),
        click.option(
            "--service-interval",
            default="10s",
            show_default=True,
            callback=_at_least(0.1, "give the Run API a pause between reads"),
            metavar="DURATION",
            help="How often the service is read to follow deploys and rollouts.",
        ),
        click.option(
            "--health-port",
            type=click.IntRange(0, 65535),
            metavar="PORT",
            help="Answer HTTP GET on this port, all interfaces, with what is watched (a "
            "watcher deployed as a Cloud Run service must listen on $PORT); 0 picks a free "
            "port, named in the health_listening event [default: no listener].",
        ),
        *SHARED_OPTIONS,
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@click.command(name="watch", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@_options
def watch(
    services: tuple[str, ...],
    services_file: str | None,
    duration: float | None,
    keep_watching: bool,
    service_interval: float,
    health_port: int | None,
    **flags: Any,
) -> None:
    from deploy_guard.runtime.watch import WatchGate, WatchOptions

    if flags.get("fleet"):  # the fleet file lists the services: --service picks one
        if services_file or len(services) > 1:
            raise click.UsageError("--fleet lists the services: one --service at most")
        flags["service"] = services[0] if services else None
    else:
        flags["service"] = pick_service(services, services_file)
    flags.update(timeout=None, ready_timeout=None, log_settle=0.0)
    launch(
        "",
        flags,
        WatchOptions,
        gate_class=WatchGate,
        command="watch",
        duration=duration,
        keep_watching=keep_watching,
        service_interval=service_interval,
        health_port=health_port,
    )
