"""What the user asked for, and how the driver tells a view that the report changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.probes.auth import TokenChoice
    from deploy_guard.report.model import CheckReport


@dataclass(frozen=True)
class CheckOptions:
    """What the user asked for (flags), with the gate's timing knobs."""

    project: str
    region: str
    revision: str
    service: str | None = None
    promote: bool = False
    dry_run: bool = False
    #: Bound on the evidence phase; None: the policies' ``timeout`` (the smallest).
    timeout: float | None = None
    #: Bound on waiting for the candidate to become Ready.
    ready_timeout: float = 300.0
    #: Seconds between Cloud Logging passes while probes run (quota: 60 reads/min/project).
    log_interval: float = 10.0
    #: Seconds to wait after the probes end before the last Cloud Logging pass, for
    #: entries still being ingested (Cloud Logging gives no bound; usually seconds).
    log_settle: float = 0.0
    #: Seconds between Cloud Monitoring passes (points arrive each 60 s at best).
    metric_interval: float = 60.0
    #: Bound on retrying one Cloud API call's transient errors.
    api_retry: float = 30.0
    token: TokenChoice | None = None
    #: Who hears of the run's events (``notify:`` and ``--notify``, secrets read):
    #: :class:`deploy_guard.events.setup.Target` each.
    notify: tuple[Any, ...] = ()
    #: ``--report-url``: where the report will be, for the notifications' link.
    report_url: str | None = None
    #: ``--serve``: the live status page's address ("auto", "PORT" or "HOST:PORT"; None: off).
    serve: str | None = None


class Progress(Protocol):
    """Told whenever the report changed (the terminal view redraws)."""

    def changed(self, report: CheckReport) -> None: ...


class NoProgress:
    def changed(self, report: CheckReport) -> None:
        return None
