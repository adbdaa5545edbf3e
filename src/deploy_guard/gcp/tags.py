"""Temporary ``dg-`` tags: who holds one, until when, and which are left over.

A check adds a 0 % tag (``dg-`` + up to 8 random letters and digits, fewer on a
long service name: :func:`deploy_guard.gcp.traffic.temp_tag`) to reach an
untagged candidate and removes it when it ends. A second Ctrl-C, a killed build step or a lost
connection can leave the tag behind, and Cloud Run keeps it forever. So the
write that adds a tag also records its holder in the service annotation
:data:`TAGS_ANNOTATION`, a small JSON map::

    {"dg-1a2b3c4d": {"until": "2026-12-04T21:05:00Z", "by": "build 8f1e... / host:pid"}}

``until`` is when the check that added it must have ended (its bound plus a
margin). A ``dg-`` tag whose time is up, or that has no record at all (an older
deploy-guard made it, or someone edited the annotation), is *stale*: ``check``
and ``rollback`` mention it and ``deploy-guard status --remove-stale-tags``
removes it. A tag whose holder may still be running is *in use* and is never
removed. Everything here is pure: the clock is a parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from deploy_guard.gcp.traffic import TEMP_TAG_PREFIX, ServiceState, resolve_latest
from deploy_guard.gcp.traffic import without_tags as without_tags  # one copy, in traffic

#: The annotation holding ``{tag: {"until": RFC 3339, "by": who}}`` for temporary tags.
TAGS_ANNOTATION = "deploy-guard.dev/tags"
#: Records kept at most (a hostile or runaway annotation is cut, never trusted whole).
MAX_RECORDS = 100


@dataclass(frozen=True)
class TempTag:
    """One ``dg-`` tag on a service, and whether a check may still be using it."""

    tag: str
    revision: str
    uri: str
    #: When its holder's check must have ended; None when there is no record.
    until: datetime | None
    by: str
    in_use: bool

    def describe(self) -> str:
        """``dg-1a2b (chat-00003-xyz): in use by build 12 until 21:05:00Z`` and the like."""
        where = f"{self.tag} ({self.revision or 'LATEST'})"
        who = f" by {self.by}" if self.by else ""
        if self.until is None:
            return f"{where}: stale, no record of its check (an older deploy-guard made it)"
        at = rfc3339(self.until)
        if self.in_use:
            return f"{where}: in use{who} until {at}"
        return f"{where}: stale, its check{who} should have ended by {at}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def records(annotations: dict[str, str]) -> dict[str, dict[str, str]]:
    """The recorded holders, ``{tag: {"until": ..., "by": ...}}``.

    Anything that is not that shape (not JSON, not a map, a value that is not
    a map of strings) is left out: such a tag then reads as having no record,
    which makes it stale, never "in use" forever.
    """
    try:
        data = json.loads(annotations.get(TAGS_ANNOTATION, "") or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, dict[str, str]] = {}
    for tag, value in list(data.items())[:MAX_RECORDS]:
        if not (isinstance(tag, str) and tag.startswith(TEMP_TAG_PREFIX)):
            continue
        if isinstance(value, dict) and isinstance(value.get("until"), str):
            out[tag] = {"until": str(value["until"]), "by": str(value.get("by", ""))[:200]}
    return out


def _present(state: ServiceState) -> set[str]:
    return {a.tag for a in (*state.traffic, *state.traffic_statuses) if a.tag}


def with_holder(state: ServiceState, tag: str, *, until: datetime, by: str) -> str:
    """The annotation's new value: ``tag`` held by ``by`` until ``until``.

    Records of tags no longer on the service (removed by hand, or by a write
    that dropped them) are pruned on the way.
    """
    present = _present(state)
    kept = {t: r for t, r in records(state.annotations).items() if t in present}
    kept[tag] = {"until": rfc3339(until), "by": by[:200]}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


def without_holders(annotations: dict[str, str], tags: Iterable[str]) -> str:
    """The annotation's new value with ``tags``' records taken out (``{}`` when none is left)."""
    gone = set(tags)
    kept = {t: r for t, r in records(annotations).items() if t not in gone}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"))


def temporary_tags(state: ServiceState, now: datetime) -> list[TempTag]:
    """Every ``dg-`` tag on the service, with its holder and whether it is in use at ``now``."""
    held = records(state.annotations)
    seen: dict[str, TempTag] = {}
    entries = resolve_latest(state.traffic_statuses or state.traffic, state.latest_ready_revision)
    for a in entries:
        if not a.tag.startswith(TEMP_TAG_PREFIX) or a.tag in seen:
            continue
        record = held.get(a.tag)
        until = _parse_time(record["until"]) if record else None
        seen[a.tag] = TempTag(
            tag=a.tag,
            revision=a.revision or "",
            uri=a.uri,
            until=until,
            by=record["by"] if record else "",
            in_use=until is not None and until > now,
        )
    return sorted(seen.values(), key=lambda t: t.tag)


def stale(state: ServiceState, now: datetime) -> list[TempTag]:
    """The ``dg-`` tags no running check can be using (safe to remove)."""
    return [t for t in temporary_tags(state, now) if not t.in_use]


def stale_note(service: str, left: Iterable[TempTag]) -> str:
    """What ``check`` and ``rollback`` say about leftover tags, with the command removing them."""
    return (
        f"leftover temporary tags on {service}: "
        + "; ".join(t.describe() for t in left)
        + f". Remove them: deploy-guard status --service {service} --remove-stale-tags"
    )
