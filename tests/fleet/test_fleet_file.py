"""Fleet files: validated completely, problems at their place; each task finds its entry.

Nothing here reaches an API: a broken fleet file, a task index beyond it or a job whose
task count differs is exit 2 before any call, with the report written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.errors import ConfigError, PolicyError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.policy.fleet import Fleet, load_fleet, pick
from fleets import FLEET_POLICY

GOOD = """\
version: 1
log_read_quota: 120/min
region: europe-west1
services:
  - service: svc-chat
    policy: policies/fleet-chat.yaml
  - service: svc-hello
    policy: [policies/fleet-chat.yaml]
  - service: svc-hello
    region: us-central1
    project: other-project
    policy: policies
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fleet-chat.yaml").write_text(FLEET_POLICY.read_text())
    return tmp_path


def write(folder: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_fleet(path)
    return [str(p) for p in caught.value.problems]


# --- loading -------------------------------------------------------------------------


def test_a_valid_file_loads_with_paths_relative_to_it(folder: Path) -> None:
    fleet = load_fleet(write(folder, GOOD))
    assert fleet.log_read_quota == 120
    assert [(e.service, e.region, e.project) for e in fleet.entries] == [
        ("svc-chat", "europe-west1", None),
        ("svc-hello", "europe-west1", None),
        ("svc-hello", "us-central1", "other-project"),
    ]
    chat = fleet.entries[0]
    assert chat.policy_paths == (str(folder / "policies" / "fleet-chat.yaml"),)
    assert [p.name for p in chat.policies] == ["fleet-chat"]
    assert chat.line == 5


def test_the_quota_defaults_to_the_lower_value_google_reported(folder: Path) -> None:
    text = GOOD.replace("log_read_quota: 120/min\n", "")
    assert load_fleet(write(folder, text)).log_read_quota == 60


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("services:", "servics:"), "fleet.yaml:4:1: servics: unknown key (allowed: version, "),
        (("    policy: policies\n", "    policy: policies\n    tag: x\n"),
         "fleet.yaml:13:5: services[2].tag: unknown key (allowed: service, policy, project, "
         "region)"),
        (("version: 1", "version: 2"), "fleet.yaml:1:10: version: version: 1 is the only"),
        (("120/min", "lots"), "fleet.yaml:2:17: log_read_quota: 'lots' is not a rate"),
        (("svc-chat", "Svc_Chat"), 'services[0].service: "Svc_Chat" is not a Cloud Run service'),
        (("us-central1", "moon"), 'services[2].region: "moon" is not a region'),
        (("policy: policies/fleet-chat.yaml", "policy: policies/nope.yaml"),
         "fleet.yaml:6:13: services[0].policy: no such file or folder: "),
        (("policy: [policies/fleet-chat.yaml]", "policy: []"),
         "services[1].policy: name the policy file or folder"),
        (("    region: us-central1\n    project: other-project\n", ""),
         "fleet.yaml:9:5: services[2]: service svc-hello (europe-west1) is listed twice "
         "(first at line 7): two guards on one service race to roll it back"),
        (("  - service: svc-chat\n", "  - serv: svc-chat\n"),
         "services[0]: missing service: the Cloud Run service this entry checks"),
    ],
)  # fmt: skip
def test_each_problem_is_reported_at_its_place(
    folder: Path, change: tuple[str, str], expected: str
) -> None:
    found = problems(write(folder, GOOD.replace(*change, 1)))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once(folder: Path) -> None:
    text = GOOD.replace("version: 1", "version: 3").replace("svc-chat", "SVC")
    text = text.replace("    policy: policies\n", "    policy: nowhere\n")
    found = problems(write(folder, text))
    assert len(found) == 3, found
    assert all(p.startswith(str(folder / "fleet.yaml") + ":") for p in found)


def test_a_broken_policy_file_is_reported_in_its_own_lines(folder: Path) -> None:
    (folder / "policies" / "fleet-chat.yaml").write_text(
        FLEET_POLICY.read_text().replace("max_count: 0", "max_count: -1", 1)
    )
    found = problems(write(folder, GOOD))
    assert any(p.startswith(str(folder / "policies" / "fleet-chat.yaml") + ":") for p in found)


def test_a_policy_that_does_not_apply_to_its_service_is_refused(folder: Path) -> None:
    found = problems(write(folder, GOOD.replace("svc-chat", "chat-agent")))
    assert any(
        "services[0].policy: no policy there applies to service chat-agent (their services: "
        "fleet-chat: svc-*)" in p
        for p in found
    ), found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "a fleet file holds one mapping"),
        ("- a\n- b\n", "a fleet file holds one mapping"),
        ("version: 1\nservices: [\n", "invalid YAML"),
        ("version: 1\nservices: []\n", "services: list the services"),
        ("version: 1\nservices: [svc-a]\n", "services[0]: an entry is a mapping"),
        ("version: !!python/name:os.system 1\nservices: []\n", "YAML tags"),
    ],
)
def test_what_is_not_a_fleet_file_says_so(folder: Path, text: str, expected: str) -> None:
    found = problems(write(folder, text))
    assert any(expected in p for p in found), found


def test_a_missing_file_says_so(folder: Path) -> None:
    found = problems(folder / "absent.yaml")
    assert any("cannot read the fleet file" in p for p in found), found


# --- which entry a guard checks ------------------------------------------------------


@pytest.fixture
def fleet(folder: Path) -> Fleet:
    return load_fleet(write(folder, GOOD))


def test_a_task_checks_the_entry_at_its_index(fleet: Fleet) -> None:
    env = {"CLOUD_RUN_TASK_INDEX": "2", "CLOUD_RUN_TASK_COUNT": "3"}
    assert pick(fleet, env=env) == 2


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "3"}, "CLOUD_RUN_TASK_INDEX=3"),
        ({"CLOUD_RUN_TASK_INDEX": "0", "CLOUD_RUN_TASK_COUNT": "4"},
         "CLOUD_RUN_TASK_COUNT=4 but"),
        ({"CLOUD_RUN_TASK_INDEX": "x"}, "is not a number"),
        ({}, "lists 3 services: one guard checks one"),
    ],
)  # fmt: skip
def test_a_task_that_has_no_entry_of_its_own_is_refused(
    fleet: Fleet, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        pick(fleet, env=env)


def test_service_and_region_name_an_entry(fleet: Fleet) -> None:
    assert pick(fleet, service="svc-chat", env={}) == 0
    assert pick(fleet, service="svc-hello", region="us-central1", env={}) == 2
    with pytest.raises(ConfigError, match=r"more than once .* add --region"):
        pick(fleet, service="svc-hello", env={})
    with pytest.raises(ConfigError, match="not in"):
        pick(fleet, service="svc-nope", env={})
    with pytest.raises(ConfigError, match="in europe-west1, us-central1, not asia-east1"):
        pick(fleet, service="svc-hello", region="asia-east1", env={})
    with pytest.raises(ConfigError, match="pass one of them"):
        pick(fleet, service="svc-chat", env={"CLOUD_RUN_TASK_INDEX": "1"})
    # one entry, but --region says elsewhere: not silently checked in the file's region
    assert pick(fleet, service="svc-chat", region="europe-west1", env={}) == 0
    with pytest.raises(ConfigError, match="in europe-west1, not us-east1: drop --region"):
        pick(fleet, service="svc-chat", region="us-east1", env={})


def test_the_budget_is_shared_by_the_entries_of_one_project(fleet: Fleet) -> None:
    budget = fleet.budget(1, "main-project")
    assert (budget.guards, budget.index) == (2, 1)  # entry 2 is in another project
    assert (fleet.budget(2, "main-project").guards, fleet.budget(2, None).index) == (1, 0)


# --- on the command line -------------------------------------------------------------


def run(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    report = tmp_path / "report.json"
    result = CliRunner().invoke(cli, [*args, "--report", str(report)], env=env)
    return result, (json.loads(report.read_text()) if report.exists() else {})


@pytest.mark.parametrize(
    ("extra", "env", "expected"),
    [
        ([], {"CLOUD_RUN_TASK_INDEX": "1", "CLOUD_RUN_TASK_COUNT": "4"}, "TASK_COUNT=4 but"),
        ([], {"CLOUD_RUN_TASK_INDEX": "5"}, "CLOUD_RUN_TASK_INDEX=5 but"),
        (["--policy", "x.yaml"], {"CLOUD_RUN_TASK_INDEX": "0"}, "--policy and --fleet"),
    ],
)
def test_check_refuses_a_task_without_an_entry_before_any_call(
    folder: Path, extra: list[str], env: dict[str, str], expected: str
) -> None:
    path = write(folder, GOOD)
    env = {"GOOGLE_CLOUD_PROJECT": "p", "CLOUDSDK_RUN_REGION": "europe-west1", **env}
    result, report = run(["check", "--fleet", str(path), *extra], env, folder)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert expected in result.output
    assert report["verdict"] == "error"
    assert report["exit_code"] == ExitCode.USAGE


def test_check_prints_a_broken_fleet_file_compiler_style(folder: Path) -> None:
    path = write(folder, GOOD.replace("svc-chat", "Svc"))
    result, report = run(["check", "--fleet", str(path)], {"CLOUD_RUN_TASK_INDEX": "0"}, folder)
    assert result.exit_code == ExitCode.USAGE
    assert f"{path}:5:14: services[0].service:" in result.output
    assert report["exit_code"] == ExitCode.USAGE


def test_check_without_revision_or_fleet_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["check", "--service", "svc-chat"])
    assert result.exit_code == ExitCode.USAGE
    assert "missing --revision" in result.output


def test_watch_takes_one_service_of_a_fleet_at_most(folder: Path) -> None:
    path = write(folder, GOOD)
    args = ["watch", "--fleet", str(path), "--service", "a", "--service", "b"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ExitCode.USAGE
    assert "--fleet lists the services" in result.output


def test_fleet_command_shows_the_plan(folder: Path) -> None:
    path = write(folder, GOOD)
    result = CliRunner().invoke(cli, ["fleet", str(path), "--project", "main-project"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: 3 services, valid"
    assert "main-project: 2 guards share 60/min: one read in each 1 s slot, each guard at " \
        "most once every 2 s" in result.output  # fmt: skip
    assert "other-project: 1 guard share 60/min" in result.output
    assert "taskCount 3 (CLOUD_RUN_TASK_INDEX 0-2)" in result.output


def test_fleet_command_exits_2_with_every_problem(folder: Path) -> None:
    path = write(folder, GOOD.replace("version: 1", "version: 9").replace("svc-chat", "X"))
    result = CliRunner().invoke(cli, ["fleet", str(path)])
    assert result.exit_code == ExitCode.USAGE
    assert result.output.count(f"{path}:") == 2
