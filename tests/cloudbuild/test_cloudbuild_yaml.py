"""``cloudbuild.yaml`` is a build Cloud Build accepts, and it wires the guard in right.

The file is converted into Cloud Build's own ``Build`` message from the
google-cloud-build library, with the camelCase keys the YAML uses, so a misspelled
field fails here rather than in a team's first build.
"""

from __future__ import annotations

import copy
import itertools
import shlex
from pathlib import Path
from typing import Any

import pytest
from google.cloud.devtools.cloudbuild_v1.types import Build
from google.protobuf import json_format

import watch_cli

REPO_ROOT = Path(__file__).resolve().parents[2]

# Fields that Cloud Build fills in itself: a config that sets them is wrong.
OUTPUT_ONLY = {
    "build": {"id", "projectId", "status", "statusDetail", "results", "createTime",
              "startTime", "finishTime", "logUrl", "timing", "warnings", "failureInfo"},
    "step": {"timing", "pullTiming", "status", "exitCode"},
}  # fmt: skip

CHECK_FLAGS = {
    "--revision", "--service", "--region", "--project", "--policy", "--promote",
    "--dry-run", "--report", "--summary", "--timeout", "--log-settle",
}  # fmt: skip

#: `deploy-guard rollout`'s flags as the rollout design gives them (issue 11).
ROLLOUT_FLAGS = {
    "--revision", "--service", "--region", "--project", "--policy", "--steps",
    "--report", "--summary", "--timeout", "--log-settle",
}  # fmt: skip


def to_build(doc: dict[str, Any]) -> Any:
    """Parse like the Cloud Build API does; unknown or misspelled fields raise."""
    return json_format.ParseDict(doc, Build.pb(Build()), ignore_unknown_fields=False)


def shell_words(script: str) -> list[str]:
    """A script's words, with backslash-newline continuations joined."""
    return shlex.split(script.replace("\\\n", " "), comments=True)


def command(script: str, *prefix: str) -> list[str]:
    """The words of the first command in ``script`` that starts with ``prefix``."""
    words = shell_words(script.replace("\\\n", " ").replace("\n", " ; "))
    n = len(prefix)
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) == prefix:
            end = words.index(";", i) if ";" in words[i:] else len(words)
            return words[i:end]
    raise AssertionError(f"no '{' '.join(prefix)}' command in script")


def flag(words: list[str], name: str) -> str:
    assert name in words, f"{name} missing from {' '.join(words)}"
    return words[words.index(name) + 1]


# --- it is a Build -----------------------------------------------------------------


def test_the_file_is_a_valid_cloud_build_build_message(pipeline: Any) -> None:
    build = to_build(pipeline.doc)
    assert [s.id for s in build.steps] == [s["id"] for s in pipeline.steps]
    assert build.options.dynamic_substitutions is True
    # room for a 10-minute check plus the deploy, or a rollout's steps (the field is a
    # Duration: Cloud Build never substitutes it, so the file must hold enough)
    assert build.timeout.seconds >= 60 * 60


@pytest.mark.parametrize(
    ("where", "good", "bad"),
    [
        ("top", "steps", "step"),
        ("step", "waitFor", "waitfor"),
        ("step", "entrypoint", "entryPoint"),
        ("options", "dynamicSubstitutions", "dynamicSubstitution"),
        ("artifacts", "objects", "object"),
    ],
)
def test_a_misspelled_field_is_refused(pipeline: Any, where: str, good: str, bad: str) -> None:
    doc = copy.deepcopy(pipeline.doc)
    target = {
        "top": doc,
        "step": doc["steps"][-1],
        "options": doc["options"],
        "artifacts": doc["artifacts"],
    }[where]
    to_build(doc)  # the unmutated copy parses: the failure below is the misspelling's
    target[bad] = target.pop(good)
    with pytest.raises(json_format.ParseError, match=bad):
        to_build(doc)


def test_a_wrong_enum_value_is_refused(pipeline: Any) -> None:
    doc = copy.deepcopy(pipeline.doc)
    doc["options"]["logging"] = "CLOUD_LOGGING"  # the real value is CLOUD_LOGGING_ONLY
    with pytest.raises(json_format.ParseError):
        to_build(doc)


def test_no_output_only_field_is_set(pipeline: Any) -> None:
    assert not OUTPUT_ONLY["build"] & set(pipeline.doc)
    for step in pipeline.steps:
        assert not OUTPUT_ONLY["step"] & set(step), step["id"]


# --- steps run in order -------------------------------------------------------------


def test_steps_run_one_after_another_in_file_order(pipeline: Any) -> None:
    steps = pipeline.steps
    ids = [s["id"] for s in steps]
    assert len(set(ids)) == len(ids), "step ids must be unique"
    assert steps[0].get("waitFor") == ["-"]
    for before, step in itertools.pairwise(steps):
        # Exactly the previous step: no step can start early and race the deploy.
        assert step.get("waitFor") == [before["id"]], step["id"]
    assert ids == [
        "build", "push", "deploy", "read-revision", "guard", "bake", "keep-report", "verdict",
    ]  # fmt: skip


def test_the_deployed_image_is_the_one_built_and_pushed(pipeline: Any) -> None:
    build, push = pipeline.step("build")["args"], pipeline.step("push")["args"]
    assert build[:3] == ["build", "--tag", "${_IMAGE}"]
    assert push == ["push", "${_IMAGE}"]
    deploy = command(pipeline.script("deploy"), "gcloud", "run", "deploy")
    assert flag(deploy, "--image") == "${_IMAGE}"
    assert "${_IMAGE}" in pipeline.doc["images"]


def test_the_deploy_sends_no_traffic_and_tags_the_candidate(pipeline: Any) -> None:
    script = pipeline.script("deploy")
    assert "traffic=(--no-traffic)" in script
    deploy = command(script, "gcloud", "run", "deploy")
    assert flag(deploy, "--tag") == "${_TAG}"
    assert flag(deploy, "--region") == "${_REGION}"
    assert deploy[3] == "${_SERVICE}"
    # The first deploy of a service cannot use --no-traffic: the script tells the cases
    # apart by listing services, and an error there stops the step (set -e).
    assert script.lstrip().startswith("set -euo pipefail")
    assert "gcloud run services list" in script


def test_the_revision_is_read_from_the_service_not_from_the_commit(pipeline: Any) -> None:
    script = pipeline.script("read-revision")
    describe = command(script, "gcloud", "run", "services", "describe")
    assert flag(describe, "--format") == "value(status.latestCreatedRevisionName)"
    assert "> /workspace/revision" in script.replace("\\\n", " ")
    everything = " ".join(pipeline.strings_in(pipeline.doc))
    assert "REVISION_ID" not in pipeline.references(everything)


def test_the_guard_checks_the_revision_written_by_the_deploy_steps(pipeline: Any) -> None:
    step = pipeline.step("guard")
    assert step["name"] == "${_GUARD_IMAGE}"
    script = pipeline.expand(pipeline.script("guard"), pipeline.values())
    assert 'revision="$(cat /workspace/revision)"' in script
    words = command(script, "deploy-guard", "check")
    assert flag(words, "--revision") == "$revision"
    assert "--promote" in words
    assert "--dry-run" not in words
    assert flag(words, "--report") == "/workspace/deploy-guard/report.json"
    assert flag(words, "--summary") == "/workspace/deploy-guard/summary.md"
    assert flag(words, "--policy") == pipeline.values()["_POLICY"]
    unknown = {w for w in words if w.startswith("--")} - CHECK_FLAGS
    assert not unknown, f"flags deploy-guard check does not have: {unknown}"


def test_the_rollout_mode_rolls_out_the_same_revision_with_the_same_policy(
    pipeline: Any,
) -> None:
    script = pipeline.expand(pipeline.script("guard"), pipeline.values())
    check = command(script, "deploy-guard", "check")
    words = command(script, "deploy-guard", "rollout")
    same = ("--revision", "--service", "--region", "--project", "--policy", "--timeout")
    for name in (*same, "--log-settle"):
        assert flag(words, name) == flag(check, name), name
    assert flag(words, "--report") == "/workspace/deploy-guard/report.json"
    assert flag(words, "--summary") == "/workspace/deploy-guard/summary.md"
    assert "--promote" not in words  # a rollout ends at 100 % by itself
    assert "--dry-run" not in words
    unknown = {w for w in words if w.startswith("--")} - ROLLOUT_FLAGS
    assert not unknown, f"flags deploy-guard rollout does not have: {unknown}"
    # _ROLLOUT_STEPS reaches --steps through the step's env, never the script's text
    assert '"$${steps[@]}"' in pipeline.script("guard")
    assert pipeline.step("guard")["env"] == [
        "GUARD_MODE=${_GUARD_MODE}",
        "ROLLOUT_STEPS=${_ROLLOUT_STEPS}",
        "BUILD_ID=${BUILD_ID}",  # `status` names the build that holds a rollout or a tag
    ]


def test_the_default_mode_is_check_and_the_default_steps_are_the_policys(
    pipeline: Any,
) -> None:
    """Copying the file keeps today's behaviour; a rollout is asked for by name."""
    values = pipeline.values()
    assert values["_GUARD_MODE"] == "check"
    assert values["_ROLLOUT_STEPS"] == ""


@pytest.mark.fault(
    "logs",
    "entries ingested seconds after the probes end, in the Cloud Build pipeline",
    "the pipeline's check passes --log-settle 5s (5-10 s, as recommended)",
)
def test_the_check_waits_for_late_log_entries_before_its_last_logging_pass(
    pipeline: Any,
) -> None:
    """docs/cloud-build.md recommends 5 s to 10 s of --log-settle; the pipeline uses it."""
    from deploy_guard.policy.units import parse_duration

    script = pipeline.expand(pipeline.script("guard"), pipeline.values())
    for mode in ("check", "rollout"):  # a rollout's settle is before each step's last pass
        settle = flag(command(script, "deploy-guard", mode), "--log-settle")
        assert 5 <= parse_duration(settle) <= 10, settle
    guide = (REPO_ROOT / "docs" / "cloud-build.md").read_text(encoding="utf-8")
    assert "`5s` to `10s`" in guide


@pytest.mark.parametrize(
    ("step", "name"), [("guard", "check"), ("guard", "rollout"), ("bake", "watch")]
)
def test_the_guard_uses_only_flags_the_real_command_accepts(
    pipeline: Any, step: str, name: str
) -> None:
    module = pytest.importorskip(
        f"deploy_guard.commands.{name}", reason=f"deploy-guard {name} not built yet"
    )
    accepted = {opt for p in getattr(module, name).params for opt in p.opts}
    words = command(pipeline.script(step), "deploy-guard", name)
    used = {w for w in words if w.startswith("--")}
    assert used <= accepted, f"not accepted by deploy-guard {name}: {used - accepted}"


def test_the_bake_watches_the_guarded_service_with_the_same_policy(pipeline: Any) -> None:
    """The bake judges what the guard promoted, by the same policy, for _WATCH_FOR."""
    step = pipeline.step("bake")
    assert step["name"] == "${_GUARD_IMAGE}"
    script = pipeline.expand(pipeline.script("bake"), pipeline.values(_WATCH_FOR="30m"))
    check = command(
        pipeline.expand(pipeline.script("guard"), pipeline.values()), "deploy-guard", "check"
    )
    words = command(script, "deploy-guard", "watch")
    for name in ("--service", "--region", "--project", "--policy"):
        assert flag(words, name) == flag(check, name), name
    assert flag(words, "--for") == "${WATCH_FOR}"
    # its own report files: the guard's stay as they were
    assert flag(words, "--report") == "/workspace/deploy-guard/watch-report.json"
    assert flag(words, "--summary") == "/workspace/deploy-guard/watch-summary.md"
    assert "--keep-watching" not in words  # a bake ends: a fail ends it with 1
    unknown = {w for w in words if w.startswith("--")} - watch_cli.accepted()
    assert not unknown, f"flags deploy-guard watch does not have: {unknown}"
    # _WATCH_FOR reaches --for through the step's env, never the script's text
    assert step["env"] == ["WATCH_FOR=${_WATCH_FOR}"]
    assert "${_WATCH_FOR}" not in pipeline.script("bake")


def test_there_is_no_bake_unless_asked_for(pipeline: Any) -> None:
    """Copying the file keeps today's pipeline: the bake is opt-in."""
    assert pipeline.values()["_WATCH_FOR"] == ""


def test_the_build_fails_with_the_guards_exit_code_after_keeping_the_report(
    pipeline: Any,
) -> None:
    guard = pipeline.script("guard")
    assert 'echo "$$code" > /workspace/deploy-guard/exit-code' in guard
    verdict = pipeline.script("verdict")
    assert "/workspace/deploy-guard/exit-code" in verdict
    assert 'exit "$$code"' in verdict
    keep = pipeline.script("keep-report")
    assert "gcloud storage cp" in keep
    objects = pipeline.doc["artifacts"]["objects"]
    assert sorted(objects["paths"]) == [
        "/workspace/deploy-guard/report.json",
        "/workspace/deploy-guard/summary.md",
    ]
    # A failed check's report goes to the same place the artifacts of a passing one do.
    location = objects["location"]
    assert '"gs://${_REPORTS_BUCKET}/deploy-guard/${_SERVICE}/${BUILD_ID}/"' in keep
    assert location == "gs://${_REPORTS_BUCKET}/deploy-guard/${_SERVICE}/${BUILD_ID}/"


# --- substitutions -----------------------------------------------------------------


def test_every_substitution_used_is_declared_or_built_in(pipeline: Any) -> None:
    declared = set(pipeline.doc["substitutions"])
    used = set(pipeline.references(" ".join(pipeline.strings_in(pipeline.doc))))
    undeclared = used - declared - pipeline.BUILT_INS
    assert not undeclared, f"used but not declared: {undeclared}"
    assert not (declared - used), f"declared but never used: {declared - used}"


def test_user_substitutions_start_with_an_underscore(pipeline: Any) -> None:
    for name in pipeline.doc["substitutions"]:
        assert name.startswith("_"), name
        assert name == name.upper(), name
        assert name not in pipeline.BUILT_INS, f"{name} shadows a built-in"


def test_built_ins_used_are_real_and_available_to_manual_builds(pipeline: Any) -> None:
    used = set(pipeline.references(" ".join(pipeline.strings_in(pipeline.doc))))
    built_ins = {u for u in used if not u.startswith("_")}
    assert built_ins <= pipeline.BUILT_INS
    # Commit-based ones are empty for `gcloud builds submit`: the pipeline must not need them.
    assert built_ins <= {"PROJECT_ID", "BUILD_ID"}, built_ins


def test_shell_variables_are_escaped_for_cloud_build(pipeline: Any) -> None:
    # references() raises on any `$` that is neither `$$` nor a substitution, and every
    # lower-case name would be an undeclared substitution: shell variables must be `$$x`.
    for step in pipeline.steps:
        for text in pipeline.strings_in(step):
            names = pipeline.references(text)
            assert all(n == n.upper() for n in names), (step["id"], names)


def test_the_escape_check_catches_an_unescaped_shell_variable(pipeline: Any) -> None:
    with pytest.raises(pipeline.SubstitutionError):
        pipeline.references('echo "$(cat /workspace/revision)"')
    assert pipeline.references('echo "$code"') == ["code"]  # flagged as lower-case above
    assert pipeline.references('echo "$$code" ${_SERVICE}') == ["_SERVICE"]


def test_defaults_expand_to_concrete_values(pipeline: Any) -> None:
    values = pipeline.values(PROJECT_ID="acme-prod", BUILD_ID="b-1")
    assert values["_IMAGE"] == "europe-west1-docker.pkg.dev/acme-prod/cloud-run/chat-agent:b-1"
    assert values["_GUARD_IMAGE"].endswith("/deploy-guard:0.1.0")
    for name, value in values.items():
        assert "$" not in value, f"{name} did not expand: {value}"


def test_the_default_policy_is_a_shipped_policy_that_validates(pipeline: Any) -> None:
    from deploy_guard.policy.load import load_paths

    path = REPO_ROOT / pipeline.values()["_POLICY"]
    assert path.is_file(), f"_POLICY default {path} does not exist"
    (policy,) = load_paths([str(path)])
    assert pipeline.values()["_SERVICE"] in " ".join(policy.services) or "*" in policy.services
