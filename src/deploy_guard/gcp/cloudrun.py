"""Cloud Run Admin v2: read services and revisions, change traffic, verify by re-reading.

The GAPIC clients are synchronous; every call runs in a worker thread
(:func:`asyncio.to_thread`) so the check's event loop keeps probing while an
``UpdateService`` operation completes.

Writes follow three rules that the API cannot enforce for us (it has no
etag-checked update for services):

1. *Read-modify-write the whole service*: GetService, change ``traffic``,
   UpdateService. An unchanged template creates no new revision.
2. *Refuse to clobber*: right before writing, re-read and compare with what
   the guard last saw (its own last write included). If ``generation``,
   ``latest_created_revision`` or the traffic spec moved, someone else deployed
   or moved traffic: raise :class:`SupersededError` and write nothing.
3. *A change is done only when a re-read shows it*: wait for the operation,
   then re-read until ``traffic_statuses`` serves the new split.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from deploy_guard.errors import ActionError, ConfigError, SupersededError
from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.errors import ApiCalls, call
from deploy_guard.gcp.traffic import (
    Allocation,
    RevisionState,
    ServiceState,
    describe,
    served_split,
    settled,
    shows,
    superseded_reason,
)
from deploy_guard.log import get_logger

T = TypeVar("T")
log = get_logger("deploy_guard.gcp.cloudrun")

#: ``chat-00002-xyz`` -> ``chat``: how Cloud Run names revisions of a service.
_REVISION_NAME = re.compile(r"^(?P<service>[a-z](?:[a-z0-9-]*[a-z0-9])?)-\d{5}-[a-z0-9]{2,}$")


def service_of(revision: str) -> str | None:
    """The service a revision belongs to, from its name (None when it does not say)."""
    short = revision.rsplit("/", 1)[-1]
    match = _REVISION_NAME.match(short)
    return match.group("service") if match else None


class TrafficRouter(Protocol):
    """What the gate needs from Cloud Run (the emulator or the real one)."""

    async def get_service(self, service: str) -> ServiceState: ...

    async def wait_ready(self, service: str, revision: str, bound: float) -> RevisionState: ...

    async def wait_settled(self, service: str, bound: float) -> ServiceState: ...

    async def set_traffic(
        self,
        expected: ServiceState,
        spec: Sequence[Allocation],
        *,
        why: str,
        annotations: Mapping[str, str] | None = None,
    ) -> ServiceState: ...


def _short(name: str) -> str:
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
        short=_short(svc.name),
        generation=int(svc.generation),
        latest_created_revision=_short(svc.latest_created_revision),
        latest_ready_revision=_short(svc.latest_ready_revision),
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
    return RevisionState(
        name=rev.name,
        short=_short(rev.name),
        service=_short(rev.service),
        ready=ready,
        message=str(message or ""),
        create_time=float(created),
    )


def _to_targets(spec: Sequence[Allocation]) -> list[Any]:
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


class CloudRun:
    """:class:`TrafficRouter` over the official clients (see the module docstring)."""

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
            what=f"reading service {_short(name)}",
        )

    async def get_service(self, service: str) -> ServiceState:
        return to_service_state(await self._get_service_raw(service))

    async def get_revision(self, service: str, revision: str) -> RevisionState:
        name = self.revision_name(service, revision)
        rev = await self._run(
            self.clients.revisions().get_revision,
            request={"name": name},
            method="GetRevision",
            what=f"reading revision {_short(name)} of service {_short(service)}",
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
            what=f"listing revisions of {_short(parent)}",
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
        unsettled service means).
        """
        deadline = time.monotonic() + bound
        delay = self.poll_initial
        while True:
            state = await self.get_service(service)
            if settled(state) or time.monotonic() >= deadline:
                return state
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, self.poll_max)

    # -- writes --------------------------------------------------------------
    async def set_traffic(
        self,
        expected: ServiceState,
        spec: Sequence[Allocation],
        *,
        why: str,
        annotations: Mapping[str, str] | None = None,
    ) -> ServiceState:
        """Write ``spec`` as the service's traffic if nobody changed it; verify by re-read.

        ``annotations`` ride in the same write (what the guard records about it),
        so they are there exactly when the traffic change is.

        Returns the verified state, which is the new ``expected`` for the next
        write. Raises :class:`SupersededError` when the service moved since
        ``expected`` (nothing written), or when someone else changed it between
        this write and its verification (the write is done; the state is not
        the guard's); :class:`ActionError` when the write or its verification
        failed.
        """
        raw = await self._get_service_raw(expected.name)
        now = to_service_state(raw)
        reason = superseded_reason(expected, now)
        if reason is not None:
            log.warning("traffic_write_refused", service=now.short, reason=reason, why=why)
            raise SupersededError(
                f"{reason}; deploy-guard did not change {now.short}'s traffic. "
                f"It serves {describe(served_split(now))}; check it by hand."
            )
        from google.cloud import run_v2

        updated = run_v2.Service(raw)
        del updated.traffic[:]
        updated.traffic.extend(_to_targets(spec))
        for key, value in (annotations or {}).items():
            updated.annotations[key] = value
        log.info("traffic_write_requested", service=now.short, why=why, traffic=_spec_text(spec))
        written = await self._update(updated, what=f"updating traffic of {now.short} ({why})")
        return await self.verify(expected.name, spec, written=written)

    async def set_annotations(
        self, expected: ServiceState, values: Mapping[str, str]
    ) -> ServiceState:
        """Record several annotations in one write (same refuse-if-changed rule)."""
        raw = await self._get_service_raw(expected.name)
        now = to_service_state(raw)
        reason = superseded_reason(expected, now)
        if reason is not None:
            raise SupersededError(f"{reason}; did not annotate {now.short}")
        from google.cloud import run_v2

        updated = run_v2.Service(raw)
        for key, value in values.items():
            updated.annotations[key] = value
        await self._update(updated, what=f"annotating {now.short}")
        return await self.get_service(expected.name)

    async def _update(self, service: Any, *, what: str) -> ServiceState:
        """UpdateService and wait for its operation; the service as the write left it.

        Only the request itself can be refused as stale (ABORTED or
        FAILED_PRECONDITION: :class:`SupersededError`); an operation that fails
        afterwards is an :class:`ActionError`, whatever its status.
        """

        def write(retry: Any) -> Any:
            return self.clients.services().update_service(request={"service": service}, retry=retry)

        op: Any = await self._run(write, method="UpdateService", what=what, writing=True)

        def wait() -> Any:
            return op.result(timeout=self.verify_timeout, polling=self._polling())

        try:
            result = await asyncio.to_thread(wait)
        except Exception as exc:  # the operation itself failed (its error, not a transport one)
            from deploy_guard.log import redact_text

            raise ActionError(
                f"{what}: the update operation failed: {redact_text(str(exc))}"
            ) from exc
        return to_service_state(result)

    def _polling(self) -> Any:
        from google.api_core import retry as gretry
        from google.api_core.future import polling

        return gretry.Retry(
            predicate=gretry.if_exception_type(polling._OperationNotComplete),
            initial=self.poll_initial,
            maximum=self.poll_max,
            multiplier=2.0,
            timeout=self.verify_timeout,
        )

    async def verify(
        self, service: str, spec: Sequence[Allocation], *, written: ServiceState | None = None
    ) -> ServiceState:
        """Re-read until the service serves ``spec`` (bounded): the proof a change is done.

        ``written`` is the service as the guard's own write left it: a re-read
        that shows a later change (a deploy landing right after the write) is
        not adopted as the guard's state; :class:`SupersededError` says so.
        """
        deadline = time.monotonic() + self.verify_timeout
        delay = self.poll_initial
        while True:
            state = await self.get_service(service)
            stale = written is not None and state.generation < written.generation
            moved = None if written is None or stale else superseded_reason(written, state)
            if moved is not None:
                log.warning("traffic_write_overtaken", service=state.short, reason=moved)
                raise SupersededError(
                    f"{moved} right after deploy-guard's own traffic change "
                    f"({_spec_text(spec)}); it serves {describe(served_split(state))} now and "
                    "deploy-guard will not write again; check it by hand."
                )
            if not stale and shows(state, spec):
                return state
            if not stale and state.terminal_message and not state.reconciling:
                raise ActionError(
                    f"Cloud Run did not apply the traffic change to {state.short}: "
                    f"{state.terminal_message}"
                )
            if time.monotonic() >= deadline:
                raise ActionError(
                    f"{state.short} still serves {describe(served_split(state))} "
                    f"{self.verify_timeout:.0f} s after the change to {_spec_text(spec)}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.poll_max)


def _spec_text(spec: Sequence[Allocation]) -> str:
    parts = []
    for a in spec:
        rev = a.revision or "LATEST"
        parts.append(f"{rev} {a.percent}%" + (f" tag={a.tag}" if a.tag else ""))
    return ", ".join(parts) or "(latest)"


def need_service(service: str | None, revision: str) -> str:
    """The service to use: given, or derived from the revision's name."""
    if service:
        return service
    derived = service_of(revision)
    if derived is None:
        raise ConfigError(
            f"cannot tell the service from revision name {revision!r}; pass --service"
        )
    return derived
