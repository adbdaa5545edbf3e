"""Cloud Run Admin API v2 on the emulator, through the official clients only."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud import run_v2

from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.gcp.clients import Clients
from waiting import wait_until

LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
REVISION = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED
FAILED = run_v2.Condition.State.CONDITION_FAILED


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def to(revision: str, percent: int, tag: str = "") -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=REVISION, revision=revision, percent=percent, tag=tag)


def latest(percent: int, tag: str = "") -> run_v2.TrafficTarget:
    return run_v2.TrafficTarget(type_=LATEST, percent=percent, tag=tag)


def served_by(url: str) -> str:
    """The K_REVISION that answered a fresh connection to ``url``."""
    response = httpx.get(url + "/", headers={"Connection": "close"}, timeout=10)
    response.raise_for_status()
    return str(response.json()["revision"])


def live_children() -> set[int]:
    """Processes this test process started that still run (zombies excluded)."""
    me = str(os.getpid())
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == me and fields[0] not in ("Z", "X"):
            found.add(int(stat.parent.name))
    return found


def condition(resource: Any, type_: str) -> run_v2.Condition:
    return next(c for c in resource.conditions if c.type_ == type_)


def test_deploy_creates_a_ready_revision_that_answers_on_the_service_url(
    deploy: Any, gcp_clients: Clients
) -> None:
    svc = deploy("chat")

    rev_id = short(svc.latest_ready_revision)
    assert re.fullmatch(r"chat-00001-[a-z0-9]{3}", rev_id)
    assert svc.latest_created_revision == svc.latest_ready_revision
    assert svc.latest_ready_revision == f"{svc.name}/revisions/{rev_id}"
    assert (svc.generation, svc.observed_generation, svc.reconciling) == (1, 1, False)
    assert all((svc.uid, svc.etag, svc.creator, svc.create_time))
    assert svc.terminal_condition.state == SUCCEEDED
    assert {c.type_ for c in svc.conditions} == {"RoutesReady", "ConfigurationsReady"}
    assert [(s.type_, s.percent) for s in svc.traffic_statuses] == [(LATEST, 100)]
    assert svc.urls == [svc.uri]
    assert served_by(svc.uri) == rev_id
    env = httpx.get(svc.uri + "/env", params={"name": "K_SERVICE"}, timeout=10).text
    assert env == "chat"

    rev = gcp_clients.revisions().get_revision(name=svc.latest_ready_revision)
    assert condition(rev, "Ready").state == SUCCEEDED
    assert rev.service == svc.name
    assert rev.containers[0].image == "local/revision-app"
    assert all((rev.create_time, rev.log_uri))
    assert rev.generation == 1


def test_tagged_no_traffic_revision_then_a_50_50_split(deploy: Any) -> None:
    first = short(deploy("chat").latest_ready_revision)

    svc = deploy("chat", env={"V": "2"}, traffic=[to(first, 100), latest(0, "candidate")])
    second = short(svc.latest_ready_revision)
    assert second.startswith("chat-00002-")
    assert svc.generation == 2
    tagged = [s for s in svc.traffic_statuses if s.tag == "candidate"]
    assert len(tagged) == 1
    assert tagged[0].uri.startswith("http://127.0.0.1:")
    assert tagged[0].uri != svc.uri
    assert served_by(svc.uri) == first
    assert served_by(tagged[0].uri) == second

    svc = deploy("chat", env={"V": "2"}, traffic=[to(first, 50), to(second, 50)])
    assert short(svc.latest_ready_revision) == second  # same template: no new revision
    with httpx.Client(headers={"Connection": "close"}, timeout=10) as http:
        answers = {http.get(svc.uri).json()["revision"] for _ in range(60)}
    assert answers == {first, second}


def test_traffic_only_update_creates_no_revision_and_finishes_at_once(
    deploy: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    svc = deploy("chat")
    first = short(svc.latest_ready_revision)
    services = gcp_clients.services()

    svc.traffic = [to(first, 100, tag="stable")]
    op = services.update_service(service=svc)
    assert op.done()
    after = op.result()
    assert after.generation == svc.generation + 1
    assert after.etag != svc.etag
    assert after.observed_generation == after.generation
    assert after.latest_created_revision == svc.latest_created_revision
    revisions = gcp_clients.revisions().list_revisions(parent=svc.name)
    assert [short(r.name) for r in revisions] == [first]
    (status,) = after.traffic_statuses
    assert (status.type_, status.revision, status.percent, status.tag) == (
        REVISION,
        first,
        100,
        "stable",
    )
    assert served_by(status.uri) == first

    # Removing the tag closes its URL.
    after.traffic = [to(first, 100)]
    services.update_service(service=after).result()
    with pytest.raises(httpx.TransportError):
        httpx.get(status.uri, timeout=5)


BAD_TRAFFIC = [
    ([latest(90)], "sum to 100"),
    ([latest(50), to("chat-00009-zzz", 50)], "chat-00009-zzz"),
    ([latest(100, tag="a"), latest(0, tag="a")], "more than once"),
    ([latest(101)], "0-100"),
    ([run_v2.TrafficTarget(type_=LATEST, revision="chat-x", percent=100)], "must not name"),
]


def test_bad_traffic_is_invalid_argument_and_changes_nothing(
    deploy: Any, gcp_clients: Clients
) -> None:
    before = deploy("chat")
    for targets, needle in BAD_TRAFFIC:
        spec = run_v2.Service(before)
        spec.traffic = targets
        with pytest.raises(gexc.InvalidArgument, match=needle):
            gcp_clients.services().update_service(service=spec)
    after = gcp_clients.services().get_service(name=before.name)
    assert run_v2.Service.pb(after) == run_v2.Service.pb(before)


def test_unknown_names_are_not_found_and_bad_names_invalid(
    emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    services, revisions = gcp_clients.services(), gcp_clients.revisions()
    missing = f"{emulator.parent}/services/nope"
    with pytest.raises(gexc.NotFound):
        services.get_service(name=missing)
    with pytest.raises(gexc.NotFound):
        services.delete_service(name=missing)
    with pytest.raises(gexc.NotFound):
        services.update_service(service=run_v2.Service(name=missing))
    with pytest.raises(gexc.NotFound):
        revisions.get_revision(name=f"{missing}/revisions/nope-00001-abc")
    with pytest.raises(gexc.NotFound):
        revisions.list_revisions(parent=missing)
    with pytest.raises(gexc.NotFound, match="other-project"):
        services.list_services(parent="projects/other-project/locations/us-central1")
    with pytest.raises(gexc.NotFound, match="europe-west1"):
        services.get_service(name="projects/local-project/locations/europe-west1/services/a")
    with pytest.raises(gexc.InvalidArgument):
        services.get_service(name="services/chat")
    with pytest.raises(gexc.InvalidArgument, match="service id"):
        services.create_service(
            parent=emulator.parent, service=run_v2.Service(), service_id="Bad_Name"
        )


def test_create_twice_is_already_exists_and_validate_only_changes_nothing(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    services = gcp_clients.services()
    spec = run_v2.Service(template=app_template())
    check = services.create_service(
        request={
            "parent": emulator.parent,
            "service": spec,
            "service_id": "chat",
            "validate_only": True,
        }
    )
    assert check.done()
    assert list(services.list_services(parent=emulator.parent)) == []

    svc = services.create_service(parent=emulator.parent, service=spec, service_id="chat").result(
        timeout=30, polling=fast_polling
    )
    with pytest.raises(gexc.AlreadyExists):
        services.create_service(parent=emulator.parent, service=spec, service_id="chat")

    changed = run_v2.Service(svc)
    changed.template = app_template(env={"V": "2"})
    services.update_service(request={"service": changed, "validate_only": True})
    after = services.get_service(name=svc.name)
    assert (after.generation, after.etag) == (svc.generation, svc.etag)
    assert len(list(gcp_clients.revisions().list_revisions(parent=svc.name))) == 1


def test_allow_missing_update_creates_the_service(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    spec = run_v2.Service(name=f"{emulator.parent}/services/fresh", template=app_template())
    op = gcp_clients.services().update_service(request={"service": spec, "allow_missing": True})
    svc = op.result(timeout=30, polling=fast_polling)
    assert short(svc.latest_ready_revision).startswith("fresh-00001-")


def test_list_services_and_revisions_page_newest_revision_first(
    emulator: EmulatorThread, deploy: Any, gcp_clients: Clients
) -> None:
    for n in range(3):
        deploy("chat", env={"N": str(n)})
    deploy("other")
    services = gcp_clients.services()
    first = services.list_services(request={"parent": emulator.parent, "page_size": 1})
    assert len(first.services) == 1
    assert first.next_page_token
    assert sorted(short(s.name) for s in first) == ["chat", "other"]  # pager follows tokens

    parent = f"{emulator.parent}/services/chat"
    pager = gcp_clients.revisions().list_revisions(request={"parent": parent, "page_size": 2})
    pages = list(pager.pages)
    assert [len(p.revisions) for p in pages] == [2, 1]
    names = [short(r.name) for p in pages for r in p.revisions]
    assert [n.split("-")[1] for n in names] == ["00003", "00002", "00001"]
    every = gcp_clients.revisions().list_revisions(parent=f"{emulator.parent}/services/-")
    assert len(list(every)) == 4
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        services.list_services(request={"parent": emulator.parent, "page_token": "garbage"})


@pytest.mark.fault(
    "emulator",
    "a deploy whose revision fails to start",
    "observed_generation and traffic_statuses stay at the last serving state",
)
def test_revision_that_exits_at_once_fails_with_its_output(
    deploy: Any, gcp_clients: Clients
) -> None:
    good = deploy("chat")
    with pytest.raises(gexc.FailedPrecondition, match="exited with status 3"):
        deploy("chat", env={"APP_EXIT_AT_START": "3"})

    svc = gcp_clients.services().get_service(name=good.name)
    assert svc.latest_ready_revision == good.latest_ready_revision
    assert svc.latest_created_revision != good.latest_created_revision
    assert svc.terminal_condition.state == FAILED
    assert "missing CONFIG" in svc.terminal_condition.message
    assert list(svc.traffic_statuses) == list(good.traffic_statuses)
    # the failed reconcile leaves observed_generation behind (service.proto, `reconciling`)
    assert (svc.reconciling, svc.generation) == (False, good.generation + 1)
    assert svc.observed_generation == good.generation
    assert served_by(svc.uri) == short(good.latest_ready_revision)

    bad = gcp_clients.revisions().get_revision(name=svc.latest_created_revision)
    ready = condition(bad, "Ready")
    assert ready.state == FAILED
    assert "exited with status 3" in ready.message
    assert "fatal: cannot start revision" in ready.message


def test_revision_that_never_listens_fails_after_its_timeout(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    template = app_template(env={"APP_NEVER_LISTEN": "1"})
    template.containers[0].startup_probe = run_v2.Probe(period_seconds=1, failure_threshold=1)
    op = gcp_clients.services().create_service(
        parent=emulator.parent, service=run_v2.Service(template=template), service_id="slow"
    )
    with pytest.raises(gexc.FailedPrecondition, match="allocated timeout"):
        op.result(timeout=30, polling=fast_polling)
    svc = gcp_clients.services().get_service(name=f"{emulator.parent}/services/slow")
    assert svc.latest_ready_revision == ""
    rev = gcp_clients.revisions().get_revision(name=svc.latest_created_revision)
    assert "will never listen" in condition(rev, "Ready").message
    assert emulator.pids() == []
    assert live_children() == set()


def test_operation_reports_reconciling_until_the_revision_listens(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    services = gcp_clients.services()
    op = services.create_service(
        parent=emulator.parent,
        service=run_v2.Service(template=app_template(env={"APP_STARTUP_DELAY": "0.5"})),
        service_id="chat",
    )
    assert not op.done()
    assert op.metadata.reconciling  # the client reads metadata as a Service
    during = services.get_service(name=f"{emulator.parent}/services/chat")
    assert during.reconciling
    assert during.observed_generation == 0
    svc = op.result(timeout=30, polling=fast_polling)
    assert not svc.reconciling


def test_delete_revision_refuses_a_serving_one_and_delete_service_stops_processes(
    deploy: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    first = short(deploy("chat").latest_ready_revision)
    svc = deploy("chat", env={"V": "2"})  # LATEST moves to the second
    assert live_children() == set(emulator.pids())
    assert len(emulator.pids()) == 2
    revisions = gcp_clients.revisions()
    with pytest.raises(gexc.FailedPrecondition, match="receiving traffic"):
        revisions.delete_revision(name=svc.latest_ready_revision).result()
    deleted = revisions.delete_revision(name=f"{svc.name}/revisions/{first}").result()
    assert short(deleted.name) == first
    assert len(emulator.pids()) == 1

    gcp_clients.services().delete_service(name=svc.name).result()
    assert emulator.pids() == []
    assert live_children() == set()
    assert list(gcp_clients.services().list_services(parent=emulator.parent)) == []


def test_writes_leave_audit_entries_and_revision_output_is_in_cloud_logging(
    deploy: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    svc = deploy("chat")
    rev = short(svc.latest_ready_revision)
    served_by(svc.uri)
    logging = gcp_clients.logging()
    audit = list(
        logging.list_log_entries(
            resource_names=[f"projects/{emulator.project}"],
            filter='logName:"cloudaudit.googleapis.com"',
        )
    )
    methods = [e.proto_payload.value for e in audit]
    assert any(b"google.cloud.run.v2.Services.CreateService" in m for m in methods)
    wanted = f'resource.labels.revision_name="{rev}" AND textPayload:"served by"'

    def found() -> list[Any]:
        return list(
            logging.list_log_entries(resource_names=[f"projects/{emulator.project}"], filter=wanted)
        )

    entries = wait_until(found, 10, "the revision's stdout line in Logging")
    assert entries[0].resource.labels["service_name"] == "chat"


def test_faults_reach_the_client_and_calls_are_counted(
    deploy: Any, emulator: EmulatorThread, gcp_clients: Clients
) -> None:
    svc = deploy("chat")
    emulator.faults.reset_counts()
    emulator.faults.fail("GetService", grpc.StatusCode.UNAVAILABLE, times=1)
    services = gcp_clients.services()
    with pytest.raises(gexc.ServiceUnavailable):
        services.get_service(name=svc.name, retry=None)
    assert services.get_service(name=svc.name, retry=None).name == svc.name
    assert emulator.faults.counts()["/google.cloud.run.v2.Services/GetService"] == 2


def test_a_bad_request_does_not_break_the_emulator(
    emulator: EmulatorThread, deploy: Any, gcp_clients: Clients
) -> None:
    svc = deploy("chat")
    channel = grpc.insecure_channel(emulator.address)
    try:
        raw = channel.unary_unary("/google.cloud.run.v2.Services/GetService")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff", timeout=5)  # not a protobuf message
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        channel.close()
    assert gcp_clients.services().get_service(name=svc.name).generation == svc.generation


def test_concurrent_deploys_end_on_the_newest_revision_whatever_order_they_finish(
    deploy: Any, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    svc = deploy("chat")
    services = gcp_clients.services()
    svc.template = app_template(env={"APP_STARTUP_DELAY": "1.0"})
    slow = services.update_service(service=svc)
    svc.template = app_template(env={"V": "3"})
    svc.etag = ""  # a blind write: with the etag it read, the second deploy is refused
    fast = services.update_service(service=svc)
    newest = fast.result(timeout=30, polling=fast_polling)
    slow.result(timeout=30, polling=fast_polling)

    final = services.get_service(name=svc.name)
    assert short(final.latest_ready_revision).startswith("chat-00003-")
    assert final.latest_ready_revision == newest.latest_ready_revision
    assert (final.generation, final.observed_generation, final.reconciling) == (3, 3, False)
    assert final.terminal_condition.state == SUCCEEDED
    assert served_by(final.uri) == short(final.latest_ready_revision)


def test_deleting_a_service_while_its_revision_starts_aborts_the_operation(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    services = gcp_clients.services()
    op = services.create_service(
        parent=emulator.parent,
        service=run_v2.Service(template=app_template(env={"APP_NEVER_LISTEN": "1"})),
        service_id="chat",
    )
    services.delete_service(name=f"{emulator.parent}/services/chat").result()
    with pytest.raises(gexc.Aborted):
        op.result(timeout=30, polling=fast_polling)
    assert emulator.pids() == []
    assert live_children() == set()


async def test_the_test_app_closes_a_websocket_with_the_code_asked_for(
    deploy: Any,
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosedError

    svc = deploy("chat")
    url = svc.uri.replace("http://", "ws://") + "/ws?close=1011&reason=orchestrator"
    async with connect(url) as ws:
        hello = await ws.recv()
        assert short(svc.latest_ready_revision) in str(hello)
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "orchestrator")


def test_update_mask_writes_only_the_fields_it_names(
    deploy: Any, gcp_clients: Clients, app_template: Any
) -> None:
    svc = deploy("chat")
    first = short(svc.latest_ready_revision)
    services = gcp_clients.services()

    spec = run_v2.Service(svc)
    spec.etag = ""  # the same spec is sent several times: no stale-read check
    spec.template = app_template(env={"V": "2"})  # not in the mask: must be ignored
    spec.traffic = [to(first, 100, tag="stable")]
    spec.labels = {"team": "chat"}
    after = services.update_service(
        request={"service": spec, "update_mask": {"paths": ["traffic"]}}
    ).result()
    assert after.latest_created_revision == svc.latest_created_revision  # no new revision
    assert [s.tag for s in after.traffic_statuses] == ["stable"]
    assert dict(after.labels) == {}
    assert run_v2.RevisionTemplate.pb(after.template) == run_v2.RevisionTemplate.pb(svc.template)

    labelled = services.update_service(
        request={"service": spec, "update_mask": {"paths": ["labels"]}}
    ).result()
    assert dict(labelled.labels) == {"team": "chat"}
    assert labelled.latest_created_revision == svc.latest_created_revision

    for bad in (["uri"], ["no_such_field"], ["template.nope"]):
        with pytest.raises(gexc.InvalidArgument, match="update_mask"):
            services.update_service(request={"service": spec, "update_mask": {"paths": bad}})
    unchanged = services.get_service(name=svc.name)
    assert unchanged.generation == labelled.generation


def test_a_startup_probe_sets_how_long_a_revision_gets_to_listen(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    template = app_template(env={"APP_NEVER_LISTEN": "1"})
    template.containers[0].startup_probe = run_v2.Probe(
        tcp_socket=run_v2.TCPSocketAction(), period_seconds=1, failure_threshold=1
    )
    started = time.monotonic()
    op = gcp_clients.services().create_service(
        parent=emulator.parent, service=run_v2.Service(template=template), service_id="probed"
    )
    with pytest.raises(gexc.FailedPrecondition, match="allocated timeout of 1 s"):
        op.result(timeout=30, polling=fast_polling)
    assert time.monotonic() - started < 8  # not the fixture's 10 s default

    template.containers[0].startup_probe = run_v2.Probe(period_seconds=-1)
    with pytest.raises(gexc.InvalidArgument, match="startup_probe"):
        gcp_clients.services().create_service(
            parent=emulator.parent, service=run_v2.Service(template=template), service_id="neg"
        )


@pytest.mark.parametrize(
    ("env", "command", "needle"),
    [
        ({"PORT": "1"}, None, "reserved env names were provided: PORT"),
        ({"A=B": "x"}, None, "env\\[0\\]: name 'A=B' is invalid"),
        ({"A": "x\0y"}, None, "NUL"),
        ({}, ["python\0"], "command\\[0\\] contains a NUL"),
    ],
)
def test_a_container_no_process_could_run_is_invalid_argument(
    emulator: EmulatorThread,
    gcp_clients: Clients,
    app_template: Any,
    env: dict[str, str],
    command: list[str] | None,
    needle: str,
) -> None:
    template = app_template(env=env)
    if command is not None:
        template.containers[0].command = command
    services = gcp_clients.services()
    with pytest.raises(gexc.InvalidArgument, match=needle):
        services.create_service(
            parent=emulator.parent, service=run_v2.Service(template=template), service_id="chat"
        )
    assert list(services.list_services(parent=emulator.parent)) == []


@pytest.mark.fault(
    "emulator", "UpdateService with a stale etag", "ABORTED (AIP-154), nothing changes"
)
def test_a_write_with_a_stale_etag_is_aborted_and_changes_nothing(
    deploy: Any, gcp_clients: Clients
) -> None:
    read = deploy("chat")
    first = short(read.latest_ready_revision)
    services = gcp_clients.services()
    moved = run_v2.Service(read)
    moved.traffic = [to(first, 100, tag="other")]  # someone else writes first
    after = services.update_service(service=moved).result()
    assert after.etag != read.etag

    stale = run_v2.Service(read)
    stale.traffic = [to(first, 100, tag="mine")]
    with pytest.raises(gexc.Aborted, match="does not match"):
        services.update_service(service=stale)
    now = services.get_service(name=read.name)
    assert run_v2.Service.pb(now) == run_v2.Service.pb(after)

    stale.etag = after.etag  # re-read: accepted
    assert [t.tag for t in services.update_service(service=stale).result().traffic] == ["mine"]
    blind = run_v2.Service(name=read.name, traffic=[to(first, 100)])  # no etag: not checked
    blind_op = services.update_service(request={"service": blind, "update_mask": "traffic"})
    assert [t.tag for t in blind_op.result().traffic] == [""]


@pytest.mark.fault(
    "emulator",
    "read-modify-write of a service with a named revision",
    "409 'Revision named ... already exists'; a traffic-only mask works",
)
def test_a_named_revision_refuses_a_write_that_resends_its_template(
    emulator: EmulatorThread, gcp_clients: Clients, app_template: Any, fast_polling: Any
) -> None:
    services = gcp_clients.services()
    svc = services.create_service(
        parent=emulator.parent,
        service=run_v2.Service(template=app_template(revision="chat-v1")),
        service_id="chat",
    ).result(timeout=30, polling=fast_polling)
    assert short(svc.latest_ready_revision) == "chat-v1"

    rmw = run_v2.Service(svc)
    rmw.traffic = [to("chat-v1", 100, tag="stable")]  # a change outside the template
    message = "Revision named 'chat-v1' with different configuration already exists"
    with pytest.raises(gexc.AlreadyExists, match=message):
        services.update_service(service=rmw)
    with pytest.raises(gexc.AlreadyExists, match=message):
        services.update_service(request={"service": rmw, "update_mask": "template,traffic"})
    changed = run_v2.Service(svc)
    changed.template = app_template(env={"V": "2"}, revision="chat-v1")
    with pytest.raises(gexc.AlreadyExists, match=message):
        services.update_service(service=changed)
    assert services.get_service(name=svc.name).generation == svc.generation

    # the same write without the template (traffic only) is fine, and makes no revision
    after = services.update_service(request={"service": rmw, "update_mask": "traffic"}).result()
    assert [(s.revision, s.tag) for s in after.traffic_statuses] == [("chat-v1", "stable")]
    assert short(after.latest_created_revision) == "chat-v1"
    # a new name makes a new revision, as `gcloud run deploy --revision-suffix v2` does
    after.template = app_template(env={"V": "2"}, revision="chat-v2")
    newer = services.update_service(service=after).result(timeout=30, polling=fast_polling)
    assert short(newer.latest_created_revision) == "chat-v2"


@pytest.mark.fault(
    "emulator",
    "traffic to a revision deleted after the read",
    "accepted; the operation fails with code 13; spec broken, old split served",
)
def test_traffic_to_a_revision_deleted_meanwhile_is_accepted_and_fails_inside_the_operation(
    deploy: Any, gcp_clients: Clients
) -> None:
    old = short(deploy("chat").latest_ready_revision)
    read = deploy("chat", env={"V": "2"})  # 100 % to LATEST: the new revision
    new = short(read.latest_ready_revision)
    gcp_clients.revisions().delete_revision(name=f"{read.name}/revisions/{old}").result()

    broken = run_v2.Service(read)  # written from the read before the delete
    broken.traffic = [to(old, 100)]
    op = gcp_clients.services().update_service(service=broken)  # accepted
    with pytest.raises(gexc.InternalServerError, match=f"Revision '{old}' does not exist or is"):
        op.result(timeout=30)
    svc = gcp_clients.services().get_service(name=read.name)
    assert [(t.revision, t.percent) for t in svc.traffic] == [(old, 100)]  # the spec: broken
    assert [(s.type_, s.percent) for s in svc.traffic_statuses] == [(LATEST, 100)]  # served: old
    assert svc.terminal_condition.state == FAILED
    assert (svc.reconciling, svc.generation, svc.observed_generation) == (
        False,
        read.generation + 1,
        read.generation,
    )
    assert served_by(svc.uri) == new
