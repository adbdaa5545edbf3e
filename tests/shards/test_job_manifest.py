"""``deploy/shards/job.yaml`` has the shape ``gcloud run jobs replace`` accepts, and shards a probe.

No Google project is reachable from here, so the manifest is held to an explicit schema written
from the Cloud Run Admin API v1 discovery document (Job, ExecutionSpec, TaskSpec, Container,
VolumeMount, Volume, CSIVolumeSource): a misspelled or unknown key fails here as it would in a
team's first ``replace``. Then what sharding needs of it: every task at once, the probe's
command line parses, each task writes its own file on the Cloud Storage volume, one folder per
execution, and no rule of the policy leaves a task idle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
from ruamel.yaml import YAML

from deploy_guard.commands.probe import probe
from deploy_guard.policy.load import load_file
from deploy_guard.probes.runner import planned_attempts
from deploy_guard.probes.shard import Shard
from deploy_guard.shards import destination

REPO = Path(__file__).resolve().parents[2]
JOB = REPO / "deploy" / "shards" / "job.yaml"
PLACEHOLDERS = {
    "REGION": "europe-west1",
    "BUCKET": "acme-probe-shards",
    "URL": "https://candidate---chat-agent-abc123-ew.a.run.app",
    "IMAGE": "europe-west1-docker.pkg.dev/acme/cloud-run/deploy-guard-policies:0.1.0",
    "PROBER_SA": "deploy-guard-prober@acme.iam.gserviceaccount.com",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


def obj(required: str = "", **fields: Any) -> dict[str, Any]:
    """A mapping allowing exactly ``fields`` and requiring the words of ``required``."""
    return {"fields": fields, "required": set(required.split())}


STR, INT = str, int
CONTAINER = obj(
    "image args resources volumeMounts",
    image=STR,
    args=[STR],
    resources=obj("limits", limits=obj("cpu memory", cpu=STR, memory=STR)),
    volumeMounts=[obj("name mountPath", name=STR, mountPath=STR, readOnly=bool)],
)
VOLUME = obj(
    "name csi",
    name=STR,
    csi=obj(
        "driver volumeAttributes",
        driver=STR,
        readOnly=bool,
        volumeAttributes=obj("bucketName", bucketName=STR, mountOptions=STR),
    ),
)
SCHEMA = obj(
    "apiVersion kind metadata spec",
    apiVersion=STR,
    kind=STR,
    metadata=obj(
        "name labels", name=STR, labels=obj("cloud.googleapis.com/location", **{
            "cloud.googleapis.com/location": STR})
    ),
    spec=obj("template", template=obj("spec", spec=obj(
        "taskCount parallelism template",
        taskCount=INT,
        parallelism=INT,
        template=obj("spec", spec=obj(
            "containers serviceAccountName timeoutSeconds maxRetries volumes",
            containers=[CONTAINER],
            serviceAccountName=STR,
            timeoutSeconds=STR,  # int64: a string in the API's JSON
            maxRetries=INT,
            volumes=[VOLUME],
        )),
    ))),
)  # fmt: skip


def check(node: Any, schema: Any, path: str = "") -> list[str]:
    """Every way ``node`` departs from ``schema``, each with its path."""
    where = path or "(top)"
    if isinstance(schema, list):
        if not isinstance(node, list) or not node:
            return [f"{where}: expected a non-empty list"]
        return [e for i, item in enumerate(node) for e in check(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            return [f"{where}: expected a mapping"]
        errors = [f"{where}: unknown key {k!r}" for k in node if k not in schema["fields"]]
        errors += [f"{where}: missing {k!r}" for k in sorted(schema["required"] - set(node))]
        for key, value in node.items():
            if key in schema["fields"]:
                errors += check(value, schema["fields"][key], f"{path}.{key}".lstrip("."))
        return errors
    if isinstance(node, bool) is not (schema is bool) or not isinstance(node, schema):
        return [f"{where}: expected {schema.__name__}, got {node!r}"]
    return []


def text() -> str:
    return JOB.read_text(encoding="utf-8")


def header() -> str:
    lines = text().splitlines()
    end = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    return "\n".join(lines[:end])


def document() -> dict[str, Any]:
    body = "\n".join(ln for ln in text().splitlines() if not ln.lstrip().startswith("#"))
    filled = PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(1)], body)
    (doc,) = [d for d in YAML(typ="safe", pure=True).load_all(filled) if d is not None]
    return dict(doc)


def task(doc: dict[str, Any]) -> dict[str, Any]:
    return dict(doc["spec"]["template"]["spec"]["template"]["spec"])


def probe_args(doc: dict[str, Any]) -> list[str]:
    (container,) = task(doc)["containers"]
    words = [str(w) for w in container["args"]]
    assert words[0] == "probe", words
    return words[1:]


def value(words: list[str], flag: str) -> str:
    (found,) = [words[i + 1] for i, w in enumerate(words) if w == flag]
    return found


def test_the_header_says_how_to_apply_run_and_judge() -> None:
    said = header().replace("\\\n#", " ")
    for step in (
        "gcloud run jobs replace",
        "gcloud run jobs execute deploy-guard-probe-shards",
        "gcloud storage cp",
        "deploy-guard judge --policy",
    ):
        assert step in said, step
    body = "\n".join(ln for ln in text().splitlines() if not ln.lstrip().startswith("#"))
    used = set(PLACEHOLDER.findall(body))
    assert used == set(PLACEHOLDERS)
    (listed,) = re.findall(r"envsubst '([^']*)'", said)
    assert set(PLACEHOLDER.findall(listed)) == used  # envsubst fills exactly these


def test_the_job_has_the_shape_gcloud_accepts() -> None:
    doc = document()
    assert (doc["apiVersion"], doc["kind"]) == ("run.googleapis.com/v1", "Job")
    assert check(doc, SCHEMA) == []
    assert doc["metadata"]["labels"]["cloud.googleapis.com/location"] == PLACEHOLDERS["REGION"]


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d["spec"]["template"]["spec"].update(taskcount=1), "unknown key 'taskcount'"),
        (lambda d: task(d)["volumes"][0]["csi"].update(bucket="x"), "unknown key 'bucket'"),
        (lambda d: task(d)["containers"][0].pop("volumeMounts"), "missing 'volumeMounts'"),
        (lambda d: d["spec"]["template"]["spec"].update(parallelism="5"), "expected int"),
    ],
)
def test_the_schema_refuses_what_cloud_run_would(mutate: Any, complaint: str) -> None:
    doc = document()
    mutate(doc)
    assert any(complaint in e for e in check(doc, SCHEMA)), check(doc, SCHEMA)


def test_every_task_runs_at_once_and_the_probe_parses() -> None:
    doc = document()
    execution = doc["spec"]["template"]["spec"]
    assert execution["parallelism"] == execution["taskCount"] >= 2
    words = probe_args(doc)
    with click.Context(probe) as ctx:
        probe.parse_args(ctx, list(words))  # raises on an unknown flag or a missing value
        assert ctx.params["shard_spec"] == "auto"
    assert value(words, "--url") == PLACEHOLDERS["URL"]
    assert int(task(doc)["maxRetries"]) >= 1


def test_each_task_writes_its_own_file_on_the_bucket_one_folder_per_run() -> None:
    doc = document()
    spec = task(doc)
    ((volume,), (container,)) = spec["volumes"], spec["containers"]
    assert volume["csi"]["driver"] == "gcsfuse.run.googleapis.com"
    assert volume["csi"]["volumeAttributes"]["bucketName"] == PLACEHOLDERS["BUCKET"]
    assert not volume["csi"].get("readOnly", False)
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"]
    template = value(probe_args(doc), "--measurements")
    count = doc["spec"]["template"]["spec"]["taskCount"]
    runs = [
        {destination(template, Shard(k, count), {"CLOUD_RUN_EXECUTION": run}) for k in range(count)}
        for run in ("probe-a1b2c", "probe-d3e4f")
    ]
    assert all(len(paths) == count for paths in runs)  # one file per task
    assert not runs[0] & runs[1]  # one folder per execution
    for path in runs[0]:
        assert path.is_relative_to(mount["mountPath"])
        assert path.parent.name == "probe-a1b2c"


def test_no_task_is_idle_for_a_rule_it_runs() -> None:
    doc = document()
    words = probe_args(doc)
    policy_file = value(words, "--policy")
    assert policy_file.startswith("/policies/")  # the image holds them (deploy/watch/Dockerfile)
    policy = load_file(REPO / "policies" / Path(policy_file).name)
    count = doc["spec"]["template"]["spec"]["taskCount"]
    named = [words[i + 1] for i, w in enumerate(words) if w == "--rule"]
    probes = [r for r in policy.rules if r.kind in ("http", "websocket")]
    for rule in [policy.rule(n) for n in named] or probes:  # --rule, else every probe rule
        name = rule.name
        shares = [planned_attempts(rule, Shard(k, count)) for k in range(count)]
        assert min(shares) > 0, f"{name}: a task runs none of its sessions: {shares}"
        assert sum(shares) == planned_attempts(rule)
