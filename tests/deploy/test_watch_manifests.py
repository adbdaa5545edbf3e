"""The Cloud Run manifests of ``deploy/watch/`` have the shape gcloud accepts, and do the watch.

No Google project is reachable from here, so each manifest is held to an explicit schema per
kind (``gcloud run jobs replace``, ``run services replace``, ``beta run worker-pools
replace``), written from the Cloud Run Admin API v1 discovery document: a misspelled or
unknown key fails here, as it would in a team's first ``replace``. Then what the watch needs
of them: the watcher's command line parses, a job's task outlives ``--for``, a fleet has one
task per service, a forever-watcher has one instance and CPU between requests, and no secret
is written inline. Every file of the folder says how to apply it. The metric and the alert
are in test_watch_alerting.py, roles.sh in test_watch_roles.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

import watch_cli
from watch_deploy import (
    PLACEHOLDER,
    PLACEHOLDERS,
    WATCH,
    body,
    containers,
    header,
    the_document,
    the_value,
    values_of,
    watch_args,
)

CLOUD_RUN = ("job.yaml", "fleet-job.yaml", "worker-pool.yaml", "service.yaml")
#: How each file is applied: its header comment must show this command.
APPLIED_WITH = {
    "job.yaml": "gcloud run jobs replace",
    "fleet-job.yaml": "gcloud run jobs replace",
    "worker-pool.yaml": "gcloud beta run worker-pools replace",
    "service.yaml": "gcloud run services replace",
    "heartbeat-metric.yaml": "gcloud logging metrics create deploy-guard-watch-heartbeat",
    "alert-policy.yaml": "gcloud alpha monitoring policies create",
}
#: Cloud Run jobs: "up to 168 hours (7 days)" per attempt (Cloud Run docs, "Create jobs").
MAX_TASK_TIMEOUT_S = 168 * 3600
#: Room after --for for the last window, the report and a rollback before the task is killed.
TASK_TIMEOUT_MARGIN_S = 10 * 60


# --- a schema per kind: nested dicts of allowed keys ---------------------------------


@dataclass(frozen=True)
class Obj:
    """A mapping with exactly these keys allowed (values are schemas) and some required."""

    fields: dict[str, Any]
    required: frozenset[str] = frozenset()
    #: For free-form maps (labels, annotations): the keys allowed, or None for any.
    keys: frozenset[str] | None = None


@dataclass(frozen=True)
class Map:
    """A string-to-string map (labels, annotations, resource limits)."""

    keys: frozenset[str] | None = None
    required: frozenset[str] = field(default_factory=frozenset)


STR, INT, BOOL = str, int, bool


def check(node: Any, schema: Any, path: str = "") -> list[str]:
    """Every way ``node`` departs from ``schema``, each with its path."""
    where = path or "(top)"
    if isinstance(schema, list):
        if not isinstance(node, list) or not node:
            return [f"{where}: expected a non-empty list"]
        return [e for i, item in enumerate(node) for e in check(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, Map):
        if not isinstance(node, dict):
            return [f"{where}: expected a map"]
        errors = [f"{where}.{k}: must be a string, got {v!r}" for k, v in node.items()
                  if not isinstance(v, str)]  # fmt: skip
        if schema.keys is not None:
            errors += [f"{where}: unknown key {k!r}" for k in node if k not in schema.keys]
        errors += [f"{where}: missing {k!r}" for k in sorted(schema.required - set(node))]
        return errors
    if isinstance(schema, Obj):
        if not isinstance(node, dict):
            return [f"{where}: expected a mapping"]
        errors = [f"{where}: unknown key {k!r}" for k in node if k not in schema.fields]
        errors += [f"{where}: missing {k!r}" for k in sorted(schema.required - set(node))]
        for key, value in node.items():
            if key in schema.fields:
                errors += check(value, schema.fields[key], f"{path}.{key}".lstrip("."))
        return errors
    if schema is INT and (isinstance(node, bool) or not isinstance(node, int)):
        return [f"{where}: expected an integer, got {node!r}"]
    if not isinstance(node, schema):
        return [f"{where}: expected {schema.__name__}, got {node!r}"]
    return []


def _obj(required: str = "", **fields: Any) -> Obj:
    return Obj(fields, frozenset(required.split()))


# Cloud Run Admin API v1 (the YAML `gcloud run ... replace` reads): Container, EnvVar,
# ObjectMeta, RevisionSpec, TaskSpec, ExecutionSpec, JobSpec, ServiceSpec, WorkerPoolSpec.
# Only the fields these manifests may use are allowed: a new one is added here on purpose.
ENV = _obj(
    "name",
    name=STR,
    value=STR,
    valueFrom=_obj("secretKeyRef", secretKeyRef=_obj("name key", name=STR, key=STR)),
)
CONTAINER = _obj(
    "image args resources",
    image=STR,
    name=STR,
    command=[STR],
    args=[STR],
    env=[ENV],
    ports=[_obj("containerPort", containerPort=INT, name=STR)],
    resources=_obj(
        "limits", limits=Map(frozenset({"cpu", "memory"}), frozenset({"cpu", "memory"}))
    ),
)
LOCATION = "cloud.googleapis.com/location"


def _metadata(annotations: set[str]) -> Obj:
    return _obj(
        "name labels",
        name=STR,
        labels=Map(frozenset({LOCATION}), frozenset({LOCATION})),
        annotations=Map(frozenset(annotations)),
    )


TASK_SPEC = _obj(
    "containers serviceAccountName timeoutSeconds maxRetries",
    containers=[CONTAINER],
    serviceAccountName=STR,
    timeoutSeconds=STR,  # int64: a string in the API's JSON
    maxRetries=INT,
)
JOB = _obj(
    "apiVersion kind metadata spec",
    apiVersion=STR,
    kind=STR,
    metadata=_metadata({"run.googleapis.com/launch-stage"}),
    spec=_obj(
        "template",
        template=_obj(
            "spec",
            spec=_obj(
                "taskCount parallelism template",
                taskCount=INT,
                parallelism=INT,
                template=_obj("spec", spec=TASK_SPEC),
            ),
        ),
    ),
)
REVISION_SPEC = _obj(
    "containers serviceAccountName", containers=[CONTAINER], serviceAccountName=STR
)
SERVICE = _obj(
    "apiVersion kind metadata spec",
    apiVersion=STR,
    kind=STR,
    metadata=_metadata({"run.googleapis.com/ingress", "run.googleapis.com/launch-stage"}),
    spec=_obj(
        "template",
        template=_obj(
            "metadata spec",
            metadata=_obj(
                "annotations",
                annotations=Map(
                    frozenset({
                        "autoscaling.knative.dev/minScale",
                        "autoscaling.knative.dev/maxScale",
                        "run.googleapis.com/cpu-throttling",
                        "run.googleapis.com/startup-cpu-boost",
                    }),
                    frozenset({
                        "autoscaling.knative.dev/minScale",
                        "autoscaling.knative.dev/maxScale",
                        "run.googleapis.com/cpu-throttling",
                    }),
                ),
            ),
            spec=REVISION_SPEC,
        ),
    ),
)  # fmt: skip
WORKER_POOL = _obj(
    "apiVersion kind metadata spec",
    apiVersion=STR,
    kind=STR,
    metadata=_metadata({
        "run.googleapis.com/launch-stage",
        "run.googleapis.com/scalingMode",
        "run.googleapis.com/manualInstanceCount",
    }),
    spec=_obj("template", template=_obj("spec", spec=REVISION_SPEC)),
)  # fmt: skip
#: (apiVersion, kind) as gcloud accepts them -> the schema.
KINDS = {
    ("run.googleapis.com/v1", "Job"): JOB,
    ("serving.knative.dev/v1", "Service"): SERVICE,
    ("run.googleapis.com/v1", "WorkerPool"): WORKER_POOL,
}
EXPECTED_KIND = {
    "job.yaml": "Job",
    "fleet-job.yaml": "Job",
    "worker-pool.yaml": "WorkerPool",
    "service.yaml": "Service",
}


# --- the files -------------------------------------------------------------------------


def test_every_file_in_the_folder_is_checked_here() -> None:
    yamls = {p.name for p in WATCH.glob("*.yaml")}
    assert yamls == set(APPLIED_WITH), "a new manifest needs its checks in this module"
    assert {p.name for p in WATCH.iterdir()} == set(APPLIED_WITH) | {"roles.sh", "Dockerfile"}


@pytest.mark.parametrize("name", sorted(APPLIED_WITH))
def test_each_file_says_how_to_apply_it(name: str) -> None:
    text = header(name)
    assert text, f"{name} has no header comment"
    assert APPLIED_WITH[name] in text.replace("\\\n#", " ").replace("  ", " ")
    used = set(PLACEHOLDER.findall(body(name)))
    assert used <= set(PLACEHOLDERS), (
        f"{name}: undocumented placeholders {used - set(PLACEHOLDERS)}"
    )
    # `envsubst` with an explicit list fills exactly these (and no `$VAR` of the YAML's own)
    if used:
        listed = set(re.findall(r"envsubst '([^']*)'", text))
        (names,) = listed
        assert set(PLACEHOLDER.findall(names)) == used, name
        for placeholder in used:
            assert f"export {placeholder}=" in text or f" {placeholder}=" in text, placeholder


@pytest.mark.parametrize("name", CLOUD_RUN)
def test_each_cloud_run_manifest_has_the_shape_gcloud_accepts(name: str) -> None:
    doc = the_document(name)
    key = (doc.get("apiVersion"), doc.get("kind"))
    assert key in KINDS, f"{name}: apiVersion/kind {key} is not one gcloud accepts here"
    assert doc["kind"] == EXPECTED_KIND[name]
    assert check(doc, KINDS[key]) == []
    assert doc["metadata"]["labels"][LOCATION] == PLACEHOLDERS["REGION"]
    assert doc["metadata"]["name"].startswith("deploy-guard-watch-")
    for container in containers(doc):
        assert container["image"] == PLACEHOLDERS["IMAGE"]


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d["spec"]["template"]["spec"].update(taskcount=1), "unknown key 'taskcount'"),
        (lambda d: d["spec"]["template"]["spec"]["template"]["spec"].pop("maxRetries"),
         "missing 'maxRetries'"),
        (lambda d: d["metadata"].update(annotations={"run.googleapis.com/ingres": "internal"}),
         "unknown key 'run.googleapis.com/ingres'"),
        (lambda d: d["spec"]["template"]["spec"]["template"]["spec"]["containers"][0].update(
            arg=["watch"]), "unknown key 'arg'"),
        (lambda d: d["spec"]["template"]["spec"].update(taskCount="3"), "expected an integer"),
    ],
)  # fmt: skip
def test_the_schema_refuses_what_cloud_run_would(mutate: Any, complaint: str) -> None:
    doc = the_document("job.yaml")
    assert check(doc, JOB) == []  # the unmutated file passes: the failure is the change's
    mutate(doc)
    assert any(complaint in error for error in check(doc, JOB)), check(doc, JOB)


def test_annotation_values_are_strings() -> None:
    """Knative annotations are strings: an unquoted `minScale: 1` is refused by the API."""
    doc = the_document("service.yaml")
    doc["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/minScale"] = 1
    assert any("must be a string" in e for e in check(doc, SERVICE))


# --- the watcher's command line --------------------------------------------------------


@pytest.mark.parametrize("name", CLOUD_RUN)
def test_the_container_runs_a_watch_the_command_accepts(name: str) -> None:
    words = watch_args(the_document(name))
    used = {w.partition("=")[0] for w in words if w.startswith("--")}
    assert used <= watch_cli.accepted(), f"{name}: unknown flags {used - watch_cli.accepted()}"
    watch_cli.parse(words)  # raises on a flag without its value, or a value click refuses
    assert the_value(words, "--project") == PLACEHOLDERS["PROJECT_ID"]
    assert the_value(words, "--region") == PLACEHOLDERS["REGION"]
    # the image holds the policies there (deploy/watch/Dockerfile)
    assert the_value(words, "--policy") == "/policies"


def test_the_policies_image_puts_them_where_the_manifests_read_them() -> None:
    lines = [
        line
        for line in (WATCH / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines == ["ARG GUARD_IMAGE", "FROM ${GUARD_IMAGE}", "COPY policies/ /policies/"]


def test_a_bake_job_outlives_its_watch_within_the_documented_maximum() -> None:
    from deploy_guard.policy.units import parse_duration

    doc = the_document("job.yaml")
    task = doc["spec"]["template"]["spec"]["template"]["spec"]
    words = watch_args(doc)
    bake = parse_duration(the_value(words, "--for"))
    assert bake >= 24 * 3600, "the job is the long bake: 24 hours at least"
    timeout = int(task["timeoutSeconds"])
    assert bake + TASK_TIMEOUT_MARGIN_S <= timeout <= MAX_TASK_TIMEOUT_S
    # a crashed attempt is retried and picks up from the service's annotations
    assert task["maxRetries"] >= 1
    assert "--keep-watching" not in words
    assert the_value(words, "--service") == PLACEHOLDERS["SERVICE"]
    assert doc["spec"]["template"]["spec"]["taskCount"] == 1


def test_a_fleet_job_has_one_task_per_service_and_no_coordinator() -> None:
    from deploy_guard.policy.units import parse_duration

    doc = the_document("fleet-job.yaml")
    execution = doc["spec"]["template"]["spec"]
    words = watch_args(doc)
    services = values_of(words, "--service")
    assert len(services) >= 2
    assert len(set(services)) == len(services), "a service watched twice races itself"
    assert "--services-file" not in words
    # CLOUD_RUN_TASK_INDEX picks the service: one task each, all at once
    assert execution["taskCount"] == len(services)
    assert execution["parallelism"] == len(services)
    task = execution["template"]["spec"]
    assert parse_duration(the_value(words, "--for")) + TASK_TIMEOUT_MARGIN_S <= int(
        task["timeoutSeconds"]
    ) <= MAX_TASK_TIMEOUT_S  # fmt: skip
    assert task["maxRetries"] >= 1


@pytest.mark.parametrize("name", ["worker-pool.yaml", "service.yaml"])
def test_a_forever_watcher_never_ends_by_itself(name: str) -> None:
    words = watch_args(the_document(name))
    assert "--for" not in words  # SIGTERM (Cloud Run stopping it) ends it with 0
    assert "--keep-watching" in words  # a rollback does not end it either
    assert values_of(words, "--service") == [PLACEHOLDERS["SERVICE"]]


def test_the_worker_pool_runs_exactly_one_watcher() -> None:
    annotations = the_document("worker-pool.yaml")["metadata"]["annotations"]
    assert annotations["run.googleapis.com/scalingMode"] == "manual"
    assert annotations["run.googleapis.com/manualInstanceCount"] == "1"


def test_the_service_has_one_instance_its_cpu_always_and_no_internet_ingress() -> None:
    doc = the_document("service.yaml")
    template = doc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "1"
    assert annotations["autoscaling.knative.dev/maxScale"] == "1"
    # instance-based billing: CPU outside requests (a watcher never gets one)
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert doc["metadata"]["annotations"]["run.googleapis.com/ingress"] == "internal"
    (container,) = template["spec"]["containers"]
    # instance-based billing needs at least 1 CPU (Cloud Run docs, "CPU limits")
    assert float(container["resources"]["limits"]["cpu"]) >= 1
    # Cloud Run starts a service only once it listens on its port: the one declared
    (port,) = container["ports"]
    assert the_value(watch_args(doc), "--health-port") == str(port["containerPort"])


# --- no secret written inline ----------------------------------------------------------

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL|PRIVATE", re.I)
_SECRET_VALUE = re.compile(
    r"ya29\.|-----BEGIN|AIza[0-9A-Za-z_-]{20}|\"private_key\"|gh[pousr]_[0-9A-Za-z]{20}"
    r"|xox[abpr]-|hooks\.slack\.com/services/|Bearer\s+\S"
)


@pytest.mark.parametrize("name", sorted(APPLIED_WITH))
def test_no_secret_values_inline(name: str) -> None:
    text = (WATCH / name).read_text(encoding="utf-8")
    assert not _SECRET_VALUE.search(text), f"{name} holds something that looks like a secret"
    if name not in CLOUD_RUN:
        return
    for container in containers(the_document(name)):
        for env in container.get("env", []):
            if _SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{name}: {env['name']} inline; use valueFrom"
        words = container["args"]
        for flag in ("--token-env", "--token-file"):  # names and paths, never the token
            for value in values_of(words, flag):
                assert not _SECRET_VALUE.search(value)


def test_the_secret_check_catches_an_inline_token() -> None:
    assert _SECRET_VALUE.search('value: "Bearer abc.def"')
    assert _SECRET_NAME.search("CHAT_API_TOKEN")
