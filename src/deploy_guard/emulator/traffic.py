"""Traffic rules of Cloud Run, with no I/O: validate a spec, resolve it.

A service's ``traffic`` is the spec a caller wrote; ``traffic_statuses`` is
what is served once reconciled. Empty ``traffic`` means 100 % to LATEST (the
latest Ready revision). A status for a LATEST target keeps type LATEST and an
empty revision, as the v2 API returns it; :func:`serving_split` resolves it to
the revision that actually gets the requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from google.cloud import run_v2

from deploy_guard.errors import EmulatorError

LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
_TAG = re.compile(r"^[a-z](?:[a-z0-9-]{0,44}[a-z0-9])?$")
#: A tag URL is ``TAG---SERVICE-HASH-REGION.a.run.app``: one DNS label of at
#: most 63 characters, so Cloud Run refuses a tag and service name longer than
#: this together (46 + ``---`` + ``-`` + 10-character hash + ``-`` + 2 = 63).
MAX_TAG_AND_SERVICE = 46


def is_latest(target: run_v2.TrafficTarget | run_v2.TrafficTargetStatus) -> bool:
    """A target is LATEST when typed so, or untyped and naming no revision."""
    return target.type_ == LATEST or (not target.type_ and not target.revision)


def validate(
    targets: Iterable[run_v2.TrafficTarget], known_revisions: set[str], *, service_id: str = ""
) -> None:
    """Refuse a traffic spec the real API refuses, naming the offending entry.

    ``service_id`` is the service's name, which a tag's length is checked with.
    """
    total = 0
    tags: set[str] = set()
    count = 0
    for i, target in enumerate(targets):
        count += 1
        where = f"traffic[{i}]"
        if target.type_ == LATEST and target.revision:
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"{where}: a LATEST target must not name a revision ({target.revision!r})",
            )
        if not is_latest(target) and target.revision not in known_revisions:
            raise EmulatorError(
                "INVALID_ARGUMENT",
                f"{where}: revision {target.revision!r} does not exist; traffic can only "
                "go to existing revisions of this service or to LATEST",
            )
        if not 0 <= target.percent <= 100:
            raise EmulatorError(
                "INVALID_ARGUMENT", f"{where}: percent {target.percent} is not within 0-100"
            )
        if target.tag:
            if not _TAG.match(target.tag):
                raise EmulatorError(
                    "INVALID_ARGUMENT",
                    f"{where}: tag {target.tag!r} is invalid: use lowercase letters, digits "
                    "and hyphens, starting with a letter",
                )
            if len(target.tag) + len(service_id) > MAX_TAG_AND_SERVICE:
                # Cloud Run's own words (seen in public deploy logs), at request validation.
                raise EmulatorError(
                    "INVALID_ARGUMENT",
                    f"{where}.tag: traffic tag '{target.tag}' and service name '{service_id}' "
                    "together are too long. Combined traffic tag and service name cannot "
                    f"exceed {MAX_TAG_AND_SERVICE} characters.",
                )
            if target.tag in tags:
                raise EmulatorError(
                    "INVALID_ARGUMENT", f"{where}: tag {target.tag!r} is used more than once"
                )
            tags.add(target.tag)
        total += target.percent
    if count and total != 100:
        raise EmulatorError(
            "INVALID_ARGUMENT",
            f"traffic percentages must sum to 100, but they sum to {total}",
        )


def statuses(targets: Iterable[run_v2.TrafficTarget]) -> list[run_v2.TrafficTargetStatus]:
    """What the spec serves once reconciled (without tag URIs, which the router gives)."""
    out = [
        run_v2.TrafficTargetStatus(
            type_=LATEST if is_latest(t) else REVISION,
            revision="" if is_latest(t) else t.revision,
            percent=t.percent,
            tag=t.tag,
        )
        for t in targets
    ]
    return out or [run_v2.TrafficTargetStatus(type_=LATEST, percent=100)]


def serving_split(
    served: Iterable[run_v2.TrafficTargetStatus], latest_ready: str
) -> dict[str, int]:
    """Revision short name -> percent of new requests to the service URL."""
    split: dict[str, int] = {}
    for status in served:
        revision = latest_ready if is_latest(status) else status.revision
        if status.percent and revision:
            split[revision] = split.get(revision, 0) + status.percent
    return split


def tag_targets(served: Iterable[run_v2.TrafficTargetStatus], latest_ready: str) -> dict[str, str]:
    """Tag -> revision short name it reaches."""
    return {s.tag: (latest_ready if is_latest(s) else s.revision) for s in served if s.tag}
