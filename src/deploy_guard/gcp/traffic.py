"""Traffic plans: pure functions over plain snapshots of a Cloud Run service.

What a rollback restores, what a promotion writes, and whether someone else
changed the service since the guard looked: these are decisions, so they live
here with no client, no clock and no I/O, and are tested from plain data.
:mod:`deploy_guard.gcp.cloudrun` turns API objects into these snapshots and
writes the plans back.

Revision names here are always *short* names (``chat-00002-xyz``), as
``TrafficTarget.revision`` holds them; ``None`` stands for "the latest Ready
revision" (``TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from deploy_guard.errors import ActionError

#: The annotation where a passing check records the revision it vouched for.
LAST_KNOWN_GOOD = "deploy-guard.dev/last-known-good"
#: The annotation where ``rollback`` records the revision it put traffic back on,
#: so that a second run without ``--to-revision`` sees the work done instead of
#: stepping one more revision back.
ROLLED_BACK_TO = "deploy-guard.dev/rolled-back-to"
#: The annotation where a promotion records what served before it
#: (``chat-00001-abc=90,chat-00002-def=10``): where a later ``rollback`` goes.
SERVED_BEFORE = "deploy-guard.dev/served-before"
#: The annotation listing revisions a check failed or a person rolled back from
#: (newest last, at most :data:`REJECTED_KEPT`): never a rollback's choice.
REJECTED = "deploy-guard.dev/rejected"
#: Cloud Run keeps at most 1,000 revisions per service: a list this long forgets
#: none that can still be chosen (~30 KB, within the annotations' 256 KB).
REJECTED_KEPT = 1000
#: Prefix of the temporary tags the guard adds to reach an untagged candidate.
TEMP_TAG_PREFIX = "dg-"
#: Cloud Run refuses a tag whose length plus the service name's exceeds this
#: ("Combined traffic tag and service name cannot exceed 46 characters."): a tag
#: URL ``TAG---SERVICE-HASH-REGION.a.run.app`` is one 63-character DNS label.
MAX_TAG_AND_SERVICE = 46
#: Random characters in a temporary tag when the service name leaves room; fewer
#: on a long name, down to one (36 choices) for a 42-character name.
TEMP_TAG_RANDOM = 8
#: What the random part is drawn from (a tag is lowercase letters, digits, hyphens).
TEMP_TAG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def temp_tag_room(service: str) -> int:
    """How many random characters a temporary tag may have on ``service`` (0: none fits).

    ``dg-`` plus at least one character is four, so a service name of 43 to 49
    characters (Cloud Run allows 49) leaves no room for any temporary tag.
    """
    room = MAX_TAG_AND_SERVICE - len(service) - len(TEMP_TAG_PREFIX)
    return max(0, min(TEMP_TAG_RANDOM, room))


def temp_tag(service: str, taken: Iterable[str], draw: Callable[[int], str]) -> str | None:
    """A fresh temporary tag for ``service``, not among ``taken``; None if none fits.

    ``draw(n)`` returns n random characters of :data:`TEMP_TAG_ALPHABET` (the one
    impure input, so this stays testable). Two concurrent checks that drew the
    same tag could not both write it: the second one's re-read sees the first's
    write and refuses (the guard never overwrites a change it did not make).
    """
    room = temp_tag_room(service)
    if room == 0:
        return None
    used = set(taken)
    for _ in range(100):
        tag = f"{TEMP_TAG_PREFIX}{draw(room)}"
        if tag not in used:
            return tag
    return None


@dataclass(frozen=True)
class Allocation:
    """One traffic target: a share of the service's traffic and/or a tag URL."""

    revision: str | None  # None: LATEST
    percent: int
    tag: str = ""
    uri: str = ""  # only in traffic_statuses: the tag's URL


@dataclass(frozen=True)
class ServiceState:
    """What the guard needs to know about a service at one moment."""

    name: str  # full resource name
    short: str
    generation: int
    latest_created_revision: str  # short name
    latest_ready_revision: str  # short name
    traffic: tuple[Allocation, ...]  # as written (the spec)
    traffic_statuses: tuple[Allocation, ...]  # as served
    uri: str = ""
    reconciling: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    terminal_message: str = ""
    #: The generation Cloud Run has finished acting on (0: not reported).
    observed_generation: int = 0


def settled(state: ServiceState) -> bool:
    """True when Cloud Run has finished acting on the service's latest spec.

    While ``reconciling``, ``traffic_statuses`` can still show the split from
    before the last deploy: a LATEST entry resolves to the old revision, and a
    split recorded then would say the candidate held no traffic.
    """
    if state.reconciling:
        return False
    return state.observed_generation == 0 or state.observed_generation >= state.generation


def failed_reconcile(state: ServiceState) -> bool:
    """True when Cloud Run gave up on the service's latest spec: waiting changes nothing.

    A failed reconciliation leaves ``observed_generation`` behind (at the last
    serving state, with ``traffic_statuses`` and ``latest_ready_revision``), so
    :func:`settled` stays False for good; ``terminal_condition`` failed and
    ``reconciling`` false is how to tell it from one still under way.
    """
    return bool(state.terminal_message) and not state.reconciling and not settled(state)


@dataclass(frozen=True)
class RevisionState:
    """One revision: whether it is Ready, and why not."""

    name: str  # full resource name
    short: str
    service: str  # short service name
    ready: bool | None  # None: still starting
    message: str = ""  # the Ready condition's message when it failed
    create_time: float = 0.0  # epoch seconds; sort by this, never by list order
    #: Its request timeout in seconds (``timeout``; Cloud Run's 300 s when unset):
    #: Cloud Run cuts any request at it, WebSocket sessions included.
    request_timeout: float = 300.0


def resolve_latest(allocations: Iterable[Allocation], latest_ready: str) -> tuple[Allocation, ...]:
    """Pin LATEST targets to the revision they meant when read."""
    return tuple(
        replace(a, revision=latest_ready) if a.revision is None and latest_ready else a
        for a in allocations
    )


def serving(allocations: Iterable[Allocation]) -> dict[str, int]:
    """Percent of traffic per revision (tags without traffic left out)."""
    out: dict[str, int] = {}
    for a in allocations:
        if a.percent > 0 and a.revision is not None:
            out[a.revision] = out.get(a.revision, 0) + a.percent
    return out


def served_split(state: ServiceState) -> dict[str, int]:
    """What the service actually serves now, LATEST resolved to a revision name."""
    statuses = state.traffic_statuses or state.traffic
    if not statuses:  # empty traffic: 100 % to the latest Ready revision
        return {state.latest_ready_revision: 100} if state.latest_ready_revision else {}
    return serving(resolve_latest(statuses, state.latest_ready_revision))


def encode_split(split: dict[str, int]) -> str:
    """A split as an annotation value: ``rev=percent`` pairs, largest first."""
    return ",".join(f"{rev}={pct}" for rev, pct in sorted(split.items(), key=lambda i: -i[1]))


def decode_split(text: str) -> dict[str, int]:
    """The inverse of :func:`encode_split`; pairs that do not parse are left out."""
    out: dict[str, int] = {}
    for part in text.split(","):
        rev, _, pct = part.strip().partition("=")
        if rev and pct.isdigit():
            out[rev] = int(pct)
    return out


def rejected(annotations: dict[str, str]) -> list[str]:
    """The revisions recorded as rejected, oldest first."""
    return [r for r in annotations.get(REJECTED, "").split(",") if r.strip()]


def with_rejected(annotations: dict[str, str], *add: str, clear: str = "") -> str:
    """The :data:`REJECTED` value with ``add`` appended (and ``clear`` taken out)."""
    kept = [r for r in rejected(annotations) if r not in add and r != clear]
    return ",".join([*kept, *(r for r in add if r != clear)][-REJECTED_KEPT:])


def describe(split: dict[str, int]) -> str:
    """``chat-00001-abc 90%, chat-00002-def 10%`` for messages and reports."""
    if not split:
        return "(no traffic)"
    return ", ".join(f"{rev} {pct}%" for rev, pct in sorted(split.items(), key=lambda i: -i[1]))


def renormalise(shares: dict[str, int]) -> dict[str, int]:
    """Scale integer shares to sum to 100 (largest remainder, ties by name)."""
    total = sum(shares.values())
    if total <= 0:
        return {}
    exact = {rev: pct * 100 / total for rev, pct in shares.items()}
    out = {rev: int(v) for rev, v in exact.items()}
    left = 100 - sum(out.values())
    by_remainder = sorted(exact, key=lambda r: (-(exact[r] - out[r]), r))
    for rev in by_remainder[:left]:
        out[rev] += 1
    return {rev: pct for rev, pct in out.items() if pct > 0}


def step_split(before: dict[str, int], candidate: str, percent: int) -> dict[str, int]:
    """A rollout step's split: ``percent`` to the candidate, the rest to the revisions
    that served before the rollout, in their proportions (largest remainder).

    Empty when no other revision served before (there is nothing to share with).
    """
    others = {rev: pct for rev, pct in before.items() if rev != candidate and pct > 0}
    if not others or not 0 < percent < 100:
        return {}
    total = sum(others.values())
    exact = {rev: pct * (100 - percent) / total for rev, pct in others.items()}
    out = {rev: int(v) for rev, v in exact.items()}
    left = 100 - percent - sum(out.values())
    for rev in sorted(exact, key=lambda r: (-(exact[r] - out[r]), r))[:left]:
        out[rev] += 1
    split = {rev: pct for rev, pct in out.items() if pct > 0}
    split[candidate] = percent
    return split


def served_spec(state: ServiceState) -> tuple[Allocation, ...]:
    """What the service serves, as a spec to write (LATEST kept as LATEST, no URLs).

    The starting point for a write after a failed reconcile, whose spec is not
    what is served and may name a revision that no longer exists.
    """
    return tuple(replace(a, uri="") for a in state.traffic_statuses)


def tags_without(
    allocations: Iterable[Allocation], *, drop_tags: Iterable[str] = ()
) -> tuple[Allocation, ...]:
    """The tag-only (0 %) targets to keep when a plan rewrites the traffic."""
    dropped = set(drop_tags)
    out: list[Allocation] = []
    for a in allocations:
        if a.tag and a.tag not in dropped:
            out.append(Allocation(revision=a.revision, percent=0, tag=a.tag))
    return tuple(out)


def plan(split: dict[str, int], tags: Sequence[Allocation]) -> tuple[Allocation, ...]:
    """A full traffic spec: every revision pinned by name, then the tags at 0 %.

    A tag on a revision that also gets traffic is folded into that entry, as
    Cloud Run expects one entry per (revision, tag).
    """
    tagged: dict[str, list[str]] = {}
    for t in tags:
        if t.revision is not None:
            tagged.setdefault(t.revision, []).append(t.tag)
    entries: list[Allocation] = []
    for rev, pct in sorted(split.items()):
        rev_tags = tagged.pop(rev, [])
        entries.append(Allocation(revision=rev, percent=pct, tag=rev_tags[0] if rev_tags else ""))
        entries.extend(Allocation(revision=rev, percent=0, tag=t) for t in rev_tags[1:])
    for rev, rev_tags in sorted(tagged.items()):
        entries.extend(Allocation(revision=rev, percent=0, tag=t) for t in rev_tags)
    entries.extend(
        Allocation(revision=None, percent=0, tag=t.tag) for t in tags if t.revision is None
    )
    return tuple(entries)


def rollback_plan(
    before: ServiceState, candidate: str, *, drop_tags: Iterable[str] = ()
) -> tuple[Allocation, ...] | None:
    """The split to restore: the recorded one minus the candidate, renormalised.

    Returns None when the candidate held no traffic (nothing to move). Raises
    :class:`ActionError` when the candidate held *all* of it: there is no
    baseline to go back to, and a human (or ``deploy-guard rollback``) must say
    where traffic goes.
    """
    split = served_split(before)
    if split.get(candidate, 0) == 0:
        return None
    rest = {rev: pct for rev, pct in split.items() if rev != candidate}
    restored = renormalise(rest)
    if not restored:
        raise ActionError(
            f"{candidate} served all of {before.short}'s traffic before the check: no baseline "
            "to roll back to; run `deploy-guard rollback --service "
            f"{before.short} --to-revision REV`"
        )
    return plan(restored, tags_without(before.traffic, drop_tags=drop_tags))


def pin_plan(
    current: ServiceState, revision: str, *, drop_tags: Iterable[str] = ()
) -> tuple[Allocation, ...]:
    """100 % to ``revision`` pinned by name (not LATEST), the tags kept at 0 %."""
    return plan({revision: 100}, tags_without(current.traffic, drop_tags=drop_tags))


def with_tag(current: ServiceState, revision: str, tag: str) -> tuple[Allocation, ...]:
    """The current spec plus a 0 % tag on ``revision``; LATEST stays as written.

    An empty spec means "100 % to the latest Ready revision"; it is written out
    as such, or the new list would hold only the 0 % tag (which Cloud Run
    rejects: the percentages must sum to 100).
    """
    spec = current.traffic or (Allocation(revision=None, percent=100),)
    return (*spec, Allocation(revision=revision, percent=0, tag=tag))


def without_tag(
    current: ServiceState, tag: str, *, start: Sequence[Allocation] | None = None
) -> tuple[Allocation, ...] | None:
    """The current spec (or ``start``) minus ``tag``; None when the tag is not in it."""
    return without_tags(current, [tag], start=start)


def without_tags(
    current: ServiceState, tags: Iterable[str], *, start: Sequence[Allocation] | None = None
) -> tuple[Allocation, ...] | None:
    """The current spec (or ``start``) minus ``tags``; None when none of them is in it.

    A tag riding on an entry that carries traffic loses only its name: the
    share stays where it was.
    """
    gone = set(tags)
    base = current.traffic if start is None else tuple(start)
    if not any(a.tag in gone for a in base):
        return None
    out: list[Allocation] = []
    for a in base:
        if a.tag not in gone:
            out.append(a)
        elif a.percent > 0:  # the tag rides on a serving entry: keep the share
            out.append(replace(a, tag="", uri=""))
    return tuple(out)


def shows(state: ServiceState, spec: Sequence[Allocation]) -> bool:
    """True when what the service *serves* matches a written spec (write, then verify)."""
    if state.reconciling:
        return False
    want = serving(resolve_latest(spec, state.latest_ready_revision))
    if not spec:
        want = {state.latest_ready_revision: 100}
    if served_split(state) != want:
        return False
    want_tags = {(a.revision, a.tag) for a in resolve_latest(spec, state.latest_ready_revision)}
    have_tags = {
        (a.revision, a.tag)
        for a in resolve_latest(state.traffic_statuses, state.latest_ready_revision)
    }
    return {t for t in want_tags if t[1]} == {t for t in have_tags if t[1]}


def superseded_reason(expected: ServiceState, now: ServiceState) -> str | None:
    """Why the service is no longer the one the guard last saw (None: it is).

    ``expected`` is the state after the guard's own last write (or the state
    recorded at the start): any later change to ``generation``,
    ``latest_created_revision`` or the traffic spec is someone else's.
    """
    if now.latest_created_revision != expected.latest_created_revision:
        return (
            f"a newer revision {now.latest_created_revision} was created during the check "
            f"(was {expected.latest_created_revision})"
        )
    if now.generation != expected.generation:
        return (
            "the service was updated during the check "
            f"(generation {expected.generation} -> {now.generation})"
        )
    if _spec_key(now.traffic) != _spec_key(expected.traffic):
        return "the service's traffic was changed during the check"
    return None


def _spec_key(allocations: Iterable[Allocation]) -> list[tuple[str, int, str]]:
    return sorted((a.revision or "LATEST", a.percent, a.tag) for a in allocations)


def same_spec(a: Iterable[Allocation], b: Iterable[Allocation]) -> bool:
    """Two traffic specs say the same (their order and URLs aside)."""
    return _spec_key(a) == _spec_key(b)


def spec_text(spec: Iterable[Allocation]) -> str:
    """``chat-00001-abc 90%, LATEST 10% tag=candidate`` for messages."""
    parts = []
    for a in spec:
        rev = a.revision or "LATEST"
        parts.append(f"{rev} {a.percent}%" + (f" tag={a.tag}" if a.tag else ""))
    return ", ".join(parts) or "(latest)"


def find_tag_uri(state: ServiceState, revision: str) -> tuple[str, str] | None:
    """``(tag, uri)`` of a tag URL that reaches ``revision``, if the service has one."""
    for a in resolve_latest(state.traffic_statuses, state.latest_ready_revision):
        if a.tag and a.uri and a.revision == revision:
            return a.tag, a.uri
    return None


def newest_ready_before(
    revisions: Sequence[RevisionState],
    current: dict[str, int],
    *,
    skip: Iterable[str] = (),
) -> RevisionState | None:
    """The newest Ready revision older than everything serving now, not in ``skip``.

    The API keeps no traffic history, so "the revision that served before the
    current one" is approximated by creation time. Every revision serving now
    counts for "older than", skipped ones included.
    """
    skipped = set(skip)
    serving_times = [r.create_time for r in revisions if r.short in current]
    newest_serving = max(serving_times) if serving_times else float("inf")
    older = [r for r in revisions if r.ready and r.short not in current and r.short not in skipped]
    older = [r for r in older if r.create_time < newest_serving]
    return max(older, key=lambda r: r.create_time) if older else None
