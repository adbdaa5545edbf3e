"""``deploy-guard status``: what the guard knows about a service, at a glance.

Read-only by default: the serving split, every tag and its URL, what the guard
recorded in the service's annotations (last known good, what served before the
last promotion, the last rollback, the rejected list, a rollout in progress or
one whose process died) and where a ``rollback`` without ``--to-revision``
would go. Two flags change the service, each in one
verified write: ``--remove-stale-tags`` removes temporary ``dg-`` tags no
running check holds (see :mod:`deploy_guard.gcp.tags`), ``--clear-rejected
REV`` takes a revision off the rejected list.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

from deploy_guard.commands import location_options, run_or_exit
from deploy_guard.errors import ConfigError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.status")

HELP = """Show what deploy-guard knows about SERVICE; remove leftover temporary tags.

\b
Shows: the traffic split served now; every tag and its URL; the temporary
dg- tags checks add to reach an untagged revision (in use by a running check
until a recorded time, or stale: left behind by a check that was killed or
stopped with a second Ctrl-C); a rollout recorded on the service (running,
or stopped halfway because its process is gone: resume it or roll it back);
the last known good revision; what served before the last promotion; the
last rollback; the rejected revisions (never chosen by `rollback` unless
named); where `rollback` would go now.

\b
--json adds, for a rollout ("rollout": null when there is none):
  {"state": "running"|"stopped"|"unreadable", "revision", "step" (the last
   verified, 1-based), "steps": [{"percent", "duration_s"}], "percent",
   "before" (the split a rollback restores), "by", "started", "until"
   (past: its process is gone), "stopped" (why, when it stopped on
   purpose), "text"}; "unreadable" has only "error" and "text".
  "rollback_split" is the split `rollback` would write.

\b
Changes something only when asked, in one verified write:
  --remove-stale-tags      remove the stale dg- tags (never one in use);
  --clear-rejected REV     take REV off the rejected list (traffic unchanged).

\b
Exit codes: 0 read (or done), 2 unknown service or bad flags, 4 the change
failed or the service changed meanwhile.

\b
Examples:
  deploy-guard status --service chat
  deploy-guard status --service chat --json | jq .rejected
  deploy-guard status --service chat --remove-stale-tags
  deploy-guard status --service chat --clear-rejected chat-00003-xyz
"""


@click.command(name="status", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--service", required=True, metavar="NAME", help="The Cloud Run service.")
@location_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (for scripts).")
@click.option("--remove-stale-tags", is_flag=True, help="Remove dg- tags no running check holds.")
@click.option(
    "--clear-rejected",
    metavar="REV",
    help="Take REV off the rejected list, so rollback may choose it again.",
)
def status(
    service: str,
    region: str | None,
    project: str | None,
    as_json: bool,
    remove_stale_tags: bool,
    clear_rejected: str | None,
) -> None:
    from deploy_guard.commands import missing_project_region, terminal_output

    problem = missing_project_region(project, region)
    if problem or not project or not region:
        click.echo(f"error: {problem}", err=True)
        sys.exit(int(ExitCode.USAGE))
    terminal_output()
    found = run_or_exit(
        read_status(
            project,
            region,
            service,
            remove_stale_tags=remove_stale_tags,
            clear_rejected=clear_rejected,
        )
    )
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        click.echo(found.text())
    sys.exit(int(ExitCode.PASS))


@dataclass
class Status:
    """What ``status`` found (and did), for the text and the ``--json`` output."""

    project: str
    region: str
    service: str
    uri: str = ""
    serving: dict[str, int] = field(default_factory=dict)
    #: Every tag: {"tag", "revision", "url"}.
    tags: list[dict[str, str]] = field(default_factory=list)
    #: The dg- tags: {"tag", "revision", "url", "state": "in_use"|"stale", "until", "by", "text"}.
    temporary_tags: list[dict[str, Any]] = field(default_factory=list)
    last_known_good: str = ""
    served_before: dict[str, int] = field(default_factory=dict)
    rolled_back_to: str = ""
    rejected: list[str] = field(default_factory=list)
    rollback_target: str = ""
    rollback_why: str = ""
    #: What this run changed: removed tags, a cleared rejection.
    changed: list[str] = field(default_factory=list)
    #: dg- tags --remove-stale-tags left alone because a check may still use them.
    kept: list[str] = field(default_factory=list)
    #: The rollout recorded on the service (see :func:`rollout_status`), or None.
    rollout: dict[str, Any] | None = None
    #: The split ``rollback`` would write (a rollout's undo can restore several revisions).
    rollback_split: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "region": self.region,
            "service": self.service,
            "uri": self.uri,
            "serving": dict(self.serving),
            "tags": list(self.tags),
            "temporary_tags": list(self.temporary_tags),
            "last_known_good": self.last_known_good or None,
            "served_before": dict(self.served_before),
            "rolled_back_to": self.rolled_back_to or None,
            "rejected": list(self.rejected),
            "rollback_target": self.rollback_target or None,
            "rollback_why": self.rollback_why,
            "rollback_split": dict(self.rollback_split),
            "rollout": dict(self.rollout) if self.rollout is not None else None,
            "changed": list(self.changed),
            "kept": list(self.kept),
        }

    def text(self) -> str:
        from deploy_guard.gcp.traffic import decode_split, describe

        s = self.service
        rows: list[tuple[str, str]] = [
            ("service", f"{s} (project {self.project}, region {self.region}) {self.uri}".strip()),
            ("serving", describe(self.serving)),
        ]
        plain = [t for t in self.tags if not t["tag"].startswith("dg-")]
        for i, t in enumerate(plain):
            rows.append(("tags" if i == 0 else "", f"{t['tag']} -> {t['revision']}  {t['url']}"))
        if not plain:
            rows.append(("tags", "(none)"))
        for i, t in enumerate(self.temporary_tags):
            rows.append(("temporary tags" if i == 0 else "", t["text"]))
        if self.rollout is not None:
            rows.append(("rollout", self.rollout["text"]))
        rows.append(("last known good", self.last_known_good or "(none recorded)"))
        rows.append(
            (
                "served before",
                f"{describe(self.served_before)} (before the last promotion)"
                if self.served_before
                else "(none recorded)",
            )
        )
        if self.rolled_back_to:
            done = self.rolled_back_to  # a split after a rollout was undone
            rows.append(("last rollback to", describe(decode_split(done)) if "=" in done else done))
        for i, rev in enumerate(self.rejected):
            rows.append(("rejected" if i == 0 else "", rev))
        if not self.rejected:
            rows.append(("rejected", "(none)"))
        if len(self.rollback_split) > 1:
            target = f"{describe(self.rollback_split)}: {self.rollback_why}"
        elif self.rollback_target:
            target = f"{self.rollback_target}: {self.rollback_why}"
        else:
            target = f"nowhere: {self.rollback_why}"
        rows.append(("rollback goes to", target))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        stale = [t for t in self.temporary_tags if t["state"] == "stale"]
        if stale:
            lines.append(
                f"Remove the stale tags: deploy-guard status --service {s} --remove-stale-tags"
            )
        if self.rejected:
            lines.append(
                "A rejected revision is never rollback's own choice. To allow it again: "
                f"deploy-guard status --service {s} --clear-rejected REV (or roll back to it "
                f"by name: deploy-guard rollback --service {s} --to-revision REV)"
            )
        lines += [f"changed: {c}" for c in self.changed]
        lines += [f"kept: {k}" for k in self.kept]
        return "\n".join(lines)


async def read_status(
    project: str,
    region: str,
    service: str,
    *,
    remove_stale_tags: bool = False,
    clear_rejected: str | None = None,
    clients: Any = None,
) -> Status:
    """Read the service (and do what was asked); raises GuardError subclasses."""
    from deploy_guard.gcp.cloudrun import open_service

    async with open_service(project, region, service, clients) as (router, state):
        changed: list[str] = []
        kept: list[str] = []
        if clear_rejected:
            state = await _clear_rejected(router, state, clear_rejected, changed)
        if remove_stale_tags:
            state = await _remove_stale(router, state, changed, kept)
        found = _describe(project, region, state)
        found.changed, found.kept = changed, kept
        await _rollback_choice(router, state, found)
        return found


def _describe(project: str, region: str, state: Any) -> Status:
    from deploy_guard.gcp.tags import temporary_tags
    from deploy_guard.gcp.traffic import (
        LAST_KNOWN_GOOD,
        ROLLED_BACK_TO,
        SERVED_BEFORE,
        decode_split,
        rejected,
        resolve_latest,
        served_split,
    )

    tags = [
        {"tag": a.tag, "revision": a.revision or "LATEST", "url": a.uri}
        for a in resolve_latest(state.traffic_statuses, state.latest_ready_revision)
        if a.tag
    ]
    temp = [
        {
            "tag": t.tag,
            "revision": t.revision,
            "url": t.uri,
            "state": "in_use" if t.in_use else "stale",
            "until": t.until.isoformat() if t.until else None,
            "by": t.by or None,
            "text": t.describe(),
        }
        for t in temporary_tags(state, datetime.now(UTC))
    ]
    return Status(
        project=project,
        region=region,
        service=state.short,
        uri=state.uri,
        serving=served_split(state),
        tags=tags,
        temporary_tags=temp,
        last_known_good=state.annotations.get(LAST_KNOWN_GOOD, ""),
        served_before=decode_split(state.annotations.get(SERVED_BEFORE, "")),
        rolled_back_to=state.annotations.get(ROLLED_BACK_TO, ""),
        rejected=rejected(state.annotations),
        rollout=rollout_status(state.annotations, state.short, datetime.now(UTC)),
    )


def rollout_status(
    annotations: dict[str, str], service: str, now: datetime
) -> dict[str, Any] | None:
    """The rollout recorded on the service, for the JSON and the text (None: none).

    ``running`` while its holder's ``until`` has not passed; ``stopped`` after
    (its process died halfway: resume it or roll it back); ``unreadable`` when
    the record cannot be decoded (never trusted: only a named rollback ends it).
    """
    from deploy_guard.gcp import rollouts
    from deploy_guard.gcp.tags import rfc3339

    try:
        record = rollouts.current(annotations)
    except ValueError as exc:
        return {
            "state": "unreadable",
            "error": str(exc),
            "text": (
                f"{exc}; deploy-guard cannot tell which rollout it records nor whether it "
                f"still runs: `deploy-guard rollback --service {service} --to-revision REV` "
                "puts all traffic on REV and removes the record"
            ),
        }
    if record is None:
        return None
    of = f"{record.step}/{len(record.steps)}"
    # a rollout that stopped on purpose (held, a failed write) said why in its record
    # (redacted again here: a record written by an older guard, or by hand, may carry one)
    from deploy_guard.log import redact_text

    why = redact_text(str(record.extra.get("stopped") or ""))[:500]
    if record.live(now):
        text = (
            f"rollout of {record.revision} in progress: step {of} at {record.percent} %, "
            f"by {record.by}, since {rfc3339(record.started)} (its next write is due by "
            f"{rfc3339(record.until)})"
        )
    else:
        text = (
            f"a rollout of {record.revision} stopped at step {of} ({record.percent} %) and its "
            f"process is gone; continue with `deploy-guard rollout --resume --service "
            f"{service}` or undo it with `deploy-guard rollback --service {service}` (it ran "
            f"as {record.by}; its record expired at {rfc3339(record.until)})"
        )
        if why:
            text += f"; it said why it stopped: {why}"
    return {
        "state": "running" if record.live(now) else "stopped",
        "revision": record.revision,
        "step": record.step,
        "steps": [{"percent": p, "duration_s": d} for p, d in record.steps],
        "percent": record.percent,
        "before": dict(record.before),
        "by": record.by,
        "started": rfc3339(record.started),
        "until": rfc3339(record.until),
        "stopped": why or None,
        "text": text,
    }


async def _rollback_choice(router: Any, state: Any, found: Status) -> None:
    from deploy_guard.actions.target import pick_rollback_target
    from deploy_guard.commands.rollback import done_text, rolled_back_split
    from deploy_guard.gcp.traffic import served_split

    if found.rollout is not None:
        await _rollout_undo_choice(router, state, found)
        return
    done = rolled_back_split(state.annotations)
    if done and served_split(state) == done:
        # what `rollback` itself does then: nothing (a second run never goes further back)
        found.rollback_why = (
            f"already rolled back to {done_text(done)}: rollback changes nothing; "
            "pass --to-revision REV to go further back"
        )
        return
    try:
        target, why = await pick_rollback_target(router, state)
    except ConfigError as exc:
        found.rollback_why = str(exc)
        return
    found.rollback_target, found.rollback_why = target.short, why
    found.rollback_split = {target.short: 100}


async def _rollout_undo_choice(router: Any, state: Any, found: Status) -> None:
    """Where ``rollback`` goes with a rollout recorded: the split from before it."""
    from deploy_guard.gcp import rollouts

    shown = found.rollout
    assert shown is not None
    if shown["state"] == "unreadable":
        found.rollback_why = "it needs --to-revision REV: the rollout record cannot be read"
        return
    record = rollouts.current(state.annotations)
    assert record is not None
    ready = {r.short for r in await router.list_revisions(state.name) if r.ready}
    split = rollouts.restore_split(record, ready)
    if not split:
        found.rollback_why = (
            f"no Ready revision of the split before the rollout of {record.revision} is "
            "left; pass --to-revision REV"
        )
        return
    found.rollback_split = split
    found.rollback_target = next(iter(split)) if len(split) == 1 else ""
    found.rollback_why = f"the split from before the rollout of {record.revision}" + (
        " (refused while the rollout runs: stop it first, or pass --force)"
        if shown["state"] == "running"
        else ""
    )


async def _clear_rejected(router: Any, state: Any, revision: str, changed: list[str]) -> Any:
    from deploy_guard.gcp.traffic import REJECTED, rejected, with_rejected

    listed = rejected(state.annotations)
    if revision not in listed:
        shown = ", ".join(listed) or "nothing"
        raise ConfigError(
            f"{revision} is not on {state.short}'s rejected list (it lists {shown}); "
            "nothing changed"
        )
    state = await router.set_annotations(
        state, {REJECTED: with_rejected(state.annotations, clear=revision)}
    )
    log.info("rejection_cleared", service=state.short, revision=revision)
    changed.append(f"{revision} is no longer recorded as rejected")
    return state


async def _remove_stale(router: Any, state: Any, changed: list[str], kept: list[str]) -> Any:
    from deploy_guard.gcp.tags import (
        TAGS_ANNOTATION,
        stale,
        temporary_tags,
        without_holders,
        without_tags,
    )

    now = datetime.now(UTC)
    done_before = bool(changed)  # --clear-rejected may have changed something already
    gone = [t.tag for t in stale(state, now)]
    # a tag is never taken from a check that may still run: say until when
    kept += [
        f"{t.describe()} (a running check may use it; removable after that time)"
        for t in temporary_tags(state, now)
        if t.in_use
    ]
    spec = without_tags(state, gone)
    if not gone or spec is None:
        changed.append(
            "no stale temporary tag to remove" + ("" if done_before else "; nothing changed")
        )
        return state
    state = await router.set_traffic(
        state,
        spec,
        why="remove stale temporary tags",
        annotations={TAGS_ANNOTATION: without_holders(state.annotations, gone)},
    )
    log.info("stale_tags_removed", service=state.short, tags=",".join(gone))
    changed.append(f"removed stale temporary tags {', '.join(gone)}")
    return state
