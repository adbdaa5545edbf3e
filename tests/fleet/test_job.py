"""``deploy/fleet/``: the fleet job has the shape gcloud accepts and one task per entry.

No Google project is reachable from here, so the Job is held to an explicit schema written
from the Cloud Run Admin API v1 (``gcloud run jobs replace``): an unknown or misspelled key
fails here, as it would in a team's first ``replace``. Then what a fleet needs of it: the
task count is the fleet file's entry count, the command is one ``deploy-guard check``
accepts, the fleet file it reads is where the Dockerfile puts it, with its policies.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
from ruamel.yaml import YAML

from deploy_guard.commands.check import check
from deploy_guard.policy.fleet import load_fleet
from deploy_guard.policy.units import parse_duration

REPO = Path(__file__).resolve().parents[2]
FLEET_DIR = REPO / "deploy" / "fleet"
PLACEHOLDERS = {
    "PROJECT_ID": "acme-prod",
    "REGION": "europe-west1",
    "IMAGE": "europe-west1-docker.pkg.dev/acme-prod/cloud-run/deploy-guard-fleet:0.1.0",
    "GUARD_SA": "deploy-guard-fleet@acme-prod.iam.gserviceaccount.com",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")
#: Cloud Run jobs: "up to 168 hours (7 days)" per attempt; 10,000 tasks at most.
MAX_TASK_TIMEOUT_S = 168 * 3600
MAX_TASKS = 10_000
#: What a check waits for before its bound starts: the revision's readiness (--ready-timeout).
READY_TIMEOUT_S = 300


def text(name: str) -> str:
    return (FLEET_DIR / name).read_text(encoding="utf-8")


def header(name: str) -> str:
    lines = text(name).splitlines()
    end = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    return "\n".join(lines[:end])


def job() -> dict[str, Any]:
    body = "\n".join(line for line in text("job.yaml").splitlines() if not line.startswith("#"))
    filled = PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(1)], body)
    doc = YAML(typ="safe", pure=True).load(filled)
    assert isinstance(doc, dict)
    return doc


# --- a schema of the fields the manifest may use (Cloud Run Admin API v1) -----------


def obj(required: str = "", **fields: Any) -> tuple[str, dict[str, Any], frozenset[str]]:
    return ("obj", fields, frozenset(required.split()))


STR, INT = str, int
LIMITS = ("map", frozenset({"cpu", "memory"}))
CONTAINER = obj(
    "image args resources",
    image=STR,
    command=[STR],
    args=[STR],
    env=[obj("name", name=STR, value=STR)],
    resources=obj("limits", limits=LIMITS),
)
JOB = obj(
    "apiVersion kind metadata spec",
    apiVersion=STR,
    kind=STR,
    metadata=obj(
        "name labels",
        name=STR,
        labels=("map", frozenset({"cloud.googleapis.com/location"})),
        annotations=("map", frozenset({"run.googleapis.com/launch-stage"})),
    ),
    spec=obj(
        "template",
        template=obj(
            "spec",
            spec=obj(
                "taskCount parallelism template",
                taskCount=INT,
                parallelism=INT,
                template=obj(
                    "spec",
                    spec=obj(
                        "containers serviceAccountName timeoutSeconds maxRetries",
                        containers=[CONTAINER],
                        serviceAccountName=STR,
                        timeoutSeconds=STR,  # int64: a string in the API's JSON
                        maxRetries=INT,
                    ),
                ),
            ),
        ),
    ),
)


def problems(node: Any, schema: Any, path: str = "(top)") -> list[str]:
    if isinstance(schema, list):
        if not isinstance(node, list) or not node:
            return [f"{path}: expected a non-empty list"]
        return [e for i, item in enumerate(node) for e in problems(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, tuple) and schema[0] == "map":
        if not isinstance(node, dict):
            return [f"{path}: expected a map"]
        bad = [f"{path}: unknown key {k!r}" for k in node if k not in schema[1]]
        return bad + [
            f"{path}.{k}: not a string" for k, v in node.items() if not isinstance(v, str)
        ]
    if isinstance(schema, tuple):
        _, fields, required = schema
        if not isinstance(node, dict):
            return [f"{path}: expected a mapping"]
        found = [f"{path}: unknown key {k!r}" for k in node if k not in fields]
        found += [f"{path}: missing {k!r}" for k in sorted(required - set(node))]
        for key, value in node.items():
            if key in fields:
                found += problems(value, fields[key], f"{path}.{key}")
        return found
    if schema is INT and (isinstance(node, bool) or not isinstance(node, int)):
        return [f"{path}: expected an integer, got {node!r}"]
    return [] if isinstance(node, schema) else [f"{path}: expected {schema.__name__}"]


def task_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["template"]["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def check_args(doc: dict[str, Any]) -> list[str]:
    (container,) = task_spec(doc)["containers"]
    words = [*container.get("command", []), *container["args"]]
    if words[:1] == ["deploy-guard"]:
        words = words[1:]
    assert words[:1] == ["check"], words
    return [str(w) for w in words[1:]]


# --- the shape ------------------------------------------------------------------------


def test_the_job_has_the_shape_gcloud_accepts() -> None:
    doc = job()
    assert (doc["apiVersion"], doc["kind"]) == ("run.googleapis.com/v1", "Job")
    assert problems(doc, JOB) == []
    assert doc["metadata"]["labels"]["cloud.googleapis.com/location"] == PLACEHOLDERS["REGION"]


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d["spec"]["template"]["spec"].update(taskcount=3), "unknown key 'taskcount'"),
        (lambda d: d["spec"]["template"]["spec"].update(taskCount="3"), "expected an integer"),
        (lambda d: task_spec(d).pop("maxRetries"), "missing 'maxRetries'"),
        (lambda d: task_spec(d)["containers"][0].update(arg=["check"]), "unknown key 'arg'"),
    ],
)
def test_the_schema_refuses_what_cloud_run_would(mutate: Any, complaint: str) -> None:
    doc = copy.deepcopy(job())
    mutate(doc)
    assert any(complaint in p for p in problems(doc, JOB)), problems(doc, JOB)


def test_the_header_says_how_to_apply_it_with_every_placeholder() -> None:
    head = header("job.yaml")
    assert "gcloud run jobs replace" in head
    used = set(PLACEHOLDER.findall("\n".join(
        line for line in text("job.yaml").splitlines() if not line.startswith("#")
    )))  # fmt: skip
    assert used == set(PLACEHOLDERS)
    (listed,) = re.findall(r"envsubst '([^']*)'", head)
    assert set(PLACEHOLDER.findall(listed)) == used
    for name in used:
        assert f"{name}=" in head, name


# --- a fleet: one task per entry, each a check ------------------------------------------


def test_one_task_per_entry_of_the_fleet_file_it_reads(tmp_path: Path) -> None:
    doc = job()
    words = check_args(doc)
    try:
        params = check.make_context("check", words).params
    except click.ClickException as exc:
        raise AssertionError(exc.format_message()) from exc
    assert params["fleet"] == "/guard/deploy/fleet/fleet.yaml"
    assert params["revision"] is None  # the service's latest: what the release deployed
    assert not params["policy_paths"]
    assert params["project"] == PLACEHOLDERS["PROJECT_ID"]
    # the image holds the fleet file and the policies as the Dockerfile copies them
    image = tmp_path / "guard"
    for line in text("Dockerfile").splitlines():
        if line.startswith("COPY "):
            source, target = line.split()[1:]
            destination = image / target.removeprefix("/guard/")
            if source.endswith("/"):
                shutil.copytree(REPO / source, destination)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / source, destination)
    fleet = load_fleet(image / params["fleet"].removeprefix("/guard/"))
    execution = doc["spec"]["template"]["spec"]
    assert execution["taskCount"] == execution["parallelism"] == len(fleet.entries)
    assert len(fleet.entries) <= MAX_TASKS
    # a task outlives its check: the readiness wait, the bound (the slowest policy's
    # timeout, grown by the longest wait for a log turn) and the margin to act and report
    task = task_spec(doc)
    slowest = max(p.timeout for e in fleet.entries for p in e.policies)
    wait = max(fleet.budget(i, None).longest_wait for i in range(len(fleet.entries)))
    needed = READY_TIMEOUT_S + slowest + wait + parse_duration("30s") + parse_duration("5m")
    assert needed <= int(task["timeoutSeconds"]) <= MAX_TASK_TIMEOUT_S
    assert task["maxRetries"] == 0  # a task's exit code is its service's verdict


def test_the_dockerfile_copies_exactly_what_the_job_reads() -> None:
    lines = [line for line in text("Dockerfile").splitlines() if line and line[0] != "#"]
    assert lines == [
        "ARG GUARD_IMAGE",
        "FROM ${GUARD_IMAGE}",
        "COPY policies/ /guard/policies/",
        "COPY deploy/fleet/fleet.yaml /guard/deploy/fleet/fleet.yaml",
    ]
