"""What the Cloud Logging and Cloud Monitoring evidence sources share.

Both read one candidate revision (and, for baseline-relative rules, the
revisions that served before it) of one service, over a window that starts at
the rollout, through the shared :class:`~deploy_guard.gcp.clients.Clients`,
counting every API call in one :class:`~deploy_guard.gcp.errors.ApiCalls`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.errors import ApiCalls

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RevisionSource:
    """The scope of an evidence source; subclasses say which rules are theirs."""

    #: The ``Rule`` attribute holding this source's spec (``"logs"``, ``"metric"``).
    spec_field = ""

    def __init__(
        self,
        clients: Clients,
        *,
        project: str,
        service: str,
        revision: str,
        rules: Sequence[Rule],
        since: datetime,
        baseline: Sequence[str] = (),
        calls: ApiCalls | None = None,
        retry_deadline: float = 30.0,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.clients = clients
        self.project = project
        self.service = service
        self.revision = revision
        self.rules = [r for r in rules if getattr(r, self.spec_field, None) is not None]
        self.since = since
        self.baseline = list(baseline)
        self.calls = calls if calls is not None else ApiCalls()
        self.retry_deadline = retry_deadline
        self.now = now

    def bound(self, deadline: float | None) -> float:
        """Seconds one pass's calls may take, retries included.

        Used as the retry deadline *and* as the client's ``timeout``, which
        google-api-core counts down across attempts, so the worker thread
        running a call ends at about that time too, and a pass cancelled by a
        decision cannot hold the process for the client's default timeout.
        About: google-api-core gives a last attempt under 1 s the whole timeout
        again, and each further page of a query is a call of its own, so a
        stuck API can hold a thread up to a few times this long.
        ``deadline=None``: the source's own ``retry_deadline``; the report-only
        pass after a decision passes less.
        """
        return self.retry_deadline if deadline is None else min(deadline, self.retry_deadline)
