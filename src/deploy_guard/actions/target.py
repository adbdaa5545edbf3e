"""Where a rollback sends traffic when nobody says: one choice for every command.

``check`` (a candidate that held all the traffic), ``deploy-guard rollback``
and ``deploy-guard status`` (which shows the choice) all ask
:func:`pick_rollback_target`, so the revision a person is told about is the
one a rollback would really choose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploy_guard.errors import ConfigError
from deploy_guard.gcp.traffic import (
    LAST_KNOWN_GOOD,
    SERVED_BEFORE,
    RevisionState,
    ServiceState,
    decode_split,
    describe,
    newest_ready_before,
    rejected,
    served_split,
)

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.cloudrun import CloudRun


async def choose_rollback_target(
    router: CloudRun, state: ServiceState, *, exclude: str | None = None
) -> RevisionState:
    """Where ``rollback`` sends traffic when not told (see :func:`pick_rollback_target`)."""
    target, _why = await pick_rollback_target(router, state, exclude=exclude)
    return target


async def pick_rollback_target(
    router: CloudRun, state: ServiceState, *, exclude: str | None = None
) -> tuple[RevisionState, str]:
    """Where ``rollback`` sends traffic when not told, and why, in words for the report.

    In order: the last known good revision, unless it is what serves everything
    now (a check just promoted it: going back means away from it); else the
    revision that served most before the guard's last promotion (recorded in
    the :data:`SERVED_BEFORE` annotation); else the newest Ready revision older
    than everything serving now (the API keeps no traffic history, so this is
    the last resort). Never a revision recorded in :data:`REJECTED` (a check
    failed it, or a person rolled back from it). Raises :class:`ConfigError`
    when no Ready revision qualifies.
    """
    revisions = await router.list_revisions(state.name)
    by_name = {r.short: r for r in revisions}
    current = served_split(state)
    listed = rejected(state.annotations)
    refused = {*listed, *([exclude] if exclude else [])}

    def usable(name: str) -> bool:
        rev = by_name.get(name)
        return bool(rev and rev.ready and name not in refused and current != {name: 100})

    good = state.annotations.get(LAST_KNOWN_GOOD, "")
    if good and usable(good):
        return by_name[good], "the last known good revision (recorded by a passing check)"
    before = decode_split(state.annotations.get(SERVED_BEFORE, ""))
    for name, pct in sorted(before.items(), key=lambda i: -i[1]):
        if usable(name):
            whose = f" of {good}" if good else ""
            return by_name[name], f"served {pct}% before the promotion{whose}"
    if exclude:
        current.setdefault(exclude, 0)
    candidate = newest_ready_before(revisions, current, skip=refused)
    if candidate is None:
        serving = describe(served_split(state)) or "nothing"
        # rejected revisions that would otherwise qualify: say how to allow one again
        newest = max((r.create_time for r in revisions if r.short in current), default=0.0)
        held = [r.short for r in revisions if r.short in listed and r.create_time < newest]
        also = (
            f" ({', '.join(held)} recorded as rejected: `deploy-guard status --service "
            f"{state.short} --clear-rejected REV` takes one off the list)"
            if held
            else ""
        )
        if not good:
            known = "none is recorded as last known good"
        elif served_split(state) == {good: 100}:
            known = f"the last known good ({good}) is the one serving"
        elif good in refused:
            known = f"the last known good ({good}) is on the rejected list"
        else:
            known = f"the last known good ({good}) is gone or not Ready"
        raise ConfigError(
            f"no Ready revision of {state.short} to roll back to: {serving} serves now, "
            f"{known} and no usable Ready revision is older than the "
            f"serving one{also}; pass --to-revision REV to choose one"
        )
    newest = max((r.create_time for r in revisions if r.short in current), default=0.0)
    skipped = [
        r.short
        for r in revisions
        if r.short in listed and candidate.create_time < r.create_time < newest
    ]
    why = f"the newest Ready revision older than {', '.join(sorted(current))}"
    if skipped:
        why += f", skipping rejected {', '.join(skipped)}"
    return candidate, why
