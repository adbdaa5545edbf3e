"""``cloudbuild-fleet.yaml``: a Build Cloud Build accepts, one deploy and one guard per entry.

The file is read into Cloud Build's own ``Build`` message (an unknown or misspelled field
fails here), its substitutions are expanded as Cloud Build expands them, and every guard
step's command is parsed by the real ``deploy-guard check`` command and matched to its
entry of the fleet file it names: every entry is guarded exactly once, right after its
own deploy, in parallel with the others. The two scripts the steps run are run here too.
"""

from __future__ import annotations

import copy
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from google.cloud.devtools.cloudbuild_v1.types import Build
from google.protobuf import json_format
from ruamel.yaml import YAML

from deploy_guard.commands.check import check
from deploy_guard.policy.fleet import load_fleet, pick
from waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
CLOUDBUILD = REPO / "cloudbuild-fleet.yaml"
FLEET_DIR = REPO / "deploy" / "fleet"
GUARD_STEP = FLEET_DIR / "guard-step.sh"
VERDICT = FLEET_DIR / "verdict.sh"
BUILT_INS = {"PROJECT_ID": "acme-prod", "BUILD_ID": "b-123"}
_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def load() -> dict[str, Any]:
    doc = YAML(typ="safe", pure=True).load(CLOUDBUILD.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def substitutions(doc: dict[str, Any]) -> dict[str, str]:
    """Every value Cloud Build substitutes (defaults may name others: dynamicSubstitutions)."""
    values = dict(BUILT_INS)
    for name, default in doc["substitutions"].items():
        values[name] = expand(str(default), values)
    return values


def expand(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        assert name in values, f"no value for substitution {name}"
        return values[name]

    return _TOKEN.sub(one, text)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return load()


@pytest.fixture(scope="module")
def steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ids = [s["id"] for s in doc["steps"]]
    assert len(set(ids)) == len(ids), "step ids must be unique"
    return {s["id"]: s for s in doc["steps"]}


def guards(steps: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i: s for i, s in steps.items() if i.startswith("guard-")}


def guard_command(doc: dict[str, Any], step: dict[str, Any]) -> tuple[str, list[str]]:
    """A guard step's name (its exit code's file) and the command it runs, substituted."""
    values = substitutions(doc)
    args = [expand(str(a), values) for a in step["args"]]
    assert step["entrypoint"] == "bash"
    assert args[0] == "deploy/fleet/guard-step.sh"
    return args[1], args[2:]


def test_the_file_is_a_valid_cloud_build_build_message(doc: dict[str, Any]) -> None:
    build = json_format.ParseDict(doc, Build.pb(Build()), ignore_unknown_fields=False)
    assert build.options.dynamic_substitutions is True
    assert build.timeout.seconds >= 30 * 60


def test_a_misspelled_field_is_refused(doc: dict[str, Any]) -> None:
    broken = copy.deepcopy(doc)
    broken["steps"][1]["waitfor"] = broken["steps"][1].pop("waitFor")
    with pytest.raises(json_format.ParseError, match="waitfor"):
        json_format.ParseDict(broken, Build.pb(Build()), ignore_unknown_fields=False)


def test_every_substitution_has_a_value(doc: dict[str, Any]) -> None:
    values = substitutions(doc)
    for step in doc["steps"]:
        for arg in step.get("args", []):
            expand(str(arg), values)  # raises on a name with no value


def test_deploys_and_guards_run_in_parallel_each_guard_after_its_own_deploy(
    steps: dict[str, dict[str, Any]],
) -> None:
    assert steps["prepare"]["waitFor"] == ["-"]
    deploys = [i for i in steps if i.startswith("deploy-")]
    assert deploys, "no deploy steps"
    for deploy in deploys:
        assert steps[deploy]["waitFor"] == ["prepare"]
    found = guards(steps)
    assert sorted(s["waitFor"][0] for s in found.values()) == sorted(deploys)
    for guard_id, step in found.items():
        assert step["waitFor"] == ["deploy-" + guard_id.removeprefix("guard-")]
    assert sorted(steps["keep-reports"]["waitFor"]) == sorted(found)
    assert steps["verdict"]["waitFor"] == ["keep-reports"]


def test_prepare_validates_the_fleet_before_anything_is_deployed(
    doc: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> None:
    script = expand(steps["prepare"]["args"][1], substitutions(doc))
    assert 'deploy-guard fleet "deploy/fleet/fleet.yaml"' in script
    assert "set -euo pipefail" in script


def test_every_entry_is_deployed_and_guarded_exactly_once(
    doc: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> None:
    values = substitutions(doc)
    fleet = load_fleet(REPO / values["_FLEET"])
    guarded: list[int] = []
    for guard_id, step in guards(steps).items():
        name, words = guard_command(doc, step)
        assert words[:2] == ["deploy-guard", "check"]
        try:
            ctx = check.make_context("check", words[2:])
        except click.ClickException as exc:
            raise AssertionError(f"{guard_id}: {exc.format_message()}") from exc
        params = ctx.params
        assert params["fleet"] == values["_FLEET"]
        assert params["revision"] is None  # the service's latest: the one just deployed
        assert params["promote"] is True
        assert params["report_path"] == f"/workspace/deploy-guard/{name}.json"
        assert params["project"] == values["PROJECT_ID"]
        assert not params["policy_paths"], "the fleet file names the policies"
        index = pick(fleet, service=params["service"], region=params["region"], env={})
        guarded.append(index)
        entry = fleet.entries[index]
        deploy = [expand(str(a), values) for a in steps[step["waitFor"][0]]["args"]]
        assert deploy[:3] == ["run", "deploy", entry.service]
        assert deploy[deploy.index("--region") + 1] == entry.region
        assert "--no-traffic" in deploy
        assert deploy[deploy.index("--tag") + 1] == values["_TAG"]
    assert sorted(guarded) == list(range(len(fleet.entries)))


def test_the_verdict_reads_every_guard_s_exit_code(
    doc: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> None:
    names = [guard_command(doc, s)[0] for s in guards(steps).values()]
    args = steps["verdict"]["args"]
    assert args[0] == "deploy/fleet/verdict.sh"
    assert sorted(args[1:]) == sorted(names)


# --- the scripts the steps run ------------------------------------------------------


def test_a_guard_step_keeps_the_exit_code_and_succeeds(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(GUARD_STEP), "svc", "sh", "-c", "exit 3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert (tmp_path / "deploy-guard" / "svc.code").read_text().strip() == "3"


def test_a_guard_step_passes_a_cancelled_build_s_sigterm_on(tmp_path: Path) -> None:
    script = "trap 'echo stopping; exit 3' TERM; touch started; while :; do sleep 0.05; done"
    proc = subprocess.Popen(
        ["bash", str(GUARD_STEP), "svc", "bash", "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: (tmp_path / "started").exists(), within=10, what="the guard started")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "stopping" in out
    assert (tmp_path / "deploy-guard" / "svc.code").read_text().strip() == "3"


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ({"a": 0, "b": 0}, 0),
        ({"a": 0, "b": 1, "c": 3}, 1),
        ({"a": 2, "b": 3}, 3),
        ({"a": 1, "b": 4}, 4),
        ({"a": 1, "b": 143}, 143),
        ({"a": 0, "b": None}, 4),  # never finished
    ],
)
def test_the_verdict_is_the_code_that_needs_a_person_most(
    tmp_path: Path, codes: dict[str, int | None], expected: int
) -> None:
    (tmp_path / "deploy-guard").mkdir()
    for name, code in codes.items():
        if code is not None:
            (tmp_path / "deploy-guard" / f"{name}.code").write_text(f"{code}\n")
    done = subprocess.run(
        ["bash", str(VERDICT), *codes],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == expected, done.stdout
    for name in codes:
        assert f"deploy-guard: {name}: exit code" in done.stdout
