"""The emulator's revisions at run time: their processes and the routes to them.

A revision of the emulated Cloud Run is a local process (its container's
command and args) started on a free port; the router sends each endpoint's
traffic to the processes the service's ``traffic_statuses`` name. This module
holds that bookkeeping for :class:`~deploy_guard.emulator.run_admin.RunAdmin`:
starting a revision and deciding its Ready condition, noticing its process
die (its share of traffic is then answered 503, as Cloud Run's front end
would), pointing the service URL and each tag URL at what is served, and
stopping everything at the end.

The layers build on each other: :class:`RevisionRuntime` (here) <-
:class:`~deploy_guard.emulator.run_reconcile.Reconciler` (writes, operations)
<- :class:`~deploy_guard.emulator.run_admin.RunAdmin` (the gRPC servicer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from google.cloud import run_v2

from deploy_guard.emulator import state as st
from deploy_guard.emulator import traffic
from deploy_guard.emulator.contracts import Backend, LogSink, RevisionRef, Route, RouterApi
from deploy_guard.emulator.names import Location, request_timeout_s, short_name
from deploy_guard.emulator.operations import OperationStore
from deploy_guard.emulator.processes import RevisionProcess, StartFailure
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.emulator.run_admin")
State = run_v2.Condition.State


def svc_key(service_id: str) -> str:
    """The router endpoint of a service's URL."""
    return f"svc:{service_id}"


def tag_key(service_id: str, tag: str) -> str:
    """The router endpoint of a service's tag URL."""
    return f"tag:{service_id}:{tag}"


class RevisionRuntime:
    """The services of one project and region, their revision processes and routes."""

    def __init__(
        self,
        location: Location,
        router: RouterApi,
        logs: LogSink,
        operations: OperationStore,
        *,
        startup_timeout_s: float = 30.0,
        workdir: str | None = None,
        route_delay_s: float = 0.0,
    ) -> None:
        self.location = location
        self.router = router
        self.logs = logs
        self.operations = operations
        self.startup_timeout_s = startup_timeout_s
        #: Seconds between a new revision becoming Ready and the service routing to it
        #: (the service stays ``reconciling`` with its old ``traffic_statuses`` meanwhile).
        self.route_delay_s = route_delay_s
        self.workdir = workdir
        #: Refuse an UpdateService whose ``service.etag`` is stale (AIP-154). Whether
        #: Cloud Run itself does is unverified: tests turn it off to show the guard
        #: is safe either way.
        self.enforce_etag = True
        self.services: dict[str, st.ServiceEntry] = {}

    def pids(self) -> list[int]:
        """Process ids of every revision process still running (for tests and tools)."""
        return [
            rev.process.pid
            for entry in self.services.values()
            for rev in entry.revisions.values()
            if rev.process is not None and rev.process.running and rev.process.pid
        ]

    # -- revision processes and routes -----------------------------------------------------

    async def _start(self, entry: st.ServiceEntry, rev: st.RevisionEntry) -> StartFailure | None:
        """Run the revision's container command and wait until it listens."""
        resource = rev.resource
        container = resource.containers[0]
        ref = self._ref(entry, rev.short)
        env: Mapping[str, str] = {e.name: e.value for e in container.env if e.name}
        rev.process = RevisionProcess(
            ref,
            [*container.command, *container.args],
            env,
            self.logs,
            cwd=container.working_dir or self.workdir,
        )
        failure = await rev.process.start(self._startup_timeout(resource))
        resource.reconciling = False
        resource.update_time = st.now()
        if failure is None:
            rev.ready = True
            resource.conditions = [
                st.condition("Ready", State.CONDITION_SUCCEEDED),
                st.condition("ContainerHealthy", State.CONDITION_SUCCEEDED),
                st.condition("ResourcesAvailable", State.CONDITION_SUCCEEDED),
            ]
            log.info("emulator_revision_ready", revision=rev.short, port=rev.process.port)
            watcher = asyncio.get_running_loop().create_task(self._watch(entry, rev))
            entry.tasks.add(watcher)
            watcher.add_done_callback(entry.tasks.discard)
            return None
        reasons: dict[str, Any] = {
            "revision_reason": run_v2.Condition.RevisionReason.HEALTH_CHECK_CONTAINER_ERROR
        }
        if failure.reason == "HealthCheckFailed":
            reasons = {"reason": run_v2.Condition.CommonReason.PROGRESS_DEADLINE_EXCEEDED}
        resource.conditions = [
            st.condition("Ready", State.CONDITION_FAILED, failure.message, **reasons),
            st.condition("ContainerHealthy", State.CONDITION_FAILED, failure.message, **reasons),
            st.condition("ResourcesAvailable", State.CONDITION_SUCCEEDED),
        ]
        log.warning("emulator_revision_failed", revision=rev.short, reason=failure.reason)
        return failure

    async def _watch(self, entry: st.ServiceEntry, rev: st.RevisionEntry) -> None:
        """Notice a Ready revision's process dying, as Cloud Run's front end would.

        The process is not restarted (Cloud Run would start a new instance).
        The revision keeps its Ready condition, as on Cloud Run, but its share
        of traffic is answered 503 (logged and counted against it) and a
        ``Container called exit(N).`` entry goes to its system log.
        """
        assert rev.process is not None
        code = await rev.process.died()
        if code is None or entry.deleted:
            return
        message = (
            f"Container called exit({code})."
            if code >= 0
            else f"Container terminated on signal {-code}."
        )
        self.logs.system(rev.process.ref, "WARNING", message, st.now())
        log.warning("emulator_revision_process_died", revision=rev.short, status=code)
        async with entry.lock:
            if not entry.deleted:
                self._set_routes(entry, entry.resource.traffic_statuses)

    def _startup_timeout(self, revision: run_v2.Revision) -> float:
        """How long the revision gets to listen on $PORT.

        Its first container's ``startup_probe`` decides, as on Cloud Run
        (``initial_delay_seconds + failure_threshold * period_seconds``, with
        Cloud Run's defaults 3 and 10 s); else the emulator's
        ``--startup-timeout``. Only "the port accepts a connection" is checked,
        whatever the probe's kind. The revision's ``timeout`` is its *request*
        timeout and plays no part here, as on Cloud Run.
        """
        container = revision.containers[0]
        if "startup_probe" in container:
            probe = container.startup_probe
            return float(
                probe.initial_delay_seconds
                + (probe.failure_threshold or 3) * (probe.period_seconds or 10)
            )
        return self.startup_timeout_s

    def _ref(self, entry: st.ServiceEntry, revision: str) -> RevisionRef:
        return RevisionRef(
            project=self.location.project,
            location=self.location.region,
            service=entry.service_id,
            revision=revision,
            configuration=entry.service_id,
        )

    def _route(self, entry: st.ServiceEntry, revision: str, percent: int) -> Route:
        """``percent`` of an endpoint's traffic to ``revision`` (503s if it is not serving)."""
        rev = entry.revisions.get(revision)
        ref = self._ref(entry, revision) if rev is not None else None
        if rev is None or not rev.ready or rev.process is None or not rev.process.running:
            return Route(None, percent, ref)
        backend = Backend(
            rev.process.ref, rev.process.host, rev.process.port, request_timeout_s(rev.resource)
        )
        return Route(backend, percent, ref)

    def _set_routes(self, entry: st.ServiceEntry, served: Any) -> dict[str, str]:
        """Point the service URL and each tag URL at what ``served`` says; tag -> revision."""
        latest = short_name(entry.resource.latest_ready_revision)
        split = traffic.serving_split(served, latest)
        self.router.set_routes(
            svc_key(entry.service_id),
            [self._route(entry, r, pct) for r, pct in split.items()],
        )
        tags = traffic.tag_targets(served, latest)
        for tag, revision in tags.items():
            self.router.set_routes(
                tag_key(entry.service_id, tag), [self._route(entry, revision, 100)]
            )
        return tags

    async def _apply_traffic(self, entry: st.ServiceEntry) -> None:
        """Serve the current spec: routes, tag endpoints, ``traffic_statuses``."""
        svc = entry.resource
        served = traffic.statuses(svc.traffic)
        tags = self._set_routes(entry, served)
        urls: dict[str, str] = {}
        for tag in tags:
            urls[tag] = await self.router.open_endpoint(tag_key(entry.service_id, tag))
        await self._close_endpoints(entry, keep_tags=set(tags))
        entry.open_tags = set(tags)
        for status in served:
            if status.tag:
                status.uri = urls[status.tag]
        svc.traffic_statuses = served

    async def _close_endpoints(self, entry: st.ServiceEntry, keep_tags: set[str]) -> None:
        for tag in entry.open_tags - keep_tags:
            await self.router.close_endpoint(tag_key(entry.service_id, tag))

    async def _stop_processes(self, revisions: Any) -> None:
        await asyncio.gather(
            *(r.process.stop() for r in revisions if r.process is not None),
            return_exceptions=True,
        )

    async def close(self) -> None:
        """Stop every revision process and pending reconciliation (emulator shutdown)."""
        entries = list(self.services.values())
        for entry in entries:
            for task in entry.tasks:
                task.cancel()
        for entry in entries:
            await asyncio.gather(*entry.tasks, return_exceptions=True)
            await self._stop_processes(entry.revisions.values())


__all__ = ["RevisionRuntime", "State", "svc_key", "tag_key"]
