"""Cloud Run Admin v2 reads: API objects into plain snapshots, services and revisions read.

The plans and the judge work on :class:`~deploy_guard.gcp.traffic.ServiceState`
and :class:`~deploy_guard.gcp.traffic.RevisionState`, never on ``run_v2``
messages: the conversion happens here, once, so nothing past this module needs
the Google client library to make a decision.

The GAPIC clients are synchronous; every call runs in a worker thread
(:func:`asyncio.to_thread`) so the check's event loop keeps probing while an
``UpdateService`` operation completes. :class:`RunReads` holds the client, the
names and the polls (Ready, settled); :class:`~deploy_guard.gcp.cloudrun.CloudRun`
adds the write path on top of it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.errors import ApiCalls, call
from deploy_guard.gcp.traffic import (
    Allocation,
    RevisionState,
    ServiceState,
    failed_reconcile,
    settled,
)

T = TypeVar("T")

#: ``chat-00002-xyz`` -> ``chat``: how Cloud Run names revisions of a service.
_REVISION_NAME = re.compile(r"^(?P<service>[a-z](?:[a-z0-9-]*[a-z0-9])?)-\d{5}-[a-z0-9]{2,}$")


def service_of(revision: str) -> str | None:
    """The service a revision belongs to, from its name (None when it does not say)."""
    short = revision.rsplit("/", 1)[-1]
    match = _REVISION_NAME.match(short)
    return match.group("service") if match else None


def short_name(name: str) -> str:
    """``projects/p/locations/r/services/chat`` -> ``chat``."""
    return name.rsplit("/", 1)[-1]


def _allocation(target: Any, *, with_uri: bool) -> Allocation:
    latest = "LATEST" in str(getattr(target.type_, "name", target.type_))
    return Allocation(
        revision=None if latest and not target.revision else (target.revision or None),
        percent=int(target.percent),
        tag=target.tag,
        uri=getattr(target, "uri", "") if with_uri else "",
    )


def to_service_state(svc: Any) -> ServiceState:
    """Turn a ``run_v2.Service`` into the plain snapshot the plans work on."""
    from google.cloud import run_v2

    terminal: Any = getattr(svc, "terminal_condition", None)
    failed = terminal is not None and terminal.state == run_v2.Condition.State.CONDITION_FAILED
    return ServiceState(
        name=svc.name,
        short=short_name(svc.name),
        generation=int(svc.generation),
        latest_created_revision=short_name(svc.latest_created_revision),
        latest_ready_revision=short_name(svc.latest_ready_revision),
        traffic=tuple(_allocation(t, with_uri=False) for t in svc.traffic),
        traffic_statuses=tuple(_allocation(t, with_uri=True) for t in svc.traffic_statuses),
        uri=svc.uri,
        reconciling=bool(svc.reconciling),
        annotations=dict(svc.annotations),
        terminal_message=(terminal.message or "failed") if failed else "",
        observed_generation=int(svc.observed_generation),
    )


def to_revision_state(rev: Any) -> RevisionState:
    """Turn a ``run_v2.Revision`` into a snapshot; Ready from its ``Ready`` condition."""
    from google.cloud import run_v2

    ready: bool | None = None
    message = ""
    for cond in rev.conditions:
        if cond.type_ != "Ready":
            continue
        if cond.state == run_v2.Condition.State.CONDITION_SUCCEEDED:
            ready = True
        elif cond.state == run_v2.Condition.State.CONDITION_FAILED:
            ready = False
            message = cond.message or "the revision failed to become Ready"
    created = rev.create_time.timestamp() if rev.create_time else 0.0
    timeout = rev.timeout.total_seconds() if rev.timeout else 0.0
    return RevisionState(
        name=rev.name,
        short=short_name(rev.name),
        service=short_name(rev.service),
        ready=ready,
        message=str(message or ""),
        create_time=float(created),
        request_timeout=float(timeout) if timeout > 0 else 300.0,  # unset: Cloud Run's default
    )


def to_targets(spec: Sequence[Allocation]) -> list[Any]:
    """The ``run_v2.TrafficTarget`` list a write sends for ``spec``."""
    from google.cloud import run_v2

    kinds: Any = run_v2.TrafficTargetAllocationType
    out = []
    for a in spec:
        target: Any = run_v2.TrafficTarget(percent=a.percent, tag=a.tag)
        if a.revision is None:
            target.type_ = kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
        else:
            target.type_ = kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
            target.revision = a.revision
        out.append(target)
    return out


class RunReads:
    """Reads and polls over the official clients.

    :class:`~deploy_guard.gcp.cloudrun.CloudRun` extends it with the writes.
    """

    def __init__(
        self,
        clients: Clients,
        project: str,
        region: str,
        *,
        calls: ApiCalls | None = None,
        verify_timeout: float = 120.0,
        poll_initial: float = 0.05,
        poll_max: float = 1.0,
        retry_deadline: float = 30.0,
    ) -> None:
        self.clients = clients
        self.project = project
        self.region = region
        self.calls = calls if calls is not None else ApiCalls()
        self.verify_timeout = verify_timeout
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.retry_deadline = retry_deadline

    # -- names ---------------------------------------------------------------
    def service_name(self, service: str) -> str:
        if service.startswith("projects/"):
            return service
        return f"projects/{self.project}/locations/{self.region}/services/{service}"

    def revision_name(self, service: str, revision: str) -> str:
        if revision.startswith("projects/"):
            return revision
        return f"{self.service_name(service)}/revisions/{revision}"

    async def _run(self, fn: Callable[..., T], *args: Any, method: str, what: str, **kw: Any) -> T:
        def invoke() -> T:
            return call(
                fn,
                *args,
                api="run",
                what=what,
                calls=self.calls,
                method=method,
                deadline=self.retry_deadline,
                **kw,
            )

        return await asyncio.to_thread(invoke)

    # -- reads ---------------------------------------------------------------
    async def _get_service_raw(self, service: str) -> Any:
        name = self.service_name(service)
        return await self._run(
            self.clients.services().get_service,
            request={"name": name},
            method="GetService",
            what=f"reading service {short_name(name)}",
        )

    async def get_service(self, service: str) -> ServiceState:
        return to_service_state(await self._get_service_raw(service))

    async def get_revision(self, service: str, revision: str) -> RevisionState:
        name = self.revision_name(service, revision)
        rev = await self._run(
            self.clients.revisions().get_revision,
            request={"name": name},
            method="GetRevision",
            what=f"reading revision {short_name(name)} of service {short_name(service)}",
        )
        return to_revision_state(rev)

    async def list_revisions(self, service: str) -> list[RevisionState]:
        """Every revision of a service, oldest first by ``create_time``."""
        parent = self.service_name(service)

        def fetch(retry: Any) -> list[Any]:
            pager = self.clients.revisions().list_revisions(
                request={"parent": parent, "page_size": 100}, retry=retry
            )
            return list(pager)

        revs = await self._run(
            fetch,
            method="ListRevisions",
            what=f"listing revisions of {short_name(parent)}",
        )
        return sorted((to_revision_state(r) for r in revs), key=lambda r: r.create_time)

    async def wait_ready(self, service: str, revision: str, bound: float) -> RevisionState:
        """Poll the revision until Ready succeeds or fails, at most ``bound`` seconds.

        A revision that failed to start comes back with ``ready=False`` and its
        condition's message; one still starting at the bound comes back with
        ``ready=None``. Both are verdicts for the gate, not exceptions.
        """
        deadline = time.monotonic() + bound
        delay = self.poll_initial
        while True:
            state = await self.get_revision(service, revision)
            if state.ready is not None or time.monotonic() >= deadline:
                return state
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, self.poll_max)

    async def wait_settled(self, service: str, bound: float) -> ServiceState:
        """Poll the service until it is no longer reconciling, at most ``bound`` seconds.

        Returns the last state read, settled or not (the caller decides what an
        unsettled service means). A reconciliation that failed for good
        (:func:`~deploy_guard.gcp.traffic.failed_reconcile`) ends the wait at
        once: its ``observed_generation`` never catches up.
        """
        deadline = time.monotonic() + bound
        delay = self.poll_initial
        while True:
            state = await self.get_service(service)
            if settled(state) or failed_reconcile(state) or time.monotonic() >= deadline:
                return state
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, self.poll_max)
