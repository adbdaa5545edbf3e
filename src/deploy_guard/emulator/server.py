"""The emulator, composed: one gRPC server, the router, the stores, the processes.

Everything runs on one asyncio event loop: the ``grpc.aio`` server (Cloud Run
Admin v2, long-running operations, Cloud Logging v2, Cloud Monitoring v3, all
as generic handlers behind the fault-injecting interceptor), the router
(aiohttp), the revision processes (asyncio subprocesses) and the HTTP/JSON
front for ``gcloud`` (:mod:`deploy_guard.emulator.rest`: Cloud Run Admin v1
and the REST list methods of Logging and Monitoring, on the same state).

:class:`Emulator` is the async object (``async with Emulator() as emu``);
:class:`EmulatorThread` runs one on its own loop in a background thread, for
pytest fixtures and other synchronous callers::

    with EmulatorThread() as emu:
        clients = Clients(host=emu.address)
        ...
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

import grpc

from deploy_guard.emulator import logging_api, monitoring_api
from deploy_guard.emulator.faults import FaultInjector
from deploy_guard.emulator.logstore import LogStore
from deploy_guard.emulator.metricstore import MetricStore
from deploy_guard.emulator.names import Location
from deploy_guard.emulator.operations import OperationStore
from deploy_guard.emulator.quota import ReadQuota
from deploy_guard.emulator.realism import Realism
from deploy_guard.emulator.rest.server import RestFront
from deploy_guard.emulator.router import Router
from deploy_guard.emulator.run_admin import RunAdmin
from deploy_guard.emulator.tail import TailHub
from deploy_guard.errors import ConfigError
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.emulator.server")
T = TypeVar("T")

#: How long a revision gets to listen on $PORT when its template sets no timeout.
DEFAULT_STARTUP_TIMEOUT_S = 30.0


def _check_loopback(host: str) -> None:
    """The emulator has no authentication: it must never listen beyond loopback."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"the emulator binds loopback addresses only, not {host!r}")


#: Project ids (``my-project``, ``example.com:proj``) and regions (``europe-west1``):
#: anything else could not be written in a resource name.
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9.:-]*$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def _check_location(project: str, region: str) -> None:
    """Refuse a project or region that no resource name could carry."""
    if not _PROJECT.match(project):
        raise ConfigError(
            f"project {project!r} is not a project id: use lowercase letters, digits and "
            "hyphens, e.g. --project local-project"
        )
    if not _REGION.match(region):
        raise ConfigError(
            f"region {region!r} is not a region name: use lowercase letters, digits and "
            "hyphens, e.g. --region europe-west1"
        )


class Emulator:
    """Cloud Run Admin v2, Cloud Logging v2 and Cloud Monitoring v3 on one local port.

    ``realistic`` (True, or a :class:`Realism` with its own numbers) makes it as
    slow and partial as Google Cloud: ingestion delay, per-minute metric samples
    released minutes late, a route delay after Ready and empty log pages with a
    token. ``seed`` makes its draws repeatable. A ``logs_delay`` or
    ``route_delay`` given (0 included) wins over the profile's. ``rest_port``
    is the HTTP/JSON front's port (0: any free one; None: no front).
    ``logging_read_quota`` (calls a minute per project) refuses ListLogEntries beyond
    it as Cloud Logging does.
    """

    def __init__(
        self,
        project: str = "local-project",
        region: str = "us-central1",
        port: int = 0,
        host: str = "127.0.0.1",
        metrics_delay: float = 0.0,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        workdir: str | None = None,
        logs_delay: float | None = None,
        route_delay: float | None = None,
        realistic: bool | Realism = False,
        seed: int | None = None,
        rest_port: int | None = 0,
        logging_read_quota: int | None = None,
    ) -> None:
        _check_loopback(host)
        _check_location(project, region)
        if startup_timeout <= 0:
            raise ConfigError(
                f"startup timeout {startup_timeout:g} s is not positive: a revision needs "
                "time to listen on $PORT (use e.g. 30s)"
            )
        for what, value in (
            ("metrics delay", metrics_delay),
            ("logs delay", logs_delay),
            ("route delay", route_delay),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"{what} {value:g} s must not be negative")
        profile = Realism() if realistic is True else realistic or None
        if profile is not None and seed is not None:
            profile = replace(profile, seed=seed)
        #: The realistic profile in force (None: the emulator answers at once).
        self.realism = profile
        self.location = Location(project, region)
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        if profile is None:
            route_delay = route_delay or 0.0
            self.logs = LogStore(delay_s=logs_delay or 0.0)
            self.metrics = MetricStore(delay_s=metrics_delay)
        else:
            # a delay given, 0 included, wins over the profile's (None: not given)
            logs_delay = profile.logs_delay_s if logs_delay is None else logs_delay
            route_delay = profile.route_delay_s if route_delay is None else route_delay
            self.logs = LogStore(
                delay_s=logs_delay, empty_page_ratio=profile.empty_page_ratio, seed=profile.seed
            )
            self.metrics = MetricStore(
                delay_s=metrics_delay,
                sample_period_s=profile.metric_sample_period_s,
                report_lag_s=profile.metric_max_lag_s,
                min_report_lag_s=profile.metric_min_lag_s,
                seed=profile.seed,
            )
        #: Cloud Logging's live-tailing sessions (``TailLogEntries``) on ``logs``.
        self.tails = TailHub(self.logs)
        self.router = Router(self.logs, self.metrics, host=host)
        self.operations = OperationStore(self.location.parent)
        self.admin = RunAdmin(
            self.location,
            self.router,
            self.logs,
            self.operations,
            startup_timeout_s=startup_timeout,
            workdir=workdir,
            route_delay_s=route_delay,
        )
        #: Cloud Logging's read quota per project (``logging_read_quota`` a minute; None: off).
        self.read_quota = ReadQuota(logging_read_quota) if logging_read_quota else None
        self._handlers = [
            *self.admin.handlers(),
            self.operations.handler(),
            logging_api.handlers(self.logs, self.tails, self.read_quota),
            monitoring_api.handlers(self.metrics),
        ]
        self.faults = FaultInjector(name for h in self._handlers for name in h.method_names)
        self._server: grpc.aio.Server | None = None
        #: The HTTP/JSON front gcloud talks to (None when started with ``rest_port=None``).
        self.rest = (
            None
            if rest_port is None
            else RestFront(
                self.admin,
                self.logs,
                self.metrics,
                host=host,
                port=rest_port,
                read_quota=self.read_quota,
            )
        )

    @property
    def project(self) -> str:
        return self.location.project

    @property
    def region(self) -> str:
        return self.location.region

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server: the value of ``DEPLOY_GUARD_EMULATOR_HOST``."""
        if self.port is None:
            raise RuntimeError("the emulator is not started")
        return f"{self.host}:{self.port}"

    @property
    def rest_address(self) -> str:
        """``host:port`` of the HTTP/JSON front (gcloud's proxy and endpoint overrides)."""
        if self.rest is None:
            raise RuntimeError("the emulator was started without its REST front")
        return self.rest.address

    async def start(self) -> None:
        """Bind the gRPC port and start serving (raises ConfigError if the port is taken)."""
        server = grpc.aio.server(
            interceptors=[self.faults],
            # Without this a second emulator could silently share a fixed port.
            options=[
                ("grpc.so_reuseport", 0),
                # Google's front ends take requests and send pages far over
                # gRPC's default 4 MB (WriteLogEntries takes up to 10 MB).
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
        )
        server.add_generic_rpc_handlers(self._handlers)
        try:
            port = server.add_insecure_port(f"{self.host}:{self._requested_port}")
        except RuntimeError as exc:
            raise ConfigError(
                f"cannot listen on {self.host}:{self._requested_port} ({exc}); "
                "is another emulator running? use --port 0 for any free port"
            ) from exc
        await self.router.start()
        try:
            await server.start()
            if self.rest is not None:
                await self.rest.start()
        except BaseException:
            await server.stop(None)
            await self.router.stop()
            raise
        self._server = server
        self.port = port
        log.info(
            "emulator_started",
            address=self.address,
            project=self.project,
            region=self.region,
            realistic=self.realism is not None,
            logs_delay_s=self.logs.delay.total_seconds(),
            route_delay_s=self.admin.route_delay_s,
            rest_address=self.rest.address if self.rest is not None else None,
        )

    async def stop(self) -> None:
        """Stop the REST front, every revision process, the router and the gRPC server.

        Idempotent.
        """
        if self.rest is not None:
            await self.rest.stop()
        await self.admin.close()
        await self.router.stop()
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
            log.info("emulator_stopped", address=self.address)

    def pids(self) -> list[int]:
        """Process ids of the revision processes still running."""
        return self.admin.pids()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class EmulatorThread:
    """An :class:`Emulator` on its own event loop in a daemon thread.

    ``start()``/``stop()`` block; :meth:`call` runs a coroutine function on the
    emulator's loop and returns its result, which is the only safe way to touch
    the emulator's asyncio state from another thread. ``faults``, ``logs`` and
    ``metrics`` are thread-safe and may be used directly.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._emulator: Emulator | None = None

    @property
    def emulator(self) -> Emulator:
        if self._emulator is None:
            raise RuntimeError("the emulator thread is not started")
        return self._emulator

    @property
    def address(self) -> str:
        return self.emulator.address

    @property
    def project(self) -> str:
        return self.emulator.project

    @property
    def region(self) -> str:
        return self.emulator.region

    @property
    def rest_address(self) -> str:
        """``host:port`` of the HTTP/JSON front gcloud talks to."""
        return self.emulator.rest_address

    @property
    def parent(self) -> str:
        """``projects/P/locations/R``: the parent of every service it serves."""
        return self.emulator.location.parent

    @property
    def faults(self) -> FaultInjector:
        return self.emulator.faults

    @property
    def logs(self) -> LogStore:
        return self.emulator.logs

    @property
    def tails(self) -> TailHub:
        return self.emulator.tails

    @property
    def metrics(self) -> MetricStore:
        return self.emulator.metrics

    @property
    def router(self) -> Router:
        return self.emulator.router

    def start(self, timeout: float = 30.0) -> EmulatorThread:
        """Start the loop thread and the emulator on it; return when it serves."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="deploy-guard-emulator", daemon=True
        )
        self._thread.start()

        async def build() -> Emulator:
            emulator = Emulator(**self._kwargs)
            await emulator.start()
            return emulator

        future = asyncio.run_coroutine_threadsafe(build(), loop)
        try:
            self._emulator = future.result(timeout)
        except BaseException:
            self._shutdown_loop()
            raise
        # A test run that ends without stop() must not leave revision processes behind.
        atexit.register(self.stop)
        return self

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def call(self, coro_fn: Callable[[Emulator], Awaitable[T]], timeout: float = 60.0) -> T:
        """Run ``await coro_fn(emulator)`` on the emulator's loop and return its result."""
        if self._loop is None:
            raise RuntimeError("the emulator thread is not started")

        async def run() -> T:
            return await coro_fn(self.emulator)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def pids(self) -> list[int]:
        """Process ids of the revision processes still running."""

        async def pids(emulator: Emulator) -> list[int]:
            return emulator.pids()

        return self.call(pids)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the emulator (every revision process too) and the loop thread."""
        if self._loop is None:
            return
        atexit.unregister(self.stop)
        if self._emulator is not None:
            try:
                self.call(lambda emulator: emulator.stop(), timeout)
            finally:
                self._shutdown_loop()
        else:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        if not loop.is_running():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
