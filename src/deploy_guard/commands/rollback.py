"""``deploy-guard rollback``: put 100 % of a service's traffic on a known good revision, now.

Where traffic goes, in order: ``--to-revision``; else the revision a passing
check recorded in the ``deploy-guard.dev/last-known-good`` annotation, unless it
serves everything now; else the revision that served most before the guard's
last promotion (``deploy-guard.dev/served-before``); else the newest Ready
revision older than the one serving now. The write is the check's rollback
write (only traffic and annotations, with the etag read; then verified by
re-reading), so the command is idempotent:
when the revision already serves 100 %, it changes nothing and exits 0.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from deploy_guard.commands import location_options, run_or_exit
from deploy_guard.errors import ConfigError, NotFoundError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.rollback")

HELP = """Put 100 % of SERVICE's traffic on a known good revision, and verify it.

\b
The revision is, in order:
  --to-revision REV                 if given (must exist and be Ready);
  the last known good revision      recorded by a passing `check --promote`,
                                    unless it is the one serving 100 % now;
  the revision that served before   that promotion (recorded with it);
  the newest Ready revision         older than the one serving now (the
                                    last resort: Cloud Run keeps no history).
Never, unless named: a revision a check failed, or one a rollback moved
away from (recorded in the deploy-guard.dev/rejected annotation; the outcome
says when that was a revision that had passed its check). See the list and
where rollback would go with `deploy-guard status --service SERVICE`; take
a revision off it with `status --clear-rejected REV`.

\b
Run it twice: the second run sees the traffic already there and changes
nothing (exit 0). The revision is pinned by name: later deploys keep sending
traffic to it until someone sends traffic to the latest revision again.

\b
Exit codes: 0 done (or nothing to do), 2 unknown/unready revision or bad
flags, 4 the change failed, the service changed meanwhile (a deploy that
lands during the write is never overwritten: only traffic and annotations
are sent, with the etag read), or the change was sent but could not be read
back (the message says what to check).

\b
Examples:
  deploy-guard rollback --service chat --region europe-west1
  deploy-guard rollback --service chat --to-revision chat-00001-abc --dry-run
"""


@click.command(name="rollback", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--service", required=True, metavar="NAME", help="The Cloud Run service.")
@click.option("--to-revision", metavar="REV", help="Revision to send all traffic to (short name).")
@location_options
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
def rollback(
    service: str, to_revision: str | None, region: str | None, project: str | None, dry_run: bool
) -> None:
    from deploy_guard.commands import missing_project_region, terminal_output

    problem = missing_project_region(project, region)
    if problem or not project or not region:
        click.echo(f"error: {problem}", err=True)
        sys.exit(int(ExitCode.USAGE))
    terminal_output()  # the one-line outcome is what a person reads; events stay in JSON logs

    notes: list[str] = []
    message = run_or_exit(
        roll_back(project, region, service, to_revision, dry_run=dry_run, notes=notes)
    )
    click.echo(message)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    from deploy_guard import signals

    if signals.pending():  # deferred: a half-done traffic change helps nobody
        click.echo(f"note: {signals.pending()} received; the rollback was finished first", err=True)
    sys.exit(int(ExitCode.PASS))


async def roll_back(
    project: str,
    region: str,
    service: str,
    to_revision: str | None,
    *,
    dry_run: bool = False,
    clients: Any = None,
    notes: list[str] | None = None,
) -> str:
    """Do the rollback; return what happened in one line. Raises GuardError subclasses.

    ``notes`` receives what a person should know besides (leftover temporary tags).
    """
    from deploy_guard.actions.target import pick_rollback_target
    from deploy_guard.gcp.cloudrun import open_service
    from deploy_guard.gcp.traffic import (
        LAST_KNOWN_GOOD,
        REJECTED,
        ROLLED_BACK_TO,
        describe,
        pin_plan,
        rejected,
        served_split,
        with_rejected,
    )

    async with open_service(project, region, service, clients) as (router, state):
        _stale_tags(state, notes if notes is not None else [])
        now = served_split(state)
        done = state.annotations.get(ROLLED_BACK_TO, "")
        if not to_revision and done and now == {done: 100}:
            log.info("rollback_not_needed", service=service, revision=done)
            return (
                f"{service}: already rolled back to {done} (100 %); nothing changed. "
                "To go further back, pass --to-revision REV"
            )
        chose = ""
        if to_revision:
            target = await _named(router, service, to_revision)
        else:
            target, why = await pick_rollback_target(router, state)
            chose = f"; chose {target.short}: {why}"
        if now == {target.short: 100}:
            log.info("rollback_not_needed", service=service, revision=target.short)
            if to_revision and target.short in rejected(state.annotations) and not dry_run:
                # named on purpose: it is no longer to be refused
                await router.set_annotations(
                    state, {REJECTED: with_rejected(state.annotations, clear=target.short)}
                )
                return (
                    f"{service}: {target.short} already serves 100 %; traffic unchanged, and "
                    "it is no longer recorded as rejected"
                )
            return f"{service}: {target.short} already serves 100 %; nothing changed" + (
                "" if to_revision else ". To go further back, pass --to-revision REV"
            )
        if dry_run:
            return (
                f"{service}: would move traffic from {describe(now)} to {target.short} 100%{chose}"
            )
        # Recorded in the same write: a second run sees the work done, and what a
        # person rolled back from is never a later rollback's choice.
        away = [rev for rev in now if rev != target.short]
        record = {
            ROLLED_BACK_TO: target.short,
            REJECTED: with_rejected(state.annotations, *away, clear=target.short),
        }
        good = state.annotations.get(LAST_KNOWN_GOOD, "")
        if good and good in away:
            record[LAST_KNOWN_GOOD] = target.short
        log.info("rollback_requested", service=service, revision=target.short, before=describe(now))
        after = await router.set_traffic(
            state, pin_plan(state, target.short), why="rollback", annotations=record
        )
        log.info("rollback_completed", service=service, traffic=describe(served_split(after)))
        if away:
            log.info("rejection_recorded", service=service, revisions=",".join(away))
        message = f"{service}: traffic now {describe(served_split(after))} (was {describe(now)})"
        if good and good in away:
            # It passed its check: rejecting it is this person's call, so say it was made.
            message += (
                f"; {good} had passed its check and is now on the rejected list: rollback "
                "will not choose it again unless named (undo: deploy-guard status --service "
                f"{service} --clear-rejected {good})"
            )
        return message + chose


def _stale_tags(state: Any, notes: list[str]) -> None:
    """Temporary tags a check left behind: said here too, with the command that removes them."""
    from datetime import UTC, datetime

    from deploy_guard.gcp.tags import stale, stale_note

    left = stale(state, datetime.now(UTC))
    if left:
        log.info("stale_tags_found", service=state.short, tags=",".join(t.tag for t in left))
        notes.append(stale_note(state.short, left))


async def _named(router: Any, service: str, revision: str) -> Any:
    try:
        target = await router.get_revision(service, revision)
    except NotFoundError:
        raise ConfigError(f"revision {revision} does not exist in service {service}") from None
    if target.ready is not True:
        why = f": {target.message}" if target.message else ""
        raise ConfigError(f"revision {revision} is not Ready{why}; refusing to send traffic to it")
    return target
