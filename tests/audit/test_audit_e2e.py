"""A deploy by a person -> the emulator's audit entry -> ``check --from-audit-event`` -> verdict.

End to end on one emulator: the entries fed to the guard are the ones the emulator wrote
for the deploy, read back through ``ListLogEntries`` as ``gcloud logging read`` prints
them, and then every entry the guard's own writes left is fed back in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from audit.conftest import Guard
from audit.site import HUMAN, Site
from deploy_guard.emulator.audit import default_principal
from deploy_guard.exitcodes import ExitCode

OWN = "deploy-guard's own write (traffic and annotations only)"


def deploy_entry(site: Site, service: str, revision: str) -> dict[str, Any]:
    """The first entry of the person's write that created ``revision``."""
    for entry in site.entries(service):
        payload = entry["protoPayload"]
        created = payload.get("response", {}).get("latestCreatedRevision", "")
        if created.endswith(f"/{revision}") and entry["operation"].get("first"):
            return entry
    raise AssertionError(f"no audit entry for the deploy of {revision}")


@pytest.mark.fault(
    "traffic",
    "a person deploys a bad revision by hand; the audit log starts the check",
    "the check rolls it back (exit 1), and its own rollback, fed back in, is skipped (exit 0)",
)
def test_a_bad_deploy_by_hand_is_rolled_back_and_the_rollback_is_not_checked(
    site: Site, guard: Guard, audit_emulator: Any
) -> None:
    good = site.deploy("chat-hand")
    bad = site.deploy("chat-hand", {"CHAT_FAIL_1011_AFTER": "1"})
    assert site.serving("chat-hand") == {bad: 100}
    seen = len(site.entries("chat-hand"))
    entry = deploy_entry(site, "chat-hand", bad)
    assert entry["protoPayload"]["authenticationInfo"]["principalEmail"] == HUMAN

    code, report, output = guard([entry])  # a list, as gcloud logging read prints it
    assert code == ExitCode.FAIL, output
    assert report["verdict"] == "fail"
    assert report["action"] == "rolled_back"
    assert (report["service"], report["revision"]) == ("chat-hand", bad)
    assert report["region"] == audit_emulator.region  # the event's, not the environment's
    assert report["audit_event"]["decision"] == "checked"
    assert report["audit_event"]["principal"] == HUMAN
    assert site.serving("chat-hand") == {good: 100}

    own = site.entries("chat-hand")[seen:]  # the temporary tag, the rollback, its records
    assert own
    guard_sa = default_principal(audit_emulator.project)
    assert {e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in own} == {guard_sa}
    for written in own:
        code, report, output = guard(written)
        assert code == ExitCode.PASS, output
        assert f"skipped: {OWN}" in output
        assert report["verdict"] == "skipped"
        assert report["action"] == "none"
        assert report["audit_event"]["reason"] == OWN
    assert site.serving("chat-hand") == {good: 100}

    # Eventarc delivers at least once: the same deploy's event again judges nothing twice
    code, report, output = guard(entry)
    assert code == ExitCode.PASS, output
    assert "judged already: it is on the rejected list" in output


def test_a_healthy_deploy_passes_through_the_workflows_trimmed_event(
    site: Site, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job reads the event from the env var the workflow sets (deploy/audit/)."""
    from audit.samples import cloud_event as as_cloud_event
    from audit.workflow import trimmed_event

    site.deploy("chat-ok")
    healthy = site.deploy("chat-ok")
    event = trimmed_event(as_cloud_event(deploy_entry(site, "chat-ok", healthy)))
    monkeypatch.setenv("DEPLOY_GUARD_AUDIT_EVENT", event)
    code, report, output = guard(None, source="env:DEPLOY_GUARD_AUDIT_EVENT")
    assert code == ExitCode.PASS, output
    assert report["verdict"] == "pass"
    assert report["revision"] == healthy
    assert site.serving("chat-ok") == {healthy: 100}


@pytest.mark.fault(
    "emulator",
    "a person moves traffic or changes a label: an UpdateService that creates no revision",
    "skipped (exit 0) from the entry alone, or after reading the service for a whole write",
)
def test_changes_that_create_no_revision_are_skipped(
    site: Site, guard: Guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import run_v2

    from deploy_guard.gcp import audit

    # The emulator's clock is the guard's: no skew to allow for, and these writes follow
    # the deploy by milliseconds (the tolerance itself is test_audit_rules.py's subject).
    monkeypatch.setattr(audit, "CLOCK_TOLERANCE_S", 0.0)

    first = site.deploy("chat-traffic")
    second = site.deploy("chat-traffic")
    kinds = run_v2.TrafficTargetAllocationType
    split = [
        run_v2.TrafficTarget(
            type_=kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION, revision=r, percent=p
        )
        for r, p in ((first, 50), (second, 50))
    ]
    seen = len(site.entries("chat-traffic"))
    site.update("chat-traffic", mask="traffic", traffic=split)
    (masked,) = site.entries("chat-traffic")[seen:]
    code, report, output = guard(masked)
    assert code == ExitCode.PASS, output
    assert "sends no template (update_mask traffic): no new revision" in output
    assert report["verdict"] == "skipped"

    # the whole service sent back (as v1 and gcloud always do), template unchanged
    site.update("chat-traffic", labels={"team": "chat"})
    (whole,) = site.entries("chat-traffic")[seen + 1 :]
    code, report, output = guard(whole)
    assert code == ExitCode.PASS, output
    assert "created no new revision in chat-traffic" in output
    assert site.serving("chat-traffic") == {first: 50, second: 50}


def test_an_unreadable_event_is_exit_2_and_a_service_no_policy_covers_is_skipped(
    site: Site, guard: Guard
) -> None:
    code, report, output = guard({"protoPayload": {"serviceName": "run.googleapis.com"}})
    assert code == ExitCode.USAGE
    assert "protoPayload.methodName is missing" in output
    assert report["verdict"] == "error"

    revision = site.deploy("billing")  # chat-fast.yaml covers chat* only
    code, report, output = guard(deploy_entry(site, "billing", revision))
    assert code == ExitCode.PASS, output
    assert "no policy covers service billing" in output
    assert report["service"] == "billing"

    revision = site.deploy("chat-gone")
    entry = deploy_entry(site, "chat-gone", revision)
    site.clients.services().delete_service(name=site.name("chat-gone")).result(timeout=30)
    code, report, output = guard(entry)  # the job started after the service was deleted
    assert code == ExitCode.PASS, output
    assert "service chat-gone no longer exists" in output


TOKEN = "ya29.a0AfH6SMBx-secret-token"


@pytest.mark.fault(
    "secrets",
    "an audit event carries tokens: in headers, the request, the response, even in its names",
    "no output line and no report field repeats them, whatever the event's outcome",
)
@pytest.mark.parametrize("outcome", ["skipped", "unreadable-name", "not-json", "wrong-type"])
def test_tokens_in_an_event_never_reach_the_output_or_the_report(
    guard: Guard, outcome: str, tmp_path: Path
) -> None:
    from audit.samples import cloud_event, v2_update

    entry = v2_update(mask="traffic", annotations={"x-token": TOKEN})
    entry["protoPayload"]["requestMetadata"]["requestAttributes"]["headers"] = {
        "authorization": f"Bearer {TOKEN}"
    }
    entry["protoPayload"]["response"] = {"env": [{"name": "API_TOKEN", "value": TOKEN}]}
    entry["protoPayload"]["status"] = {"code": 0, "message": TOKEN}
    source = None
    if outcome == "unreadable-name":
        entry["protoPayload"]["methodName"] = f"Bearer {TOKEN}"
        entry["protoPayload"]["authenticationInfo"]["principalEmail"] = f"x {TOKEN}"
    elif outcome == "not-json":
        broken = tmp_path / "broken.json"
        broken.write_text('{"protoPayload": {"methodName": "' + TOKEN + '",')
        source = str(broken)
    event = {**cloud_event(entry), "type": f"Bearer {TOKEN}"} if outcome == "wrong-type" else entry
    code, report, output = guard(event, source=source)
    assert code == (ExitCode.PASS if outcome == "skipped" else ExitCode.USAGE), output
    assert TOKEN not in output
    assert "ya29" not in json.dumps(report)
