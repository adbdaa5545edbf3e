"""What a watch judges on a service, read from the service alone (pure).

The watch driver (:mod:`deploy_guard.runtime.watch`) reads the service every
``--service-interval`` and just before it acts; everything it decides from
that read is here, as plain functions of the read, so that the same read
always means the same thing:

- :func:`primary_revision`: the revision judged (the newest one serving);
- :func:`baseline_of`: what it is compared with (the last known good revision,
  only while that still serves: a revision with no traffic left logs nothing,
  and any line of the watched one would break ``relative_to_baseline``);
- :func:`rollout_running`: a live rollout the watch stands aside for;
- :func:`sessions_outlasting`: the rules whose WebSocket sessions a revision's
  request timeout would cut (Cloud Run closes them with 1006: not the
  revision's fault, so never judged on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, served_split

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.traffic import RevisionState, ServiceState
    from deploy_guard.policy.model import Policy


def primary_revision(state: ServiceState) -> str | None:
    """The revision a watch judges: the latest Ready one if it serves, else the largest share."""
    split = {r: p for r, p in served_split(state).items() if p > 0}
    if not split:
        return None
    if state.latest_ready_revision in split:
        return state.latest_ready_revision
    return max(split, key=lambda r: (split[r], r))


def baseline_of(state: ServiceState, primary: str) -> tuple[str, ...]:
    """The last known good revision while it serves beside ``primary`` (else nothing)."""
    good = state.annotations.get(LAST_KNOWN_GOOD, "")
    if good and good != primary and served_split(state).get(good, 0) > 0:
        return (good,)
    return ()


def rollout_running(state: ServiceState, now: datetime) -> str | None:
    """Words for a live rollout on the service (None: none, or its process is gone)."""
    from deploy_guard.gcp.rollouts import current, holder_gone, overtaken

    try:
        record = current(state.annotations)
    except ValueError:
        return None
    if record is None or overtaken(record, served_split(state)):
        return None
    if not record.live(now) or holder_gone(record):
        return None
    return f"a rollout is in progress ({record.describe()})"


def sessions_outlasting(policies: Sequence[Policy], request_timeout: float) -> tuple[str, ...]:
    """The rules whose healthy sessions last as long as ``request_timeout`` or longer.

    The same test as the check's refusal
    (:func:`deploy_guard.runtime.session.check_request_timeout`): every expect
    step's timeout, then the hold.
    """
    return tuple(
        rule.name
        for policy in policies
        for rule in policy.rules
        if rule.websocket is not None and rule.websocket.longest_session >= request_timeout
    )


def outlasting_note(service: str, revision: RevisionState, unfit: Sequence[str]) -> str:
    """The report's note for :func:`sessions_outlasting`'s rules on ``revision``."""
    from deploy_guard.policy.units import format_duration

    return (
        f"revision {revision.short} has a request timeout of "
        f"{format_duration(revision.request_timeout)}, shorter than the sessions of "
        f"{', '.join(unfit)}: Cloud Run would cut them, so they are not judged on "
        f"{revision.short}; raise the service's timeout (`gcloud run services update "
        f"{service} --timeout=...`) or shorten their hold"
    )
