"""What the Cloud Run part of the emulator holds: services, revisions, their processes.

The resources are kept as the proto-plus messages the API returns, so a read is
a copy (``run_v2.Service(entry.service)``) and nothing has to be translated.
This module also builds the output-only parts Cloud Run fills in: conditions,
etags, uids, revision resources made from a template.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.cloud import run_v2

from deploy_guard.emulator.processes import RevisionProcess

State = run_v2.Condition.State
#: Who the emulator says created or changed a resource (there is no identity locally).
LOCAL_USER = "local-user@deploy-guard.emulator"


def now() -> datetime:
    return datetime.now(UTC)


def new_etag() -> str:
    return '"' + secrets.token_urlsafe(12) + '"'


def new_uid() -> str:
    return str(uuid.uuid4())


def condition(type_: str, state: int, message: str = "", **reasons: object) -> run_v2.Condition:
    """A condition as Cloud Run reports it (``reasons``: reason=, revision_reason=)."""
    return run_v2.Condition(
        type_=type_,
        state=state,
        message=message,
        last_transition_time=now(),
        severity=(
            run_v2.Condition.Severity.ERROR
            if state == State.CONDITION_FAILED
            else run_v2.Condition.Severity.SEVERITY_UNSPECIFIED
        ),
        **reasons,
    )


@dataclass
class RevisionEntry:
    """One revision: its resource and, once started, its process."""

    resource: run_v2.Revision
    process: RevisionProcess | None = None
    ready: bool = False

    @property
    def short(self) -> str:
        return self.resource.name.rsplit("/", 1)[-1]


@dataclass
class ServiceEntry:
    """One service: its resource, revisions (oldest first) and routing state."""

    resource: run_v2.Service
    revisions: dict[str, RevisionEntry] = field(default_factory=dict)
    #: Tags whose router endpoint is open.
    open_tags: set[str] = field(default_factory=set)
    #: Generations whose reconciliation has not finished.
    pending: set[int] = field(default_factory=set)
    #: The newest generation whose outcome the service's conditions show.
    outcome_generation: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Revisions deleted so far: a traffic spec naming one is accepted, and its
    #: operation fails ("Revision '...' does not exist or is deleted").
    deleted_revisions: set[str] = field(default_factory=set)
    #: Serialises the parts of reconciliation that touch traffic and the router.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    deleted: bool = False

    @property
    def service_id(self) -> str:
        return self.resource.name.rsplit("/", 1)[-1]


def revision_from_template(
    service: run_v2.Service, template: run_v2.RevisionTemplate, revision_id: str
) -> run_v2.Revision:
    """The Revision resource Cloud Run makes from a service's template."""
    parent = service.name
    project = parent.split("/")[1]
    return run_v2.Revision(
        name=f"{parent}/revisions/{revision_id}",
        uid=new_uid(),
        generation=1,
        labels=dict(template.labels),
        annotations=dict(template.annotations),
        create_time=now(),
        update_time=now(),
        launch_stage=service.launch_stage,
        service=parent,
        scaling=template.scaling,
        vpc_access=template.vpc_access,
        max_instance_request_concurrency=template.max_instance_request_concurrency,
        timeout=template.timeout,
        service_account=template.service_account,
        containers=list(template.containers),
        volumes=list(template.volumes),
        execution_environment=template.execution_environment,
        session_affinity=template.session_affinity,
        reconciling=True,
        conditions=[
            condition("Ready", State.CONDITION_RECONCILING, "Deploying revision."),
            condition("ContainerHealthy", State.CONDITION_RECONCILING),
            condition("ResourcesAvailable", State.CONDITION_SUCCEEDED),
        ],
        observed_generation=1,
        log_uri=(
            f"https://console.cloud.google.com/logs/viewer?project={project}"
            f"&resource=cloud_run_revision/service_name/{service.name.rsplit('/', 1)[-1]}"
            f"/revision_name/{revision_id}"
        ),
        creator=LOCAL_USER,
        etag=new_etag(),
    )
