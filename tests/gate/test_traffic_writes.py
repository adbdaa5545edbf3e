"""The guard's traffic writes against Cloud Run as it really behaves (issue 9, issue 10).

Each write sends only ``traffic`` and ``annotations`` with the etag it read: a deploy
that lands meanwhile is never overwritten, a named revision's service takes every
write, a retry of a write that landed is known for the guard's own, and a write that
Cloud Run accepts and then fails, or that cannot be read back, is reported as what it
is. In-process against the emulator; a :class:`CloudRun` subclass picks the moment
another deploy lands, at the one seam the production code has (``_update``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import pytest
from google.cloud import run_v2

from deploy_guard.errors import GuardError
from deploy_guard.gcp.cloudrun import CloudRun
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.gcp.traffic import ServiceState
from deploy_guard.report.model import CheckReport
from gates import build_gate
from waiting import eventually

REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST


def _events(report: CheckReport) -> list[str]:
    return [e.event for e in report.timeline.events]


def _revisions(chat: Any) -> list[str]:
    listed = chat.clients.revisions().list_revisions(parent=chat.name)
    return sorted(r.name.rsplit("/", 1)[-1] for r in listed)


def _env(svc: Any) -> dict[str, str]:
    return {e.name: e.value for e in svc.template.containers[0].env}


class _BeforeTheWrite(CloudRun):
    """Cloud Run where something happens between the guard's last read and its N-th write."""

    def __init__(self, nth: int, meanwhile: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.nth, self.meanwhile, self.writes = nth, meanwhile, 0

    async def _update(self, service: Any, **kw: Any) -> ServiceState:
        self.writes += 1
        if self.writes == self.nth:
            await asyncio.to_thread(self.meanwhile)
        return await super()._update(service, **kw)


def _router(emulator: Any, gcp_clients: Any, nth: int, meanwhile: Any) -> CloudRun:
    return _BeforeTheWrite(
        nth, meanwhile, gcp_clients, emulator.project, emulator.region, calls=ApiCalls()
    )


@pytest.mark.fault(
    "traffic",
    "a deploy lands while the guard's rollback write is in flight",
    "exit 4 superseded; the deploy's template and split stand, no revision of old code",
)
async def test_a_deploy_landing_during_the_rollback_write_is_never_overwritten(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)  # tagged: one write
    landed: list[str] = []

    def other_deploy() -> None:  # another pipeline: a new template, 10 % to it
        landed.append(chat.candidate({"OTHER": "deploy"}, tag=None, percent=10))

    router = _router(emulator, gcp_clients, 1, other_deploy)  # the rollback is write 1
    report = await build_gate(gcp_clients, emulator, cand, router=router).run()

    (other,) = landed
    assert report.verdict == "fail"
    assert (report.action, report.exit_code) == ("superseded", 4), report.message
    assert "refused deploy-guard's change as stale" in report.message
    svc = chat.get()
    # the other deploy's template is the service's, and no revision ran the failed code again
    assert _env(svc)["OTHER"] == "deploy"
    assert svc.latest_created_revision.endswith(other)
    assert _revisions(chat) == sorted([base, cand, other])
    served = chat.serving()
    assert served == {base: 70, cand: 20, other: 10}
    assert report.traffic_after == served  # what is served, not the split before the check


@pytest.mark.fault(
    "traffic",
    "a deploy lands before the rollback write and Cloud Run does not check the etag",
    "exit 4 superseded (traffic may be replaced, said so); the deploy's template stands",
)
async def test_without_an_etag_check_a_deploy_before_the_write_is_still_reported(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    emulator.emulator.admin.enforce_etag = False  # unverified on Cloud Run: be safe either way
    landed: list[str] = []

    def other_deploy() -> None:
        landed.append(chat.candidate({"OTHER": "deploy"}, tag=None, percent=10))

    router = _router(emulator, gcp_clients, 1, other_deploy)
    report = await build_gate(gcp_clients, emulator, cand, router=router).run()
    (other,) = landed
    assert (report.action, report.exit_code) == ("superseded", 4), report.message
    assert "did not refuse that change as stale" in report.message
    assert "check it by hand" in report.message
    assert _env(chat.get())["OTHER"] == "deploy"  # the template was never sent
    assert _revisions(chat) == sorted([base, cand, other])
    assert report.traffic_after == chat.serving()


@pytest.mark.fault(
    "traffic",
    "the rollback's answer is lost; its retry is refused as stale",
    "recognised as the guard's own landed write: rolled back, exit 1",
)
async def test_a_retried_write_whose_first_attempt_landed_is_the_guards_own(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    emulator.faults.reset_counts()
    emulator.faults.lose("UpdateService", nth=1)  # applied, then UNAVAILABLE: the client retries
    report = await build_gate(gcp_clients, emulator, cand).run()
    assert (report.action, report.exit_code) == ("rolled_back", 1), report.message
    assert emulator.faults.count("UpdateService") == 2  # the write and its refused retry
    assert chat.serving() == {base: 100}
    assert report.traffic_after == {base: 100}
    assert "rollback_verified" in _events(report)


def _named(chat: Any, suffix: str, env: dict[str, str], traffic: list[Any] | None) -> str:
    """Deploy a revision named ``chat-SUFFIX`` (``gcloud run deploy --revision-suffix``)."""
    services = chat.clients.services()
    template = chat.template(env)
    template.revision = f"chat-{suffix}"
    if traffic is None and not chat.deploys:
        op = services.create_service(
            parent=chat.emulator.parent,
            service=run_v2.Service(template=template),
            service_id=chat.service,
        )
    else:
        svc = chat.get()
        svc.template = template
        svc.traffic = traffic or []
        op = services.update_service(service=svc)
    chat.deploys += 1
    op.result(timeout=60, polling=chat.polling)
    return template.revision


NAMED = [
    # (candidate env, 20 % canary?, flags, expected action, guard writes)
    ({}, False, {}, "none", ["tag", "tag removal"]),
    ({}, False, {"promote": True}, "promoted", ["tag", "promotion"]),
    ({"CHAT_FAIL_1011_AFTER": "1"}, True, {}, "rolled_back", ["tag", "rollback"]),
]


@pytest.mark.fault(
    "traffic",
    "every guard write on a service deployed with a named revision",
    "no 409: tag, rollback, promotion and tag removal all land",
)
@pytest.mark.parametrize(("env", "canary", "flags", "action", "writes"), NAMED)
async def test_every_write_works_on_a_service_with_named_revisions(
    chat: Any,
    gcp_clients: Any,
    emulator: Any,
    env: dict[str, str],
    canary: bool,
    flags: dict[str, Any],
    action: str,
    writes: list[str],
) -> None:
    base = _named(chat, "v1", {}, None)
    split = [
        run_v2.TrafficTarget(type_=REVISION, revision=base, percent=80 if canary else 100),
        *([run_v2.TrafficTarget(type_=LATEST, percent=20)] if canary else []),
    ]
    cand = _named(chat, "v2", env, split)  # untagged: the guard adds a temporary tag
    assert chat.get().template.revision == cand
    emulator.faults.reset_counts()
    report = await build_gate(gcp_clients, emulator, cand, service="chat", **flags).run()
    assert report.action == action, report.message
    assert emulator.faults.count("UpdateService") == len(writes)
    assert not any(t.startswith("dg-") for t in chat.tags())
    assert _revisions(chat) == sorted([base, cand])  # no write made a revision
    assert chat.serving() == ({cand: 100} if action == "promoted" else {base: 100})


@pytest.mark.fault(
    "traffic",
    "a later deploy fails to start while the guard waits for the service to settle",
    "stops at once: inconclusive, says which change failed; nothing probed",
)
async def test_a_failed_reconcile_while_waiting_to_settle_stops_the_wait_at_once(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    emulator.emulator.admin.route_delay_s = 2.0  # the candidate: Ready, then 2 s to be routed
    chat.candidate(wait=False)
    cand = chat.get().latest_created_revision.rsplit("/", 1)[-1]
    gate = build_gate(gcp_clients, emulator, cand, ready_timeout=60)
    task = asyncio.ensure_future(gate.run())
    # the guard polls the reconciling service; meanwhile a deploy that never starts lands
    await eventually(lambda: gate.router.calls.get("run", "GetService") >= 1, within=30)
    broken = [sys.executable, "-c", "import sys; sys.exit(3)"]
    await asyncio.to_thread(chat.candidate, tag=None, command=broken)
    report = await asyncio.wait_for(task, 30)  # well inside the 60 s bound
    assert (report.verdict, report.exit_code) == ("inconclusive", 3), report.message
    assert "failed to apply chat's latest change" in report.message
    assert "exited with status 3" in report.message
    assert "nothing was probed or changed" in report.message
    assert "still reconciling" not in report.message
    assert report.traffic_before == {base: 100}
    assert "tag_requested" not in _events(report)


@pytest.mark.fault(
    "traffic",
    "the rollback target is deleted between the guard's read and its write",
    "write accepted, operation fails: exit 4 'failed', spec and served said, broken spec "
    "not re-sent",
)
async def test_a_rollback_that_fails_inside_cloud_run_is_the_guards_own_failure(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    svc = chat.get()  # the candidate takes 100 %: the rollback pins the base by name
    svc.template = chat.template({"CHAT_FAIL_1011_AFTER": "1"})
    chat.clients.services().update_service(service=svc).result(timeout=60, polling=chat.polling)
    cand = chat.get().latest_ready_revision.rsplit("/", 1)[-1]

    def delete_base() -> None:
        name = f"{chat.name}/revisions/{base}"
        chat.clients.revisions().delete_revision(name=name).result(timeout=30)

    # write 1 adds the temporary tag; before write 2 (the rollback) the base is deleted
    router = _router(emulator, gcp_clients, 2, delete_base)
    report = await build_gate(gcp_clients, emulator, cand, router=router).run()
    assert (report.action, report.exit_code) == ("failed", 4), report.message
    assert "superseded" not in report.message
    assert f"Revision '{base}' does not exist or is deleted" in report.message
    assert f"spec now holds {base} 100%" in report.message
    assert f"still serves {cand} 100%" in report.message
    assert report.traffic_after == {cand: 100}
    # the tag came off without re-sending the broken spec: the spec is what is served
    assert "tag_removal_from_served" in _events(report)
    assert "tag_removed" in _events(report)
    after = chat.get()
    assert not any(t.tag.startswith("dg-") for t in after.traffic_statuses)
    assert [t.revision for t in after.traffic if t.revision] == []  # LATEST, no deleted name
    assert chat.serving() == {cand: 100}


@pytest.mark.fault(
    "traffic",
    "the rollback landed but re-reading the service fails",
    "exit 4 'sent, not verified' with the last state read, not 'do it by hand'",
)
async def test_a_write_that_landed_but_cannot_be_read_back_is_sent_not_verified(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)

    class _ReadFailsAfterTheWrite(CloudRun):
        async def _update(self, service: Any, **kw: Any) -> ServiceState:
            written = await super()._update(service, **kw)
            # only the next GetService (the verification's) fails
            emulator.faults.fail("GetService", grpc.StatusCode.PERMISSION_DENIED, nth=1)
            return written

    router = _ReadFailsAfterTheWrite(
        gcp_clients, emulator.project, emulator.region, calls=ApiCalls()
    )
    report = await build_gate(gcp_clients, emulator, cand, router=router).run()
    assert (report.action, report.exit_code) == ("unverified", 4), report.message
    assert "rollback sent, not verified" in report.message
    assert "Do it by hand" not in report.message
    assert f"{base} 100%" in report.message  # what the operation reported
    assert "gcloud run services describe chat" in report.message
    assert "rollback_unverified" in _events(report)
    assert chat.serving() == {base: 100}  # it had landed
    assert report.traffic_after == {base: 100}
    from deploy_guard.report.markdown import render_markdown

    assert "NOT verified" in render_markdown(report)
    assert report.to_dict()["action"] == "unverified"


@pytest.mark.fault(
    "traffic",
    "adding the temporary tag fails",
    "exit 4; the report names no tag that never existed",
)
async def test_a_temporary_tag_that_was_never_added_is_not_reported(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None)
    emulator.faults.fail("UpdateService", grpc.StatusCode.INTERNAL, nth=1)
    gate = build_gate(gcp_clients, emulator, cand)
    with pytest.raises(GuardError):
        await gate.run()
    report = gate.report
    assert report.exit_code == 4
    assert report.temporary_tag == ""
    assert "dg-" not in report.message
    assert "tag_not_found" in _events(report)
    assert chat.serving() == {base: 100}


def _rollback_command(*args: str) -> Any:
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    return CliRunner().invoke(cli, ["rollback", "--service", "chat", *args])


@pytest.mark.fault(
    "traffic",
    "`deploy-guard rollback` on a service deployed with named revisions",
    "no 409: traffic back, no new revision",
)
def test_the_rollback_command_works_on_a_service_with_named_revisions(
    chat: Any, emulator_env: Any
) -> None:
    base = _named(chat, "v1", {}, None)
    cand = _named(chat, "v2", {}, [])  # 100 % to LATEST: the new one
    assert chat.serving() == {cand: 100}
    result = _rollback_command("--to-revision", base)
    assert result.exit_code == 0, result.output
    assert chat.serving() == {base: 100}
    assert _revisions(chat) == sorted([base, cand])


@pytest.mark.fault(
    "traffic",
    "`deploy-guard rollback` whose answer is lost and whose retry is refused",
    "its own landed write is verified: exit 0, not 'changed meanwhile'",
)
def test_the_rollback_command_knows_its_own_write_after_a_lost_answer(
    chat: Any, emulator: Any, emulator_env: Any
) -> None:
    base = chat.first()
    cand = chat.candidate(tag=None, percent=100)
    emulator.faults.lose("UpdateService", nth=1)
    result = _rollback_command("--to-revision", base)
    assert result.exit_code == 0, result.output
    assert chat.serving() == {base: 100}
    assert cand not in chat.serving()


@pytest.mark.fault(
    "traffic",
    "`deploy-guard check`: a deploy lands while the rollback's UpdateService is held",
    "exit 4; the deploy's template stands and no revision runs the failed code again",
)
def test_the_check_command_does_not_overwrite_a_deploy_landing_during_its_rollback(
    chat: Any, emulator: Any, check: Any
) -> None:
    import threading

    from waiting import wait_until

    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)  # tagged: one write
    emulator.faults.reset_counts()
    emulator.faults.delay("UpdateService", 8.0, nth=1)  # the rollback: held on its way in
    landed: list[str] = []

    def other_pipeline() -> None:
        wait_until(lambda: emulator.faults.count("UpdateService") >= 1, 90, "the rollback")
        landed.append(chat.candidate({"OTHER": "deploy"}, tag=None, percent=10))

    other = threading.Thread(target=other_pipeline)
    other.start()
    code, report = check(cand)
    other.join(60)
    (deployed,) = landed
    assert (code, report["action"]) == (4, "superseded"), report["message"]
    assert _env(chat.get())["OTHER"] == "deploy"
    assert _revisions(chat) == sorted([base, cand, deployed])
    assert chat.serving() == {base: 70, cand: 20, deployed: 10}
    assert report["traffic_after"] == chat.serving()


@pytest.mark.fault(
    "traffic",
    "the rollback write is answered ABORTED or FAILED_PRECONDITION (stale etag)",
    "re-read, superseded with the true state, exit 4",
)
@pytest.mark.parametrize("code", [grpc.StatusCode.ABORTED, grpc.StatusCode.FAILED_PRECONDITION])
async def test_both_stale_answers_mean_the_service_moved(
    chat: Any, gcp_clients: Any, emulator: Any, code: grpc.StatusCode
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, percent=20)
    emulator.faults.fail("UpdateService", code, nth=1)  # the rollback, not applied
    report = await build_gate(gcp_clients, emulator, cand).run()
    assert (report.action, report.exit_code) == ("superseded", 4), report.message
    assert "refused deploy-guard's change as stale" in report.message
    assert "(spec: " in report.message  # what the re-read shows, not the split read before
    assert chat.serving() == {base: 80, cand: 20}  # nothing moved
    assert report.traffic_after == {base: 80, cand: 20}


@pytest.mark.fault(
    "traffic",
    "the temporary tag's write landed but re-reading the service fails",
    "exit 4 'unverified'; the clean-up still finds and removes the tag",
)
async def test_a_tag_write_not_read_back_is_unverified_and_still_cleaned_up(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)

    class _ReadFailsAfterTheTag(CloudRun):
        async def _update(self, service: Any, **kw: Any) -> ServiceState:
            written = await super()._update(service, **kw)
            if not any(t.startswith("dg-") for t in chat.tags()):
                return written  # the removal: nothing more to break
            emulator.faults.fail("GetService", grpc.StatusCode.PERMISSION_DENIED, nth=1)
            return written

    router = _ReadFailsAfterTheTag(gcp_clients, emulator.project, emulator.region, calls=ApiCalls())
    gate = build_gate(gcp_clients, emulator, cand, router=router)
    with pytest.raises(GuardError):
        await gate.run()
    report = gate.report
    assert (report.action, report.exit_code) == ("unverified", 4), report.message
    assert report.temporary_tag.startswith("dg-")  # it existed: the report names it
    assert "tag_removed" in _events(report)
    assert not any(t.startswith("dg-") for t in chat.tags())
