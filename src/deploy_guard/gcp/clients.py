"""The one place that builds Google API clients.

When ``DEPLOY_GUARD_EMULATOR_HOST`` is set (``127.0.0.1:PORT``, as printed by
``deploy-guard emulator``), every client is the official GAPIC client over one
shared plain-text gRPC channel to that emulator. Otherwise the clients use
Application Default Credentials against Google Cloud. Nothing else in the guard
knows which of the two it is talking to.

The Google libraries are imported here, lazily, so that commands which never
call an API (``--help``, ``policy validate``) do not pay ~270 ms to import them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import grpc
    from google.cloud import monitoring_v3, run_v2
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

EMULATOR_HOST_ENV = "DEPLOY_GUARD_EMULATOR_HOST"
#: gRPC's default 4 MB message limit lifted, as the Google transports do.
_UNLIMITED_MESSAGES = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


def emulator_host(environ: Mapping[str, str] | None = None) -> str | None:
    """The emulator's ``host:port`` if the environment names one.

    A pasted URL (``http://127.0.0.1:PORT/``) is read as its ``host:port``:
    gRPC would otherwise fail to resolve it and every call would look like
    Google being unavailable.
    """
    env = os.environ if environ is None else environ
    host = env.get(EMULATOR_HOST_ENV, "").strip()
    for scheme in ("http://", "https://", "grpc://", "dns:///"):
        if host.lower().startswith(scheme):
            host = host[len(scheme) :]
    return host.rstrip("/") or None


@dataclass
class Clients:
    """Lazily built GAPIC clients sharing one channel (emulator) or ADC (cloud).

    ``host=None`` means Google Cloud with Application Default Credentials.
    """

    host: str | None = None
    _channel: grpc.Channel | None = field(default=None, init=False, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Clients:
        return cls(host=emulator_host(environ))

    @property
    def is_emulator(self) -> bool:
        return self.host is not None

    def _insecure_channel(self) -> grpc.Channel:
        import grpc

        if self._channel is None:
            assert self.host is not None
            # The options the GAPIC transports set on the channels they build:
            # without them a 1,000-entry ListLogEntries page over 4 MB fails here
            # and nowhere else.
            self._channel = grpc.insecure_channel(self.host, options=_UNLIMITED_MESSAGES)
        return self._channel

    def _get(self, key: str, build: Any) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def services(self) -> run_v2.ServicesClient:
        def build() -> Any:
            from google.cloud import run_v2
            from google.cloud.run_v2.services.services.transports import ServicesGrpcTransport

            if self.host:
                return run_v2.ServicesClient(
                    transport=ServicesGrpcTransport(channel=self._insecure_channel())
                )
            return run_v2.ServicesClient()

        return self._get("services", build)  # type: ignore[no-any-return]

    def revisions(self) -> run_v2.RevisionsClient:
        def build() -> Any:
            from google.cloud import run_v2
            from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcTransport

            if self.host:
                return run_v2.RevisionsClient(
                    transport=RevisionsGrpcTransport(channel=self._insecure_channel())
                )
            return run_v2.RevisionsClient()

        return self._get("revisions", build)  # type: ignore[no-any-return]

    def logging(self) -> LoggingServiceV2Client:
        def build() -> Any:
            from google.cloud.logging_v2.services.logging_service_v2 import (
                LoggingServiceV2Client,
            )
            from google.cloud.logging_v2.services.logging_service_v2.transports import (
                LoggingServiceV2GrpcTransport,
            )

            if self.host:
                return LoggingServiceV2Client(
                    transport=LoggingServiceV2GrpcTransport(channel=self._insecure_channel())
                )
            return LoggingServiceV2Client()

        return self._get("logging", build)  # type: ignore[no-any-return]

    def metrics(self) -> monitoring_v3.MetricServiceClient:
        def build() -> Any:
            from google.cloud import monitoring_v3
            from google.cloud.monitoring_v3.services.metric_service.transports import (
                MetricServiceGrpcTransport,
            )

            if self.host:
                return monitoring_v3.MetricServiceClient(
                    transport=MetricServiceGrpcTransport(channel=self._insecure_channel())
                )
            return monitoring_v3.MetricServiceClient()

        return self._get("metrics", build)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the shared channel (emulator) or each client's transport (cloud)."""
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
            else:
                for client in self._cache.values():
                    client.transport.close()
            self._cache.clear()
