"""``deploy-guard notify``: the notification payload's schema, and a test message.

``notify schema`` prints the JSON Schema of the payload every webhook, Pub/Sub
message and log entry carries (``docs/notification.schema.json`` is its
output), so a receiver can validate what it gets. ``notify test`` sends one
made-up event to the notifiers of a policy or of ``--notify``, through the
same code a run uses, and says how each delivery went: the way to check a
webhook's URL and key before the night it matters.
"""

from __future__ import annotations

import json
from typing import Any

import click

from deploy_guard.commands import location_options
from deploy_guard.commands.check import _notify_flags
from deploy_guard.events.model import KINDS


@click.group("notify")
def notify() -> None:
    """The notification payload's schema, and a test message to your notifiers."""


@notify.command("schema", short_help="Print the JSON Schema of the notification payload.")
@click.option("--indent", type=int, default=2, show_default=True, help="0 for one line.")
def schema(indent: int) -> None:
    """Print the JSON Schema (draft 2020-12) of the payload a webhook POSTs, a Pub/Sub
    message carries as data and a log entry holds as jsonPayload."""
    from deploy_guard.events.payload import schema as payload_schema

    click.echo(json.dumps(payload_schema(), indent=indent or None))


@notify.command("test", short_help="Send a test event to the notifiers; say how each went.")
@click.option(
    "--notify",
    "flags",
    multiple=True,
    callback=_notify_flags,
    metavar="KIND:WHERE[:EVENTS]",
    help="A notifier, as for check (repeatable).",
)
@click.option(
    "--policy",
    "policy_paths",
    multiple=True,
    type=click.Path(),
    metavar="PATH",
    help="Also the notify: of these policies (those that apply to --service).",
)
@click.option("--service", default="my-service", show_default=True, help="The service named.")
@location_options
@click.option(
    "--event",
    "kind",
    type=click.Choice(KINDS),
    default="rollback",
    show_default=True,
    help="The event to send (every notifier gets it, whatever its on:).",
)
def test(
    flags: tuple[Any, ...],
    policy_paths: tuple[str, ...],
    service: str,
    project: str | None,
    region: str | None,
    kind: str,
) -> None:
    """Send one made-up event to each notifier. Exit 0 when all were delivered, 4 when one
    was not, 2 when a notifier cannot work (a variable not set, a URL not https)."""
    from deploy_guard.commands import run_or_exit
    from deploy_guard.errors import ConfigError
    from deploy_guard.events.setup import resolve
    from deploy_guard.policy.load import load_paths

    specs = list(flags)
    if policy_paths:
        policies = [p for p in load_paths(list(policy_paths)) if p.applies_to(service)]
        specs = [*(s for p in policies for s in p.notify), *specs]
    if not specs:
        raise click.UsageError("no notifier: pass --notify, or --policy with a notify: list")
    try:
        targets = resolve(specs)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(int(exc.exit_code)) from None
    ok = run_or_exit(_send(targets, kind, service, project or "", region or ""))
    raise SystemExit(0 if ok else 4)


async def _send(targets: Any, kind: str, service: str, project: str, region: str) -> bool:
    from dataclasses import replace

    from deploy_guard.events.model import Delivery, Event
    from deploy_guard.events.setup import build
    from deploy_guard.gcp.clients import Clients
    from deploy_guard.report.model import CheckReport

    report = CheckReport(revision=f"{service}-00002-test", project=project, region=region)
    report.service, report.verdict, report.action = service, "fail", "rolled_back"
    report.exit_code = 1
    report.message = "a test notification from `deploy-guard notify test`; nothing happened"
    report.reasons = ["test-rule: 3 of 5 sessions closed with 1011, limit 0 (not real)"]
    report.traffic_before = {f"{service}-00001-base": 80, report.revision: 20}
    report.traffic_after = {f"{service}-00001-base": 100}
    clients = Clients.from_env()
    every = [replace(t, on=frozenset({kind})) for t in targets]
    fan = build(every, clients=clients, project=project)
    done: list[Delivery] = []
    event = Event(kind, "check", service, report.revision, detail={"test": True}, outcome=True)
    try:
        fan.fire(event, report.to_dict(), done.append)
        await fan.drain()
    finally:
        clients.close()
    for delivery in done:
        words = f"{delivery.status} after {delivery.attempts} attempt(s)"
        if delivery.error:
            words += f": {delivery.error}"
        click.echo(f"{delivery.notifier}: {words}")
    return all(d.ok for d in done)
