"""The pure parts of the front: v1 <-> v2 translation, label selectors, the gcloud lines."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from google.cloud import run_v2

from deploy_guard.emulator.names import Location
from deploy_guard.emulator.rest import knative_in, knative_out
from deploy_guard.emulator.rest.gcloud_env import gcloud_environment, render
from deploy_guard.emulator.rest.selector import parse_selector
from deploy_guard.errors import EmulatorError

WHERE = Location("p", "us-central1")


def full_template() -> run_v2.RevisionTemplate:
    """A template with fields v1 expresses and fields it does not (scaling, VPC, sandbox)."""
    return run_v2.RevisionTemplate(
        revision="svc-named",
        labels={"client.knative.dev/nonce": "abcdefghij"},
        annotations={"run.googleapis.com/startup-cpu-boost": "true"},
        scaling={"min_instance_count": 1, "max_instance_count": 3},
        vpc_access={"connector": "projects/p/locations/us-central1/connectors/c"},
        execution_environment=run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2,
        timeout={"seconds": 600},
        max_instance_request_concurrency=5,
        service_account="sa@p.iam.gserviceaccount.com",
        containers=[
            run_v2.Container(
                image="img",
                command=["python3"],
                args=["app.py", "--flag"],
                env=[
                    run_v2.EnvVar(name="A", value="1"),
                    run_v2.EnvVar(
                        name="TOKEN",
                        value_source={"secret_key_ref": {"secret": "tok", "version": "2"}},
                    ),
                ],
                ports=[run_v2.ContainerPort(name="http1", container_port=8080)],
                resources={"limits": {"cpu": "1", "memory": "512Mi"}},
                startup_probe={"tcp_socket": {"port": 8080}, "period_seconds": 3},
            )
        ],
    )


def test_a_template_read_as_v1_and_written_back_is_the_same_template() -> None:
    template = full_template()
    v1 = knative_out.template(template)
    assert v1["metadata"]["name"] == "svc-named"
    assert v1["spec"]["timeoutSeconds"] == 600
    assert v1["spec"]["containerConcurrency"] == 5
    env = v1["spec"]["containers"][0]["env"]
    assert env[1] == {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "2"}}}
    back = knative_in.overlay_template(template, v1)
    assert run_v2.RevisionTemplate.pb(back) == run_v2.RevisionTemplate.pb(template)
    # a fresh template gets what v1 says, nothing of what it cannot say
    fresh = knative_in.overlay_template(None, v1)
    assert fresh.containers == template.containers
    assert "scaling" not in fresh
    # what v1 changes, changes; what it cannot say is kept
    v1["spec"]["containers"][0]["args"] = ["other.py"]
    del v1["spec"]["timeoutSeconds"]
    changed = knative_in.overlay_template(template, v1)
    assert list(changed.containers[0].args) == ["other.py"]
    assert "timeout" not in changed
    assert changed.scaling.max_instance_count == 3


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"volumes": [{"name": "v"}]}, "volumes are not emulated"),
        (
            {"containers": [{"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {}}}]}]},
            "only secretKeyRef is supported",
        ),
        ({"containers": [{"ports": "8080"}]}, "containers[0]"),
        ({"containerConcurrency": "many"}, "containerConcurrency: expected an integer"),
    ],
)
def test_what_v1_says_and_the_emulator_cannot_run_is_refused_with_its_path(
    spec: dict[str, Any], words: str
) -> None:
    with pytest.raises(EmulatorError) as info:
        knative_in.overlay_template(None, {"spec": spec})
    assert info.value.status == "INVALID_ARGUMENT"
    assert words in info.value.message


def test_v1_traffic_targets_become_v2_ones() -> None:
    latest, pinned, tagged, both = knative_in.traffic_targets(
        [
            {"latestRevision": True, "percent": 90},
            {"revisionName": "s-1", "percent": "10"},
            {"revisionName": "s-2", "tag": "candidate"},
            {"latestRevision": True, "revisionName": "s-3"},
        ]
    )
    assert (latest.type_, latest.revision, latest.percent) == (
        run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
        "",
        90,
    )
    assert (pinned.revision, pinned.percent) == ("s-1", 10)
    assert (tagged.revision, tagged.percent, tagged.tag) == ("s-2", 0, "candidate")
    # refused later by the v2 rules, as "a LATEST target must not name a revision"
    assert both.revision == "s-3"
    assert knative_out.traffic_spec([]) == [{"latestRevision": True, "percent": 100}]


def test_service_write_drops_what_cloud_run_sets_and_carries_the_resource_version() -> None:
    body = {
        "metadata": {
            "name": "svc",
            "namespace": "p",
            "resourceVersion": "abc",
            "labels": {"team": "a", "cloud.googleapis.com/location": "us-central1"},
            "annotations": {
                "run.googleapis.com/operation-id": "x",
                "serving.knative.dev/creator": "me",
                "keep": "yes",
            },
        },
        "spec": {},
    }
    write = knative_in.parse_service(body, WHERE)
    assert (write.labels, write.annotations, write.etag) == (
        {"team": "a"},
        {"keep": "yes"},
        '"abc"',
    )
    with pytest.raises(EmulatorError, match="namespace"):
        knative_in.parse_service({"metadata": {"name": "svc", "namespace": "q"}}, WHERE)


def test_v1_observed_generation_catches_up_on_a_failure_as_the_v1_docs_say() -> None:
    failed = run_v2.Service(generation=3, observed_generation=2, reconciling=False)
    assert knative_out.observed_generation(failed) == 3
    busy = run_v2.Service(generation=3, observed_generation=2, reconciling=True)
    assert knative_out.observed_generation(busy) == 2


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("serving.knative.dev/service = svc", True),
        ("serving.knative.dev/service=svc,team==a", True),
        ("team!=a", False),
        ("team in (a, b)", True),
        ("team notin (a)", False),
        ("team", True),
        ("!team", False),
        ("client.knative.dev/nonce = abcdefghij", False),
        ("", True),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    labels = {"serving.knative.dev/service": "svc", "team": "a"}
    assert parse_selector(selector)(labels) is matches


def test_a_selector_it_cannot_read_is_refused() -> None:
    with pytest.raises(EmulatorError, match="cannot parse"):
        parse_selector("team=a b")


def test_the_gcloud_lines_are_shell_quoted() -> None:
    env = gcloud_environment(
        rest_address="127.0.0.1:4000",
        grpc_address="127.0.0.1:4001",
        project="p",
        region="us-central1",
        config_dir="/tmp/a dir/it's",
    )
    assert env["CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN"] == "http://127.0.0.1:4000/"
    assert (env["CLOUDSDK_PROXY_ADDRESS"], env["CLOUDSDK_PROXY_PORT"]) == ("127.0.0.1", "4000")
    lines = [line for line in render(env).splitlines() if not line.startswith("#")]
    parsed = dict(shlex.split(line)[1].split("=", 1) for line in lines)
    assert parsed == env
