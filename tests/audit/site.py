"""The chat agent's services on an emulator, deployed and changed by a named principal.

A person's deploy is ``gcloud run deploy``'s: a new template, all traffic to the latest
revision. Each call names its caller to the emulator with the ``x-deploy-guard-principal``
metadata; the audit entries come back through ``ListLogEntries`` as the Logging API's JSON
(what ``gcloud logging read --format json`` prints).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy_guard.emulator.audit import PRINCIPAL_HEADER
from deploy_guard.gcp.clients import Clients

ROOT = Path(__file__).resolve().parents[2]
CHAT_APP = ROOT / "examples" / "chat_agent" / "app.py"
POLICY = ROOT / "tests" / "gate" / "policies" / "chat-fast.yaml"
HUMAN = "alice@example.com"


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


@dataclass
class Site:
    """The chat agent's services on one emulator, deployed and changed by a principal."""

    emulator: Any
    clients: Clients
    polling: Any
    serial: int = 0

    def name(self, service: str) -> str:
        return f"{self.emulator.parent}/services/{service}"

    def _template(self, env: dict[str, str] | None) -> Any:
        from google.cloud import run_v2

        self.serial += 1  # a changed template is what makes a new revision
        values = {**(env or {}), "DEPLOY_SERIAL": str(self.serial)}
        container = run_v2.Container(
            image="local/chat-agent",
            command=[sys.executable, str(CHAT_APP)],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in values.items()],
        )
        return run_v2.RevisionTemplate(containers=[container])

    def deploy(self, service: str, env: dict[str, str] | None = None, by: str = HUMAN) -> str:
        """Create or update ``service`` with a new revision taking all traffic; its name."""
        from google.api_core import exceptions
        from google.cloud import run_v2

        services = self.clients.services()
        metadata = [(PRINCIPAL_HEADER, by)]
        try:
            svc = services.get_service(name=self.name(service))
        except exceptions.NotFound:
            op = services.create_service(
                parent=self.emulator.parent,
                service=run_v2.Service(template=self._template(env)),
                service_id=service,
                metadata=metadata,
            )
        else:
            svc.template = self._template(env)
            svc.traffic = []  # 100 % to the latest Ready revision, as gcloud run deploy does
            op = services.update_service(service=svc, metadata=metadata)
        return short(op.result(timeout=60, polling=self.polling).latest_created_revision)

    def update(
        self, service: str, *, mask: str | None = None, by: str = HUMAN, **change: Any
    ) -> None:
        """A write sending ``change`` (``traffic=[...]``, ``labels={...}``), masked or not."""
        services = self.clients.services()
        svc = services.get_service(name=self.name(service))
        for key, value in change.items():
            setattr(svc, key, value)
        request: dict[str, Any] = {"service": svc}
        if mask is not None:
            request["update_mask"] = {"paths": mask.split(",")}
        op = services.update_service(request=request, metadata=[(PRINCIPAL_HEADER, by)])
        op.result(timeout=60, polling=self.polling)

    def serving(self, service: str) -> dict[str, int]:
        svc = self.clients.services().get_service(name=self.name(service))
        out: dict[str, int] = {}
        for t in svc.traffic_statuses:
            rev = t.revision or short(svc.latest_ready_revision)
            if t.percent:
                out[rev] = out.get(rev, 0) + t.percent
        return out

    def entries(self, service: str) -> list[dict[str, Any]]:
        """The service's audit entries, oldest first, as the Logging API's JSON."""
        from google.cloud.audit import audit_log_pb2  # noqa: F401  (AuditLog in protoPayload)
        from google.cloud.logging_v2.types import LogEntry
        from google.protobuf import json_format

        found = self.clients.logging().list_log_entries(
            request={
                "resource_names": [f"projects/{self.emulator.project}"],
                "filter": 'logName:"cloudaudit.googleapis.com" '
                f'AND resource.labels.service_name="{service}"',
                "order_by": "timestamp asc",
                "page_size": 1000,
            }
        )
        return [json_format.MessageToDict(LogEntry.pb(e)) for e in found]
