"""The HTTP/JSON front: one aiohttp app on loopback, for ``gcloud`` as its HTTP proxy.

It routes by path and ignores the host, so a request sent to it as a proxy
(``GET http://us-central1-127.0.0.1:PORT/apis/... HTTP/1.1``, the absolute
form) and one sent to it directly (``GET /apis/...``) are served alike. What
it cannot do is tunnel: a ``CONNECT`` (gcloud pointed at an ``https://``
endpoint through it) is refused with a message saying to use the ``http://``
overrides that ``--gcloud-env`` writes.

Errors become Google's JSON error bodies here, at the boundary
(:mod:`.errors`): an unknown path is 404 NOT_FOUND, an emulator refusal has
its status, and a bug is 500 INTERNAL with its message, logged, while the
front keeps serving.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from deploy_guard.emulator.logstore import LogStore
from deploy_guard.emulator.metricstore import MetricStore
from deploy_guard.emulator.quota import ReadQuota
from deploy_guard.emulator.rest.errors import error_response, from_error
from deploy_guard.emulator.rest.observability import Observability
from deploy_guard.emulator.rest.run_v1 import RunV1
from deploy_guard.emulator.run_admin import RunAdmin
from deploy_guard.errors import ConfigError, EmulatorError
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.emulator.rest")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "CONNECT":
        return error_response(
            "UNIMPLEMENTED",
            f"CONNECT {request.path_qs}: the emulator's front does not tunnel HTTPS; point "
            "gcloud's endpoint overrides at its http:// address (deploy-guard emulator "
            "--gcloud-env FILE writes them)",
        )
    try:
        return await handler(request)
    except EmulatorError as exc:
        return from_error(exc)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return error_response(
            "NOT_FOUND",
            f"{request.method} {request.path} is not served by the emulator (see "
            "docs/gcloud.md for the gcloud commands and REST methods it serves)",
        )
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("emulator_rest_failed", method=request.method, path=request.path)
        where = f"{request.method} {request.path}"
        return error_response("INTERNAL", f"emulator error in {where}: {exc}")


class RestFront:
    """Cloud Run Admin v1, Logging ``entries:list`` and Monitoring ``timeSeries`` over HTTP."""

    def __init__(
        self,
        admin: RunAdmin,
        logs: LogStore,
        metrics: MetricStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        read_quota: ReadQuota | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.run = RunV1(admin, host)
        self.observability = Observability(logs, metrics, read_quota)
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the front (the proxy address and port gcloud is given)."""
        if self.port is None:
            raise RuntimeError("the REST front is not started")
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port/``: the endpoint override gcloud is given."""
        return f"http://{self.address}/"

    async def start(self) -> None:
        app = web.Application(middlewares=[_errors], client_max_size=10 * 1024 * 1024)
        app.add_routes([*self.run.routes(), *self.observability.routes()])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port, reuse_port=False)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"cannot listen on {self.host}:{self._requested_port} for the REST front "
                f"({exc.strerror or exc}); use --rest-port 0 for any free port"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("emulator_rest_started", address=self.address)

    async def stop(self) -> None:
        """Stop serving (requests in flight get a second). Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
