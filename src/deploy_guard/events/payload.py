"""The notification payload: one versioned JSON document, for webhooks, Pub/Sub and logs.

The document is a pydantic model, so its JSON Schema
(``deploy-guard notify schema``, kept in ``docs/notification.schema.json``) is
generated from the very model that builds every payload and cannot drift from
it. ``schema`` names the version: fields may be added within
``deploy-guard.dev/notification/v1``, never renamed or removed; a change that
breaks a receiver gets ``v2``.

It is built from the report's own document (:meth:`CheckReport.to_dict`),
which is already redacted, so a payload holds no secret the report would not.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deploy_guard.events.model import KINDS, Event

SCHEMA = "deploy-guard.dev/notification/v1"
SCHEMA_ID = "https://deploy-guard.dev/schemas/notification/v1.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: At most this many reasons and rules ride in a payload (the report has them all).
MAX_REASONS = 10
MAX_RULES = 30


class RuleSummary(BaseModel):
    """One rule's result, as the report words it."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    rule: str
    kind: str = Field(description="http, websocket, logs or metric")
    status: str = Field(description="pass, warn, fail, no_data, error or pending")
    counts: str = Field("", description='the counts in words: "5 of 5 sessions closed with 1011"')
    threshold: str = Field("", description="the limit in words")


class CloudDeployPhase(BaseModel):
    """``check --cloud-deploy``: the Cloud Deploy phase the verify job judged."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    pipeline: str = Field(description="the delivery pipeline (CLOUD_DEPLOY_DELIVERY_PIPELINE)")
    target: str = Field(description="the target (CLOUD_DEPLOY_TARGET)")
    release: str
    rollout: str
    phase: str = Field(description='the rollout phase, e.g. "canary-10" or "stable"')
    percentage: int | None = Field(
        description="the candidate's share in the phase (CLOUD_DEPLOY_PERCENTAGE_DEPLOY when "
        "set, else what the service served it); null when not known"
    )
    job_run: str = Field(description="the verify job run (CLOUD_DEPLOY_JOB_RUN)")


class Payload(BaseModel):
    """What every webhook, Pub/Sub message and log entry carries for one event."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    schema_: str = Field(
        SCHEMA,
        alias="schema",
        json_schema_extra={"const": SCHEMA},
        description="the payload's version; within it fields are only ever added",
    )
    id: str = Field(description="unique per event; the same on every retry: drop duplicates")
    kind: str = Field(
        json_schema_extra={"enum": list(KINDS)},
        description="what happened (docs/notifications.md says when each is sent)",
    )
    at: str = Field(description="when it happened (UTC, ISO 8601)")
    command: str = Field(description="check, rollout or watch")
    project: str
    region: str
    service: str
    revision: str = Field(description="the revision the event is about (short name)")
    verdict: str = Field(description="pass, warn, fail, inconclusive or error, so far")
    action: str = Field(
        description="none, rolled_back, promoted, held, superseded, failed or unverified"
    )
    exit_code: int | None = Field(
        description="the run's exit code when the event is its outcome; null mid-run (a step, "
        "a watch's rollback or degraded episode)"
    )
    message: str = Field(description="the outcome in one line, as printed on stdout")
    reasons: list[str] = Field(description=f"why, with the counts (at most {MAX_REASONS})")
    rules: list[RuleSummary] = Field(
        description=f"the rules that did not pass (at most {MAX_RULES})"
    )
    traffic_before: dict[str, int] = Field(description="{revision: percent} before the run")
    traffic_after: dict[str, int] = Field(description="{revision: percent} now")
    detail: dict[str, Any] = Field(
        description="the kind's own facts: step (index, percent) for step; why for "
        "watch_degraded; revision and first_bad_to_verified_s for a watch's rollback"
    )
    report_url: str | None = Field(description="where the full report is (--report-url)")
    cloud_deploy: CloudDeployPhase | None = Field(
        description="the Cloud Deploy phase a verify job judged (check --cloud-deploy); "
        "null for any other run"
    )


def build(event: Event, report: dict[str, Any], *, report_url: str | None = None) -> dict[str, Any]:
    """The payload of ``event`` from the report's document (``CheckReport.to_dict()``)."""
    rules = [
        RuleSummary(
            rule=str(r.get("rule", "")),
            kind=str(r.get("kind", "")),
            status=str(r.get("status", "")),
            counts=str(r.get("counts") or ""),
            threshold=str(r.get("threshold") or ""),
        )
        for r in report.get("rules", ())
        if r.get("status") not in ("pass", "pending")
    ]
    payload = Payload(
        id=event.id,
        kind=event.kind,
        at=event.at,
        command=event.command,
        project=str(report.get("project", "")),
        region=str(report.get("region", "")),
        service=event.service,
        revision=event.revision,
        verdict=str(report.get("verdict", "")),
        action=str(report.get("action", "")),
        exit_code=_exit_code(report) if event.outcome else None,
        message=str(report.get("message", "")),
        reasons=[str(r) for r in report.get("reasons", ())][:MAX_REASONS],
        rules=rules[:MAX_RULES],
        traffic_before=dict(report.get("traffic_before", {})),
        traffic_after=dict(report.get("traffic_after", {})),
        detail=dict(event.detail),
        report_url=report_url,
        cloud_deploy=_cloud_deploy(report.get("cloud_deploy")),
    )
    return payload.model_dump(by_alias=True)


def _cloud_deploy(block: Any) -> CloudDeployPhase | None:
    """The payload's ``cloud_deploy`` from the report's block (None: not a verify job)."""
    if not isinstance(block, dict) or not block:
        return None
    percentage = block.get("percentage")
    return CloudDeployPhase(
        **{k: str(block.get(k) or "") for k in ("pipeline", "target", "release", "rollout")},
        phase=str(block.get("phase") or ""),
        percentage=percentage if isinstance(percentage, int) else None,
        job_run=str(block.get("job_run") or ""),
    )


def _exit_code(report: dict[str, Any]) -> int | None:
    code = report.get("exit_code")
    return int(code) if isinstance(code, int) else None


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`Payload`."""
    generated = Payload.model_json_schema(by_alias=True, mode="serialization")
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        **generated,
        "title": "deploy-guard notification",
        "description": f"{SCHEMA}: what a webhook's POST body, a Pub/Sub message's data and "
        "a log entry's jsonPayload hold for one event of deploy-guard check, rollout or watch.",
    }
