"""``deploy/audit/``: the job, the workflow, the triggers and the roles of the audit-log check.

No Google project is reachable from here. The job manifest is held to the fields ``gcloud
run jobs replace`` accepts for a Cloud Run v1 Job (an unknown key fails, as it would in a
team's first ``replace``) and its command line is parsed by the real ``check`` command;
the workflow is run on events by :mod:`audit.workflow` and what it hands the job must read
exactly as the whole event does; the scripts run with bash against a recording ``gcloud``
on PATH (the seam where the real scripts call the real CLI).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from ruamel.yaml import YAML

from audit import workflow
from audit.samples import cloud_event, v1_replace, v2_update
from deploy_guard.commands.check import check
from deploy_guard.gcp import audit

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / "deploy" / "audit"
DOC = ROOT / "docs" / "audit-checks.md"
FILLED = {
    "PROJECT_ID": "acme-prod",
    "REGION": "europe-west1",
    "IMAGE": "europe-west1-docker.pkg.dev/acme-prod/cloud-run/deploy-guard-policies:0.1.0",
    "GUARD_SA": "deploy-guard-audit@acme-prod.iam.gserviceaccount.com",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


def job() -> dict[str, Any]:
    text = (AUDIT / "job.yaml").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    doc: dict[str, Any] = YAML(typ="safe", pure=True).load(
        PLACEHOLDER.sub(lambda m: FILLED[m.group(1)], body)
    )
    return doc


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (found,) = doc["spec"]["template"]["spec"]["template"]["spec"]["containers"]
    return dict(found)


# --- the job manifest: the fields gcloud run jobs replace takes (Cloud Run Admin v1) ------

STR, INT = "string", "integer"
#: Allowed keys (nested); a trailing "!" marks a required one. Lists hold one item schema.
JOB_SCHEMA: dict[str, Any] = {
    "apiVersion!": STR,
    "kind!": STR,
    "metadata!": {"name!": STR, "labels!": {"cloud.googleapis.com/location!": STR}},
    "spec!": {
        "template!": {
            "spec!": {
                "taskCount!": INT,
                "parallelism": INT,
                "template!": {
                    "spec!": {
                        "serviceAccountName!": STR,
                        "timeoutSeconds!": STR,  # int64: a string in the API's JSON
                        "maxRetries!": INT,
                        "containers!": [
                            {
                                "image!": STR,
                                "args!": [STR],
                                "resources": {"limits!": {"cpu!": STR, "memory!": STR}},
                            }
                        ],
                    }
                },
            }
        }
    },
}


def problems(node: Any, schema: Any, path: str = "") -> list[str]:
    where = path or "(top)"
    if isinstance(schema, list):
        if not isinstance(node, list) or not node:
            return [f"{where}: expected a non-empty list"]
        return [p for i, item in enumerate(node) for p in problems(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            return [f"{where}: expected a mapping"]
        keys = {k.rstrip("!"): k.endswith("!") for k in schema}
        found = [f"{where}: unknown key {k!r}" for k in node if k not in keys]
        found += [
            f"{where}: missing {k!r}" for k, needed in keys.items() if needed and k not in node
        ]
        for key, value in node.items():
            sub = schema.get(key, schema.get(f"{key}!"))
            if sub is not None:
                found += problems(value, sub, f"{path}.{key}".lstrip("."))
        return found
    wanted = str if schema == STR else int
    if isinstance(node, bool) or not isinstance(node, wanted):
        return [f"{where}: expected {schema}, got {node!r}"]
    return []


def test_the_job_has_exactly_the_shape_gcloud_accepts() -> None:
    doc = job()
    assert (doc["apiVersion"], doc["kind"]) == ("run.googleapis.com/v1", "Job")
    assert problems(doc, JOB_SCHEMA) == []
    assert doc["metadata"]["labels"]["cloud.googleapis.com/location"] == FILLED["REGION"]
    assert container(doc)["image"] == FILLED["IMAGE"]
    task = doc["spec"]["template"]["spec"]["template"]["spec"]
    assert task["serviceAccountName"] == FILLED["GUARD_SA"]
    # a retry would only find the revision judged already: the failed execution is the signal
    assert task["maxRetries"] == 0
    # waiting for Ready (5 min) and a policy's timeout (the shipped ones: 10 min at most)
    assert int(task["timeoutSeconds"]) >= 15 * 60
    assert doc["spec"]["template"]["spec"]["taskCount"] == 1


def _task(doc: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = doc["spec"]["template"]["spec"]["template"]["spec"]
    return task


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d["spec"]["template"]["spec"].update(taskcount=1), "unknown key 'taskcount'"),
        (lambda d: _task(d)["containers"][0].pop("args"), "missing 'args'"),
        (lambda d: d["spec"]["template"]["spec"].update(taskCount="1"), "expected integer"),
        (lambda d: _task(d)["containers"][0].update(arg=["check"]), "unknown key 'arg'"),
    ],
)
def test_the_schema_refuses_what_cloud_run_would(mutate: Any, complaint: str) -> None:
    doc = job()
    assert problems(doc, JOB_SCHEMA) == []  # the unmutated file passes: the failure is the change's
    mutate(doc)
    assert any(complaint in p for p in problems(doc, JOB_SCHEMA)), problems(doc, JOB_SCHEMA)


def test_the_header_says_how_to_apply_it_with_every_placeholder() -> None:
    text = (AUDIT / "job.yaml").read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "gcloud run jobs replace" in header
    used = set(PLACEHOLDER.findall(text.split("apiVersion:", 1)[1]))
    (listed,) = re.findall(r"envsubst '([^']*)'", header)
    assert set(PLACEHOLDER.findall(listed)) == used == {"REGION", "IMAGE", "GUARD_SA"}
    for name in used:
        assert f"export {name}=" in header or f" {name}=" in header, name


def test_the_jobs_command_line_is_one_the_check_command_accepts() -> None:
    words = [str(w) for w in container(job())["args"]]
    assert words[0] == "check"
    try:
        ctx = check.make_context("check", words[1:])  # callbacks run, as on Cloud Run
    except click.ClickException as exc:  # pragma: no cover - the failure message
        raise AssertionError(exc.format_message()) from exc
    source = ctx.params["audit_source"]
    assert source == "env:DEPLOY_GUARD_AUDIT_EVENT"
    assert ctx.params["policy_paths"] == ("/policies",)
    # the event says where the deploy was: nothing here may disagree with it
    assert not {"--project", "--region", "--service", "--revision"} & set(words)
    # the variable the job reads is the one the workflow sets
    env = workflow.job_env(cloud_event(v1_replace()))
    assert set(env) == {source.removeprefix("env:")}


def test_the_job_holds_no_secret_and_no_event() -> None:
    text = (AUDIT / "job.yaml").read_text(encoding="utf-8")
    assert not re.search(r"ya29\.|-----BEGIN|Bearer\s+\S|hooks\.slack\.com", text)
    assert "env" not in container(job())  # the event arrives only as the execution's override


# --- the workflow --------------------------------------------------------------------------


def test_the_workflow_runs_the_job_by_the_connector_with_the_event() -> None:
    call = workflow.run(
        cloud_event(v1_replace()),
        {"GOOGLE_CLOUD_PROJECT_ID": "acme-prod", "JOB_NAME": "deploy-guard-audit",
         "JOB_REGION": "europe-west1"},
    )  # fmt: skip
    assert call["call"] == "googleapis.run.v1.namespaces.jobs.run"
    assert call["args"]["name"] == f"namespaces/acme-prod/jobs/{job()['metadata']['name']}"
    assert call["args"]["location"] == "europe-west1"
    assert workflow.load()["main"]["params"] == ["event"]
    assert "done" in workflow.steps()


@pytest.mark.parametrize(
    "entry",
    [
        v1_replace(),
        v1_replace(named="chat-agent-00008-new", annotations={"deploy-guard.dev/x": "1"}),
        v1_replace(status={"code": 10, "message": "Conflict"}),
        v2_update(),
        v2_update(mask="traffic,annotations", annotations={"deploy-guard.dev/rejected": "a"}),
        v2_update(mask="traffic"),
        v2_update(operation={"id": "op", "producer": "run.googleapis.com", "last": True}),
    ],
    ids=["v1", "v1-named", "v1-failed", "v2", "v2-own", "v2-traffic", "v2-operation-end"],
)
def test_the_trimmed_event_reads_exactly_as_the_whole_one(entry: dict[str, Any]) -> None:
    """Whatever the workflow leaves out, the guard never needed: same write, same decision."""
    trimmed = workflow.trimmed_event(cloud_event(entry))
    assert audit.audit_writes(trimmed) == audit.audit_writes(json.dumps(entry))
    assert "ya29" not in trimmed  # the service's environment is not copied along


def test_a_service_with_a_big_template_still_fits_an_environment_variable() -> None:
    """An env var holds at most 32 KiB; Workflows arguments 512 KB (both documented)."""
    entry = v1_replace()
    spec = entry["protoPayload"]["request"]["service"]["spec"]["template"]["spec"]
    spec["containers"][0]["env"] = [{"name": f"V{i}", "value": "x" * 60} for i in range(900)]
    entry["protoPayload"]["response"]["spec"] = copy.deepcopy(
        entry["protoPayload"]["request"]["service"]["spec"]
    )
    assert len(json.dumps(cloud_event(entry))) > 100_000
    assert len(workflow.trimmed_event(cloud_event(entry)).encode()) < 4096


def test_every_expression_of_the_workflow_is_one_the_tests_evaluate() -> None:
    """A new expression form must be taught to tests/audit/workflow.py before it ships."""
    scope: dict[str, Any] = {"event": cloud_event(v2_update())}
    for name, body in workflow.steps().items():
        for assignment in body.get("assign", []):
            for var, value in assignment.items():
                scope[var] = workflow.evaluate(value, scope, workflow.ENV)
        if name == "run_job":
            scope["execution"] = {"metadata": {"name": "deploy-guard-audit-abc12"}}
        if "return" in body:
            assert workflow.evaluate(body["return"], scope, {}) == "deploy-guard-audit-abc12"
    with pytest.raises(workflow.Unsupported):
        workflow.evaluate("${text.split(x, ',')}", {"x": "a"}, {})


# --- the scripts -----------------------------------------------------------------------------

FAKE_GCLOUD = """\
import json, os, sys
args = sys.argv[1:]
record = list(args)
if args[:3] == ["run", "jobs", "replace"]:
    record.append(open(args[3]).read())
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
if args[:3] == ["run", "services", "describe"]:
    sys.stdout.write({"chat-agent": "chat-runtime@acme-prod.iam.gserviceaccount.com\\n"}
                     .get(args[3], ""))
elif args[:2] == ["projects", "describe"]:
    sys.stdout.write("123456789\\n")
elif args[:3] == ["iam", "service-accounts", "describe"]:
    sys.exit(1)
elif args[:3] == ["eventarc", "triggers", "describe"]:
    sys.exit(0 if args[3] in os.environ.get("FAKE_TRIGGERS", "").split() else 1)
elif args[:3] == ["run", "jobs", "describe"]:
    sys.exit(0 if os.environ.get("FAKE_JOB") else 1)
"""


def run_script(tmp_path: Path, name: str, **env: str) -> tuple[int, str, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n{FAKE_GCLOUD}")
    gcloud.chmod(0o755)
    log = tmp_path / f"{name}.jsonl"
    result = subprocess.run(
        ["bash", str(AUDIT / name)],
        env={
            "PATH": os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]),
            "FAKE_GCLOUD_LOG": str(log),
            "TMPDIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result.returncode, result.stderr, calls


def option(call: list[str], name: str) -> list[str]:
    return [call[i + 1] for i, word in enumerate(call) if word == name]


SETUP_ENV = {k: FILLED[k] for k in ("PROJECT_ID", "REGION", "IMAGE")}


def test_setup_creates_the_job_the_workflow_and_one_trigger_per_deploy_method(
    tmp_path: Path,
) -> None:
    code, err, calls = run_script(tmp_path, "setup.sh", **SETUP_ENV)
    assert code == 0, err
    (replace,) = [c for c in calls if c[:3] == ["run", "jobs", "replace"]]
    assert (
        replace[-1].split("apiVersion:", 1)[1]
        == (PLACEHOLDER.sub(lambda m: FILLED[m.group(1)], (AUDIT / "job.yaml").read_text())).split(
            "apiVersion:", 1
        )[1]
    )  # every placeholder filled, nothing else touched
    (deploy,) = [c for c in calls if c[:2] == ["workflows", "deploy"]]
    assert deploy[2] == "deploy-guard-audit"
    assert option(deploy, "--source") == [str(AUDIT / "workflow.yaml")]
    assert option(deploy, "--set-env-vars") == [
        f"JOB_NAME={job()['metadata']['name']},JOB_REGION=europe-west1"
    ]
    creates = [c for c in calls if c[:3] == ["eventarc", "triggers", "create"]]
    methods = set()
    for create in creates:
        filters = option(create, "--event-filters")
        assert filters[:2] == ["type=google.cloud.audit.log.v1.written",
                               "serviceName=run.googleapis.com"]  # fmt: skip
        methods.add(filters[2].removeprefix("methodName="))
        assert option(create, "--destination-workflow") == ["deploy-guard-audit"]
        assert option(create, "--location") == ["europe-west1"]
        assert option(create, "--service-account") == [
            "deploy-guard-audit-trigger@acme-prod.iam.gserviceaccount.com"
        ]
    assert methods == {
        "google.cloud.run.v1.Services.CreateService",
        "google.cloud.run.v1.Services.ReplaceService",
        "google.cloud.run.v2.Services.CreateService",
        "google.cloud.run.v2.Services.UpdateService",
    }
    # every method a trigger listens to is one the guard checks
    for method in methods:
        write = audit.AuditWrite(method=method, api_service="run.googleapis.com")
        assert audit.decide(write) == audit.CHECK


def test_setup_keeps_the_triggers_that_are_there(tmp_path: Path) -> None:
    code, err, calls = run_script(
        tmp_path,
        "setup.sh",
        FAKE_TRIGGERS="deploy-guard-run-v1-replace deploy-guard-run-v2-update",
        **SETUP_ENV,
    )
    assert code == 0, err
    created = {c[3] for c in calls if c[:3] == ["eventarc", "triggers", "create"]}
    assert created == {"deploy-guard-run-v1-create", "deploy-guard-run-v2-create"}


def grants(calls: list[list[str]]) -> set[tuple[str, str, str, str]]:
    """(what, resource, member, role) of every add-iam-policy-binding call."""
    found = set()
    for call in calls:
        if "add-iam-policy-binding" in call:
            at = call.index("add-iam-policy-binding")
            member = option(call, "--member")[0].split("@")[0].removeprefix("serviceAccount:")
            found.add((" ".join(call[:at]), call[at + 1], member, option(call, "--role")[0]))
    return found


def test_roles_give_each_identity_the_least_it_needs(tmp_path: Path) -> None:
    code, err, calls = run_script(
        tmp_path, "roles.sh", PROJECT_ID="acme-prod", REGION="europe-west1",
        SERVICES="chat-agent search-api", FAKE_JOB="1",
    )  # fmt: skip
    assert code == 0, err
    trigger, flow, guard = (
        "deploy-guard-audit-trigger",
        "deploy-guard-audit-workflow",
        ("deploy-guard-audit"),
    )
    assert grants(calls) == {
        ("projects", "acme-prod", trigger, "roles/eventarc.eventReceiver"),
        ("projects", "acme-prod", trigger, "roles/workflows.invoker"),
        ("run jobs", "deploy-guard-audit", flow, "roles/run.jobsExecutorWithOverrides"),
        ("projects", "acme-prod", flow, "roles/run.viewer"),
        ("projects", "acme-prod", guard, "roles/logging.viewer"),
        ("projects", "acme-prod", guard, "roles/monitoring.viewer"),
        ("run services", "chat-agent", guard, "roles/run.developer"),
        ("run services", "search-api", guard, "roles/run.developer"),
        ("iam service-accounts", "chat-runtime@acme-prod.iam.gserviceaccount.com", guard,
         "roles/iam.serviceAccountUser"),
        ("iam service-accounts", "123456789-compute@developer.gserviceaccount.com", guard,
         "roles/iam.serviceAccountUser"),
    }  # fmt: skip
    created = [c[3] for c in calls if c[:3] == ["iam", "service-accounts", "create"]]
    assert created == ["deploy-guard-audit", "deploy-guard-audit-workflow", trigger]


def test_roles_add_invoker_and_deployer_only_when_asked_and_say_when_the_job_is_missing(
    tmp_path: Path,
) -> None:
    code, err, calls = run_script(
        tmp_path, "roles.sh", PROJECT_ID="acme-prod", REGION="europe-west1",
        SERVICES="chat-agent", PRIVATE="1", DEPLOYER="user:you@example.com",
    )  # fmt: skip
    assert code == 0, err
    assert "job deploy-guard-audit not found yet" in err
    found = grants(calls)
    assert ("run services", "chat-agent", "deploy-guard-audit", "roles/run.invoker") in found
    assert not any(role == "roles/run.jobsExecutorWithOverrides" for *_, role in found)
    deployer = [c for c in calls if "user:you@example.com" in c]
    assert len(deployer) == 2  # act as the guard's and the workflow's accounts


def test_no_broad_role_and_every_role_is_explained() -> None:
    # the script and the guard grants it sources (deploy/guard-roles.sh)
    text = (AUDIT / "roles.sh").read_text(encoding="utf-8") + (
        AUDIT.parent / "guard-roles.sh"
    ).read_text(encoding="utf-8")
    roles = set(re.findall(r"--role\s+(\S+)", text))
    assert roles
    assert not roles & {"roles/owner", "roles/editor", "roles/run.admin", "roles/viewer"}
    doc = DOC.read_text(encoding="utf-8")
    for role in roles:
        assert role in doc, role
    for script in ("roles.sh", "setup.sh"):
        assert subprocess.run(["bash", "-n", str(AUDIT / script)], check=False).returncode == 0


def test_the_folder_holds_what_the_docs_describe() -> None:
    assert {p.name for p in AUDIT.iterdir()} == {
        "job.yaml", "workflow.yaml", "setup.sh", "roles.sh"
    }  # fmt: skip
    doc = DOC.read_text(encoding="utf-8")
    for name in ("job.yaml", "workflow.yaml", "setup.sh", "roles.sh"):
        assert f"deploy/audit/{name}" in doc, name
