"""Reading audit entries and deciding what to check: pure, from plain data (no emulator)."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest

from audit.samples import (
    ASKED,
    HUMAN,
    PROJECT,
    REGION,
    SERVICE,
    WHEN,
    cloud_event,
    v1_replace,
    v2_update,
)
from deploy_guard.gcp import audit
from deploy_guard.gcp.traffic import LAST_KNOWN_GOOD, REJECTED, RevisionState, ServiceState


def one(document: Any) -> audit.AuditWrite:
    (write,) = audit.audit_writes(json.dumps(document))
    return write


def test_a_v1_entry_names_the_deploy_and_distrusts_a_stale_response() -> None:
    write = one(v1_replace())
    assert (write.project, write.region, write.service) == (PROJECT, REGION, SERVICE)
    assert write.verb == "Services.ReplaceService"
    assert write.api == "v1"
    assert write.principal == HUMAN
    # the earlier of the entry's timestamp and requestAttributes.time
    assert write.requested_at == datetime.fromisoformat(WHEN.replace("Z", "+00:00"))
    assert WHEN < ASKED
    assert write.update_mask is None  # v1 always sends the whole service
    # generation 8 observed 7: the response's latest revision is the old one, not this deploy's
    assert write.response_revision == ""
    assert audit.decide(write) == audit.CHECK


@pytest.mark.parametrize(
    "wrap",
    [
        lambda e: e,  # a LogEntry as exported (binary-mode CloudEvent body too)
        lambda e: [e],  # gcloud logging read --format json
        cloud_event,  # structured-mode CloudEvent: what a workflow gets
        lambda e: {"message": {"data": base64.b64encode(json.dumps(e).encode()).decode()}},
        lambda e: {**cloud_event(e), "data": json.dumps(e)},  # data as a JSON string
    ],
    ids=["log-entry", "gcloud-list", "cloudevent", "pubsub-push", "cloudevent-string-data"],
)
def test_every_form_an_event_arrives_in_reads_the_same(wrap: Any) -> None:
    assert one(wrap(v1_replace())) == one(v1_replace())


def test_project_and_region_come_from_names_when_the_labels_are_missing() -> None:
    entry = v2_update()
    del entry["resource"]
    write = one(entry)
    assert (write.project, write.region, write.service) == (PROJECT, REGION, SERVICE)
    v1 = v1_replace()
    del v1["resource"]
    write = one(v1)  # namespaces/P/services/S and the request's region
    assert (write.project, write.region, write.service) == (PROJECT, REGION, SERVICE)


@pytest.mark.fault(
    "traffic",
    "the guard's own rollback or promotion comes back as an audit event",
    "skipped as its own write (traffic and annotations only), never a check of itself",
)
def test_the_guards_own_write_is_skipped_whoever_made_it() -> None:
    own = v2_update(
        mask="traffic,annotations",
        annotations={REJECTED: "chat-agent-00008-bad", "run.googleapis.com/ingress": "all"},
        principal="ci@acme-prod.iam.gserviceaccount.com",
    )
    decision = audit.decide(one(own))
    assert not decision.check
    assert "own write" in decision.reason
    # the FieldMask's other JSON form
    own["protoPayload"]["request"]["updateMask"] = {"paths": ["annotations"]}
    assert "own write" in audit.decide(one(own)).reason


def test_a_person_redeploying_carries_the_guards_annotations_and_is_still_checked() -> None:
    """gcloud re-sends every annotation the guard left: the template makes it a deploy."""
    write = one(v1_replace(annotations={LAST_KNOWN_GOOD: "chat-agent-00006-ok"}))
    assert audit.decide(write) == audit.CHECK
    v2 = one(v2_update(annotations={REJECTED: "x"}))  # no mask: the whole service, template
    assert audit.decide(v2) == audit.CHECK


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (v2_update(mask="traffic"), "sends no template (update_mask traffic)"),
        (v1_replace(status={"code": 10, "message": "Conflict"}), "the call failed (status 10)"),
        (
            v2_update(operation={"id": "op1", "producer": "run.googleapis.com", "last": True}),
            "the end of a long-running operation",
        ),
    ],
    ids=["traffic-only", "failed", "operation-end"],
)
def test_writes_that_change_no_revision_are_skipped(entry: Any, reason: str) -> None:
    decision = audit.decide(one(entry))
    assert not decision.check
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("google.cloud.run.v1.Services.DeleteService", "a delete"),
        ("google.cloud.run.v2.Revisions.DeleteRevision", "a delete"),
        ("google.cloud.run.v1.Jobs.ReplaceJob", "not a service deploy"),
        ("google.cloud.run.v1.Services.SetIamPolicy", "not a service deploy"),
    ],
)
def test_deletes_and_other_calls_are_skipped(method: str, reason: str) -> None:
    entry = v1_replace()
    entry["protoPayload"]["methodName"] = method
    assert reason in audit.decide(one(entry)).reason


def test_another_apis_entry_is_skipped() -> None:
    entry = v1_replace()
    entry["protoPayload"]["serviceName"] = "storage.googleapis.com"
    assert "not a Cloud Run entry" in audit.decide(one(entry)).reason


def test_skip_principal_names_a_pipeline_that_checks_its_own_deploys() -> None:
    write = one(v1_replace())
    assert audit.decide(write, skip_principals=["other@x"]) == audit.CHECK
    assert "--skip-principal" in audit.decide(write, skip_principals=[HUMAN]).reason


def test_choose_takes_the_newest_deploy_and_refuses_two_services() -> None:
    older, newer = v1_replace(), v1_replace()
    newer["timestamp"] = "2026-11-02T10:00:00Z"
    newer["protoPayload"]["requestMetadata"]["requestAttributes"]["time"] = "2026-11-02T10:00:01Z"
    writes = audit.audit_writes(json.dumps([older, v2_update(mask="traffic"), newer]))
    chosen, why = audit.choose(writes)
    assert chosen is writes[2]
    assert why == ""
    other = v2_update(service="billing")
    with pytest.raises(audit.EventError, match="deploys of 2 services"):
        audit.choose(audit.audit_writes(json.dumps([older, other])))
    skipped, why = audit.choose(audit.audit_writes(json.dumps([v2_update(mask="traffic")] * 2)))
    assert skipped is None
    assert why.startswith("none of the 2 entries is a deploy to check: sends no template")


@pytest.mark.fault(
    "cli",
    "the audit event is not JSON, not an audit entry, or lacks the service or region",
    "exit 2 naming what is missing, never quoting the event (it may carry tokens)",
)
@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('{"protoPayload": {"methodName": "x", "token": "ya29.abc"', "not JSON (line 1"),
        ("[]", "empty list"),
        ('{"textPayload": "ya29.abc"}', "no protoPayload"),
        ('{"protoPayload": {"serviceName": "run.googleapis.com"}}', "methodName is missing"),
        (json.dumps({**cloud_event(v1_replace()), "type": "google.cloud.storage"}), "expected"),
        (json.dumps({"specversion": "1.0", "type": audit.EVENT_TYPE}), "has no data"),
        ('{"message": {"data": "%%%"}}', "not base64"),
    ],
)
def test_an_unreadable_event_names_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(audit.EventError) as caught:
        audit.choose(audit.audit_writes(text))
    assert complaint in str(caught.value)
    assert "ya29" not in str(caught.value)


def test_a_deploy_without_its_region_or_service_is_exit_2() -> None:
    entry = v2_update()
    del entry["resource"]
    entry["protoPayload"]["resourceName"] = "projects/acme-prod"
    entry["protoPayload"]["request"]["service"]["name"] = ""
    with pytest.raises(audit.EventError) as caught:
        audit.choose(audit.audit_writes(json.dumps(entry)))
    assert "region (resource.labels.location)" in str(caught.value)
    assert "service (resource.labels.service_name)" in str(caught.value)
    assert caught.value.exit_code == 2


# --- with the service read ---------------------------------------------------------------

T = datetime.fromisoformat(WHEN.replace("Z", "+00:00")).timestamp()


def rev(name: str, created: float) -> RevisionState:
    return RevisionState(
        name=f"projects/{PROJECT}/locations/{REGION}/services/{SERVICE}/revisions/{name}",
        short=name,
        service=SERVICE,
        ready=True,
        create_time=created,
    )


def state(latest: str, annotations: dict[str, str] | None = None) -> ServiceState:
    return ServiceState(
        name=f"projects/{PROJECT}/locations/{REGION}/services/{SERVICE}",
        short=SERVICE,
        generation=8,
        latest_created_revision=latest,
        latest_ready_revision=latest,
        traffic=(),
        traffic_statuses=(),
        annotations=annotations or {},
    )


OLD, NEW, NEWER = (
    rev("chat-agent-00007-abc", T - 3600),
    rev("chat-agent-00008-new", T + 4),
    rev("chat-agent-00009-nxt", T + 60),
)


def test_the_revision_created_at_or_after_the_request_is_the_deploys() -> None:
    write = one(v1_replace())
    revision, decision = audit.after_reads(write, state(NEW.short), [NEW, OLD])
    assert revision == NEW
    assert decision == audit.CHECK
    # Google's clocks: a revision stamped a moment before the request is still this one
    early = rev("chat-agent-00008-new", T - audit.CLOCK_TOLERANCE_S + 0.5)
    assert audit.after_reads(write, state(early.short), [OLD, early])[0] == early


def test_a_write_that_created_no_revision_is_skipped_after_reading() -> None:
    """A v1 traffic change (gcloud run services update-traffic) sends the template too."""
    revision, decision = audit.after_reads(one(v1_replace()), state(OLD.short), [OLD])
    assert revision is None
    assert "created no new revision" in decision.reason


def test_a_response_that_caught_up_with_its_write_names_the_revision() -> None:
    entry = v1_replace()
    status = entry["protoPayload"]["response"]["status"]
    status.update(observedGeneration=8, latestCreatedRevisionName=NEW.short)
    write = one(entry)
    assert write.response_revision == NEW.short
    # not the first one created after the request: the one the response names
    assert audit.after_reads(write, state(NEW.short), [OLD, NEW])[0] == NEW
    status["latestCreatedRevisionName"] = OLD.short  # a write that created none
    assert audit.after_reads(one(entry), state(OLD.short), [OLD])[0] is None


def test_a_named_revision_counts_only_if_this_write_created_it() -> None:
    named = one(v1_replace(named="chat-agent-00007-abc"))  # re-sent, already there
    assert audit.after_reads(named, state(OLD.short), [OLD])[0] is None
    fresh = one(v1_replace(named="chat-agent-00008-new"))
    assert audit.after_reads(fresh, state(NEW.short), [OLD, NEW, NEWER])[0] == NEW


def test_a_deploy_superseded_by_a_later_one_is_left_to_that_ones_check() -> None:
    revision, decision = audit.after_reads(one(v1_replace()), state(NEWER.short), [OLD, NEW, NEWER])
    assert revision == NEW
    assert not decision.check
    assert "superseded by chat-agent-00009-nxt" in decision.reason


@pytest.mark.parametrize(
    ("annotations", "said"),
    [({REJECTED: f"x,{NEW.short}"}, "rejected list"), ({LAST_KNOWN_GOOD: NEW.short}, "known good")],
)
def test_a_revision_judged_already_is_not_checked_twice(
    annotations: dict[str, str], said: str
) -> None:
    """Eventarc delivers at least once: a second delivery must not judge again."""
    _revision, decision = audit.after_reads(
        one(v1_replace()), state(NEW.short, annotations), [OLD, NEW]
    )
    assert said in decision.reason


def test_the_report_keeps_names_never_the_bodies() -> None:
    summary = one(v1_replace()).summary()
    assert summary == {
        "method": "google.cloud.run.v1.Services.ReplaceService",
        "principal": HUMAN,
        "resource_name": f"namespaces/{PROJECT}/services/{SERVICE}",
        "timestamp": "2026-11-02T09:15:04.355675Z",
        "insert_id": "qd23mgd4u3f",
    }
    assert "ya29" not in json.dumps(summary)
