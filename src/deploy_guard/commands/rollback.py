"""``deploy-guard rollback``: put 100 % of a service's traffic on a known good revision, now.

A service with a rollout recorded on it (:mod:`deploy_guard.gcp.rollouts`) is
undone instead: the split from before the rollout is put back (without the
candidate, renormalised), the candidate recorded as rejected and the record
removed, all in one write. A rollout whose process still runs is refused
unless ``--force``: that process would find the service changed under it at
its next write and stop with exit 4, so whoever runs it should stop it instead
(a stopped rollout puts the split back itself).

Otherwise traffic goes, in order: ``--to-revision``; else the revision a passing
check recorded in the ``deploy-guard.dev/last-known-good`` annotation, unless it
serves everything now; else the revision that served most before the guard's
last promotion (``deploy-guard.dev/served-before``); else the newest Ready
revision older than the one serving now. The write is the check's rollback
write, through the same :class:`~deploy_guard.actions.executor.Executor`
(only traffic and annotations, with the etag read; then verified by
re-reading), so the command is idempotent: when the revision (or the restored
split) already serves, it changes nothing and exits 0.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from deploy_guard.commands import location_options, run_or_exit
from deploy_guard.errors import ActionError, ConfigError, NotFoundError, SupersededError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.rollback")

HELP = """Put 100 % of SERVICE's traffic on a known good revision, and verify it.

\b
A rollout in progress (recorded on the service by `deploy-guard rollout`)
is undone instead: the split from before it goes back (without the
candidate), the candidate is recorded as rejected and the rollout record
is removed, in one verified write. A rollout whose process still runs is
refused (exit 4): stop it first (Ctrl-C or cancel its build: it puts the
split back itself), or pass --force. With --to-revision the rollout is
ended the same way, with 100 % on that revision.

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
are sent, with the etag read), the change was sent but could not be read
back (the message says what to check), a rollout still runs (without
--force), or its record cannot be read (without --to-revision).

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
@click.option(
    "--force",
    is_flag=True,
    help="Undo a rollout even while its process still runs (its next write then fails).",
)
def rollback(
    service: str,
    to_revision: str | None,
    region: str | None,
    project: str | None,
    dry_run: bool,
    force: bool,
) -> None:
    from deploy_guard.commands import missing_project_region, terminal_output

    problem = missing_project_region(project, region)
    if problem or not project or not region:
        click.echo(f"error: {problem}", err=True)
        sys.exit(int(ExitCode.USAGE))
    terminal_output()  # the one-line outcome is what a person reads; events stay in JSON logs

    notes: list[str] = []
    message = run_or_exit(
        roll_back(project, region, service, to_revision, dry_run=dry_run, force=force, notes=notes)
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
    force: bool = False,
    clients: Any = None,
    notes: list[str] | None = None,
) -> str:
    """Do the rollback; return what happened in one line. Raises GuardError subclasses.

    ``notes`` receives what a person should know besides (leftover temporary tags).
    """
    from deploy_guard.actions.target import pick_rollback_target
    from deploy_guard.gcp.cloudrun import open_service
    from deploy_guard.gcp.traffic import REJECTED, describe, rejected, served_split, with_rejected

    async with open_service(project, region, service, clients) as (router, state):
        _stale_tags(state, notes if notes is not None else [])
        record, recorded = _rollout(state, to_revision=to_revision, force=force)
        if record is not None and not to_revision:
            return await _undo_rollout(router, state, record, project, region, dry_run=dry_run)
        now = served_split(state)
        done = rolled_back_split(state.annotations)
        if not to_revision and done and now == done:
            log.info("rollback_not_needed", service=service, traffic=describe(done))
            return (
                f"{service}: already rolled back to {done_text(done)}; nothing changed. "
                "To go further back, pass --to-revision REV"
            )
        chose = ""
        if to_revision:
            target = await _named(router, service, to_revision)
        else:
            target, why = await pick_rollback_target(router, state)
            chose = f"; chose {target.short}: {why}"
        if now == {target.short: 100} and not recorded:
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
        ending = _ending(record, recorded, target.short, dry_run=dry_run)
        if dry_run:
            return (
                f"{service}: would move traffic from {describe(now)} to {target.short} "
                f"100%{chose}{ending}"
            )
        return await _pin(router, state, target.short, record, project, region) + ending + chose


async def _pin(router: Any, state: Any, target: str, record: Any, project: str, region: str) -> str:
    """100 % to ``target``: the write, through the check's executor, and its outcome line."""
    from deploy_guard.actions.standalone import executor_for, write_or_raise
    from deploy_guard.gcp import rollouts
    from deploy_guard.gcp.traffic import (
        LAST_KNOWN_GOOD,
        REJECTED,
        ROLLED_BACK_TO,
        describe,
        pin_plan,
        served_split,
        with_rejected,
    )

    service, now = state.short, served_split(state)
    # Recorded in the same write: a second run sees the work done, and what a
    # person rolled back from is never a later rollback's choice.
    away = [rev for rev in now if rev != target]
    if record is not None and record.revision != target and record.revision not in away:
        away.append(record.revision)  # the rollout's candidate, even with no traffic now
    annotations = {
        ROLLED_BACK_TO: target,
        REJECTED: with_rejected(state.annotations, *away, clear=target),
    }
    if rollouts.ROLLOUT_ANNOTATION in state.annotations:
        annotations.update(rollouts.ended())  # this write ends the rollout, readable or not
    good = state.annotations.get(LAST_KNOWN_GOOD, "")
    if good and good in away:
        annotations[LAST_KNOWN_GOOD] = target
    executor = executor_for(router, state, project=project, region=region, command="rollback")
    after = await write_or_raise(
        executor, pin_plan(state, target), f"rollback to {target}", annotations=annotations
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
    return message


def done_text(split: dict[str, int]) -> str:
    """``chat-00001-abc (100 %)``, or the split a rollout's undo put back."""
    from deploy_guard.gcp.traffic import describe

    if len(split) == 1:
        (only,) = split
        return f"{only} (100 %)"
    return describe(split)


def rolled_back_split(annotations: dict[str, str]) -> dict[str, int]:
    """What the last ``rollback`` put traffic back on ({} when none is recorded).

    One revision (100 %) after a rollback to a revision; a split
    (``chat-00001-abc=90,chat-00002-def=10``) after a rollout was undone.
    """
    from deploy_guard.gcp.traffic import ROLLED_BACK_TO, decode_split

    done = annotations.get(ROLLED_BACK_TO, "")
    if "=" in done:
        return decode_split(done)
    return {done: 100} if done else {}


def _rollout(state: Any, *, to_revision: str | None, force: bool) -> tuple[Any, bool]:
    """The rollout recorded on the service (or None), and whether a record is there at all.

    Refuses (exit 4) a rollout whose process may still run, unless ``force``;
    and an unreadable record unless the person names where traffic goes.
    """
    from deploy_guard.gcp import rollouts
    from deploy_guard.gcp.tags import rfc3339

    service = state.short
    if not state.annotations.get(rollouts.ROLLOUT_ANNOTATION):
        return None, False
    try:
        record = rollouts.current(state.annotations)
    except ValueError as exc:
        if to_revision:
            return None, True  # the write that pins it removes the record too
        raise ActionError(
            f"{service}'s rollout record cannot be read ({exc}): deploy-guard cannot tell "
            "the split from before the rollout, nor whether it still runs. Name where "
            f"traffic goes: deploy-guard rollback --service {service} --to-revision REV "
            "(that write removes the record)"
        ) from None
    assert record is not None
    if record.live(datetime.now(UTC)) and not force:
        log.warning("rollback_refused_rollout_running", service=service, by=record.by)
        raise ActionError(
            f"a rollout is running (by {record.by} until {rfc3339(record.until)}); stop it "
            f"first: Ctrl-C (or cancel its build) puts the split from before it back. To undo "
            f"it from here anyway: deploy-guard rollback --service {service} --force (the "
            "running rollout then stops at its next write, exit 4)"
        )
    return record, True


def _stopped(record: Any) -> str:
    return f"at step {record.step}/{len(record.steps)}, {record.percent} %"


def _ending(record: Any, recorded: bool, target: str, *, dry_run: bool) -> str:
    """What a pin also does to a rollout record, for the outcome line."""
    if record is not None:
        what = f"the rollout of {record.revision} ({_stopped(record)})"
        rejected = f", {record.revision} recorded as rejected" if record.revision != target else ""
        return f"; {'would end' if dry_run else 'ended'} {what}{rejected}"
    if recorded:
        return (
            "; would remove the unreadable rollout record"
            if dry_run
            else ("; removed the unreadable rollout record")
        )
    return ""


async def _undo_rollout(
    router: Any, state: Any, record: Any, project: str, region: str, *, dry_run: bool
) -> str:
    """Put back the split from before the rollout, reject its candidate, end its record."""
    from deploy_guard.actions.standalone import executor_for, write_or_raise
    from deploy_guard.gcp import rollouts
    from deploy_guard.gcp.traffic import (
        REJECTED,
        ROLLED_BACK_TO,
        describe,
        encode_split,
        plan,
        served_split,
        step_split,
        tags_without,
        with_rejected,
    )

    service, cand = state.short, record.revision
    ready = {r.short for r in await router.list_revisions(state.name) if r.ready}
    split = rollouts.restore_split(record, ready)
    where = f"the rollout of {cand} ({_stopped(record)})"
    if not split:
        raise ConfigError(
            f"nothing to put back after {where}: before it {describe(record.before)} served "
            f"and no Ready revision of those is left besides {cand}; pass --to-revision REV"
        )
    gone = sorted(r for r in record.before if r != cand and r not in ready)
    extra = f" (left out, no longer Ready: {', '.join(gone)})" if gone else ""
    if record.before.get(cand):
        extra += f" (without {cand}, which had {record.before[cand]}% before it)"
    now = served_split(state)
    step = step_split(record.before, cand, record.percent) if record.step else {}
    if now not in (split, step):  # someone deployed after the rollout stopped: not ours
        raise SupersededError(
            f"{service} serves {describe(now)}, neither step {record.step}'s "
            f"{describe(step)} of {where} nor the split from before it: someone changed its "
            "traffic since; nothing was changed. Choose with --to-revision REV (which also "
            "ends the rollout's record)"
        )
    annotations = {
        **rollouts.ended(),
        REJECTED: with_rejected(state.annotations, cand),
        # a second run sees the work done instead of stepping further back
        ROLLED_BACK_TO: next(iter(split)) if len(split) == 1 else encode_split(split),
    }
    if now == split:
        if dry_run:
            return (
                f"{service}: already serves {describe(split)}, the split from before {where}; "
                f"would remove the rollout record and record {cand} as rejected"
            )
        await router.set_annotations(state, annotations)
        log.info("rollout_record_removed", service=service, revision=cand)
        return (
            f"{service}: already serves {describe(split)}, the split from before {where}; "
            f"removed the rollout record and recorded {cand} as rejected"
        )
    if dry_run:
        return (
            f"{service}: would undo {where}: traffic from {describe(now)} to "
            f"{describe(split)} (the split before it){extra}; {cand} would be recorded as "
            "rejected"
        )
    log.info("rollout_undo_requested", service=service, revision=cand, to=describe(split))
    executor = executor_for(router, state, project=project, region=region, command="rollback")
    spec = plan(split, tags_without(state.traffic))
    after = await write_or_raise(
        executor, spec, f"undo the rollout of {cand}", annotations=annotations
    )
    log.info("rollout_undone", service=service, traffic=describe(served_split(after)))
    return (
        f"{service}: traffic now {describe(served_split(after))} (was {describe(now)}): the "
        f"split from before {where}{extra}; {cand} recorded as rejected and the rollout "
        "record removed"
    )


def _stale_tags(state: Any, notes: list[str]) -> None:
    """Temporary tags a check left behind: said here too, with the command that removes them."""
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
