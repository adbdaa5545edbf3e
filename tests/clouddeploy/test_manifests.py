"""``deploy/clouddeploy.yaml`` is what ``gcloud deploy apply`` accepts, and guards every phase.

Each document is parsed strictly into its ``google.cloud.deploy_v1`` message
(``tests/clouddeploy_manifest.py``: an unknown, misspelled, snake_case or output-only field
fails, so does a required one left out), then held to what the guard needs of the pipeline:
a Cloud Run canary whose percentages climb under 100 with Cloud Deploy writing the traffic,
a verify job in every phase of every stage, targets and fleet children that exist, a verify
job that runs as an account that cannot deploy, and automations that select real targets,
name real phases and jobs, and roll back every phase whose verify job can fail. The verify
container's command line (skaffold.yaml) is parsed by the real ``deploy-guard check``.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import click
import pytest
from google.protobuf import duration_pb2
from ruamel.yaml import YAML

from clouddeploy_manifest import (
    PLACEHOLDER,
    PLACEHOLDERS,
    REPO,
    RESOURCE_ID,
    SKAFFOLD,
    Fleet,
    ManifestError,
    body,
    documents,
    header,
    parse,
)

#: Cloud Deploy's execution timeout: "between 10m and 24h", 1h when unset (ExecutionConfig).
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 10 * 60, 24 * 3600


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet.load()


def _named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


# --- the file and the strict parse ------------------------------------------------------


def test_the_header_says_how_to_apply_it_with_every_placeholder_filled() -> None:
    text = header()
    assert "gcloud deploy apply --file=" in text
    used = set(PLACEHOLDER.findall(body()))
    assert used == set(PLACEHOLDERS), "a placeholder the tests do not fill, or one unused"
    (names,) = re.findall(r"envsubst '([^']*)'", text)
    assert set(PLACEHOLDER.findall(names)) == used
    for placeholder in used:
        assert f"{placeholder}=" in text, f"the header does not show how to set {placeholder}"


@pytest.mark.parametrize(
    ("kind", "name"),
    [(d["kind"], d["metadata"]["name"]) for d in documents()],
)
def test_every_document_parses_strictly_into_its_message(kind: str, name: str) -> None:
    message = parse(_named(kind, name))
    assert type(message).__name__ == kind
    assert message.name.endswith(name.rsplit("/", 1)[-1])


def test_the_file_holds_one_pipeline_its_targets_and_its_automations(fleet: Fleet) -> None:
    kinds = [d["kind"] for d in documents()]
    assert kinds.count("DeliveryPipeline") == 1
    assert kinds.count("Target") == len(fleet.targets) >= 2
    assert kinds.count("Automation") == len(fleet.automations) >= 1
    names = [(d["kind"], d["metadata"]["name"]) for d in documents()]
    assert len(set(names)) == len(names), "gcloud refuses a file that names a resource twice"


def _misspell(key: str, wrong: str, node: dict[str, Any]) -> None:
    node[wrong] = node.pop(key)


# Each mutation is one a hand could make; each would fail `apply` or be refused by the API.
MUTATIONS = [
    ("DeliveryPipeline", "chat-agent", "automaticTraficControl",
     lambda d: _misspell("automaticTrafficControl", "automaticTraficControl",
                         d["serialPipeline"]["stages"][1]["strategy"]["canary"]["runtimeConfig"]
                         ["cloudRun"])),
    ("DeliveryPipeline", "chat-agent", "percentage",
     lambda d: _misspell("percentages", "percentage",
                         d["serialPipeline"]["stages"][1]["strategy"]["canary"]
                         ["canaryDeployment"])),
    ("DeliveryPipeline", "chat-agent", "target_id",  # ParseDict's snake_case; not gcloud's
     lambda d: _misspell("targetId", "target_id", d["serialPipeline"]["stages"][0])),
    ("DeliveryPipeline", "chat-agent", "label",
     lambda d: _misspell("labels", "label", d["metadata"])),
    ("Target", "staging", "locaton",
     lambda d: _misspell("location", "locaton", d["run"])),
    ("Target", "staging", "output only",
     lambda d: d.update(uid="0000")),
    ("Target", "prod", "targetID",
     lambda d: _misspell("targetIds", "targetID", d["multiTarget"])),
    ("Automation", "chat-agent/rollback-on-failed-verify", "repairPhase",
     lambda d: _misspell("repairPhases", "repairPhase", d["rules"][0]["repairRolloutRule"])),
    ("Automation", "chat-agent/rollback-on-failed-verify", "missing required serviceAccount",
     lambda d: d.pop("serviceAccount")),
    ("Automation", "chat-agent/rollback-on-failed-verify", "rollbak",
     lambda d: _misspell("rollback", "rollbak",
                         d["rules"][0]["repairRolloutRule"]["repairPhases"][0])),
    ("Automation", "chat-agent/advance-verified-canary", "minutes",
     lambda d: d["rules"][0]["advanceRolloutRule"].update(wait="90s")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "name", "complaint", "mutate"), MUTATIONS, ids=[m[2] for m in MUTATIONS]
)
def test_a_misspelled_or_unknown_field_is_rejected(
    kind: str, name: str, complaint: str, mutate: Any
) -> None:
    doc = copy.deepcopy(_named(kind, name))
    parse(doc)  # the file as it is passes: the failure below is the mutation's
    mutate(doc)
    with pytest.raises(ManifestError, match=re.escape(complaint)):
        parse(doc)


def test_ids_are_ones_cloud_deploy_accepts(fleet: Fleet) -> None:
    ids = [fleet.pipeline_id, *fleet.targets]
    for automation in fleet.automations.values():
        ids.append(automation.name.rsplit("/", 1)[-1])
        ids += [_rule(rule)[1].id for rule in automation.rules]
    for id_ in ids:
        assert RESOURCE_ID.match(id_), id_
    rule_ids = [_rule(r)[1].id for a in fleet.automations.values() for r in a.rules]
    assert len(set(rule_ids)) == len(rule_ids)


# --- the pipeline ----------------------------------------------------------------------


def _verifies(stage: Any) -> bool:
    strategy = stage.strategy
    if "canary" in strategy:
        return bool(strategy.canary.canary_deployment.verify)
    return bool(strategy.standard.verify)


def test_every_stage_targets_a_target_of_the_file_and_verifies(fleet: Fleet) -> None:
    stages = list(fleet.pipeline.serial_pipeline.stages)
    assert [s.target_id for s in stages] == ["staging", "prod"]
    for stage in stages:
        assert stage.target_id in fleet.targets, f"stage {stage.target_id}: no such target"
        assert _verifies(stage), f"stage {stage.target_id} never runs deploy-guard"


def test_prod_is_a_cloud_run_canary_whose_traffic_cloud_deploy_writes(fleet: Fleet) -> None:
    canaries = [s for s in fleet.pipeline.serial_pipeline.stages if "canary" in s.strategy]
    assert canaries, "no canary stage"
    for stage in canaries:
        canary = stage.strategy.canary
        # the automated canary (not customCanaryDeployment, whose phases we could not name)
        assert "canary_deployment" in canary
        assert "custom_canary_deployment" not in canary
        assert canary.runtime_config.cloud_run.automatic_traffic_control is True
        steps = list(canary.canary_deployment.percentages)
        assert steps == sorted(set(steps)), f"percentages must climb: {steps}"
        assert all(0 < p < 100 for p in steps), steps
        assert canary.canary_deployment.verify is True
    assert list(canaries[-1].strategy.canary.canary_deployment.percentages) == [10, 50]


def test_each_phase_of_each_target_runs_the_verify_job(fleet: Fleet) -> None:
    for target_id, target in fleet.targets.items():
        if "multi_target" in target:
            continue  # its children run the jobs
        phases = fleet.phases(target_id)
        assert phases[-1].id == "stable"
        for phase in phases:
            assert "verify" in phase.jobs, f"{target_id} {phase.id} runs no verify job"


def test_the_canary_tags_give_the_guard_tag_urls(fleet: Fleet) -> None:
    cloud_run = fleet.pipeline.serial_pipeline.stages[1].strategy.canary.runtime_config.cloud_run
    assert list(cloud_run.canary_revision_tags) == ["canary"]
    assert list(cloud_run.prior_revision_tags) == ["prior"]


# --- the targets -----------------------------------------------------------------------


def _cloud_run_targets(fleet: Fleet) -> dict[str, Any]:
    return {k: t for k, t in fleet.targets.items() if "run" in t}


def test_every_target_is_cloud_run_or_a_fleet_of_them(fleet: Fleet) -> None:
    for target_id, target in fleet.targets.items():
        assert ("run" in target) != ("multi_target" in target), target_id
    for target_id, target in _cloud_run_targets(fleet).items():
        where = re.fullmatch(r"projects/([^/]+)/locations/[a-z]+-[a-z]+[0-9]+", target.run.location)
        assert where, f"{target_id}: {target.run.location}"
        assert where.group(1) == PLACEHOLDERS["PROJECT_ID"], target_id


def test_the_fleet_is_a_multi_target_of_existing_cloud_run_children(fleet: Fleet) -> None:
    (prod,) = [t for t in fleet.targets.values() if "multi_target" in t]
    children = list(prod.multi_target.target_ids)
    assert len(children) >= 2
    assert len(set(children)) == len(children)
    stage_targets = {s.target_id for s in fleet.pipeline.serial_pipeline.stages}
    regions = set()
    for child in children:
        assert child in fleet.targets, f"multi-target child {child} is not in the file"
        assert "run" in fleet.targets[child], f"{child} must be a Cloud Run target"
        assert child not in stage_targets, f"{child} is a fleet child and a stage of its own"
        regions.add(fleet.targets[child].run.location)
    assert len(regions) == len(children), "two children deploy to the same region"
    # every target the file defines is deployed to: by a stage, or as a child
    assert set(fleet.targets) == stage_targets | set(children)


def _configs(target: Any, usage: str) -> list[Any]:
    return [c for c in target.execution_configs if usage in {u.name for u in c.usages}]


def test_verify_runs_as_the_guard_which_cannot_deploy(fleet: Fleet) -> None:
    for target_id, target in _cloud_run_targets(fleet).items():
        (verify,) = _configs(target, "VERIFY")
        (deploy,) = _configs(target, "DEPLOY")
        assert verify.service_account == PLACEHOLDERS["GUARD_SA"], target_id
        assert deploy.service_account == PLACEHOLDERS["DEPLOYER_SA"], target_id
        assert _configs(target, "RENDER") == [deploy], target_id
        timeout = duration_pb2.Duration()
        timeout.FromTimedelta(verify.execution_timeout)
        assert MIN_TIMEOUT_S <= timeout.seconds <= MAX_TIMEOUT_S, target_id


# --- the automations -------------------------------------------------------------------


RULE_KINDS = (
    "repair_rollout_rule",
    "advance_rollout_rule",
    "promote_release_rule",
    "timed_promote_release_rule",
)


def _rule(rule: Any) -> tuple[str, Any]:
    (kind,) = [k for k in RULE_KINDS if k in rule]
    return kind, getattr(rule, kind)


def _selected(fleet: Fleet, automation: Any) -> list[str]:
    ids = [t.id for t in automation.selector.targets]
    assert ids, f"{automation.name} selects nothing"
    for id_ in ids:
        assert id_ in fleet.targets, f"{automation.name} selects {id_}, not a target here"
    return ids


def test_automations_belong_to_the_pipeline_and_act_as_the_automation_account(
    fleet: Fleet,
) -> None:
    for name, automation in fleet.automations.items():
        assert name.split("/")[0] == fleet.pipeline_id
        assert automation.service_account == PLACEHOLDERS["AUTOMATION_SA"]
        assert not automation.suspended
        assert len(automation.rules) == 1, "one rule per automation, each selecting its own"


def test_rules_name_phases_and_jobs_the_selected_targets_have(fleet: Fleet) -> None:
    for automation in fleet.automations.values():
        targets = _selected(fleet, automation)
        for rule in automation.rules:
            kind, body_ = _rule(rule)
            for target_id in targets:
                phases = {p.id: p for p in fleet.phases(target_id)}
                if kind == "repair_rollout_rule":
                    named = set(body_.phases)
                    assert named & set(phases), f"{body_.id}: no phase of {target_id}"
                    assert named <= {p.id for t in targets for p in fleet.phases(t)}
                    jobs = {j for p in phases.values() for j in p.jobs}
                    assert set(body_.jobs) <= jobs, f"{body_.id}: jobs {list(body_.jobs)}"
                if kind == "advance_rollout_rule":
                    assert set(body_.source_phases) <= set(phases), body_.id
                    assert "stable" not in body_.source_phases, "nothing comes after stable"
                if kind == "promote_release_rule":
                    stages = [s.target_id for s in fleet.pipeline.serial_pipeline.stages]
                    assert target_id in stages[:-1], f"{body_.id}: nowhere to promote to"
                    assert body_.destination_target_id in {"@next", *stages[1:]}


def test_a_failed_verify_job_rolls_back_every_phase_of_every_target(fleet: Fleet) -> None:
    """The repair rule covers each (target, phase) whose verify job can fail, and ends in a
    rollback: no phase where deploy-guard's exit 1 leaves the candidate serving."""
    covered: set[tuple[str, str]] = set()
    for automation in fleet.automations.values():
        for rule in automation.rules:
            kind, repair = _rule(rule)
            if kind != "repair_rollout_rule":
                continue
            assert "verify" in repair.jobs or not repair.jobs
            (*retries, last) = list(repair.repair_phases)
            assert "rollback" in last, f"{repair.id} never rolls back"
            assert not retries, "a fail verdict is not flaky: no retry before the rollback"
            # an empty destination phase: the rollback rollout starts in stable (100 %)
            assert last.rollback.destination_phase == ""
            for target_id in _selected(fleet, automation):
                for phase in fleet.phases(target_id):
                    if not repair.phases or phase.id in repair.phases:
                        covered.add((target_id, phase.id))
    for target_id in _cloud_run_targets(fleet):
        for phase in fleet.phases(target_id):
            if "verify" in phase.jobs:
                assert (target_id, phase.id) in covered, f"{target_id} {phase.id}: no rollback"


def test_verified_canary_phases_advance_and_staging_promotes(fleet: Fleet) -> None:
    advanced: set[str] = set()
    promoted: set[str] = set()
    for automation in fleet.automations.values():
        for rule in automation.rules:
            kind, body_ = _rule(rule)
            if kind == "advance_rollout_rule":
                advanced |= set(body_.source_phases)
                assert _selected(fleet, automation) == ["prod"]
            if kind == "promote_release_rule":
                promoted |= set(_selected(fleet, automation))
    assert advanced == {"canary-10", "canary-50"}
    assert promoted == {"staging"}


# --- the verify container --------------------------------------------------------------


def _verify_words() -> list[list[str]]:
    """Each skaffold verify container's command line, the image's entrypoint written out."""
    yaml = YAML(typ="safe", pure=True)
    lines = []
    for doc in yaml.load_all(SKAFFOLD.read_text(encoding="utf-8")):
        for test in (doc or {}).get("verify", []) or []:
            container = test["container"]
            words = [str(w) for w in [*container.get("command", []), *container.get("args", [])]]
            lines.append(words)
    return lines


def test_the_verify_container_runs_a_check_the_command_accepts() -> None:
    if not SKAFFOLD.exists():
        pytest.skip("skaffold.yaml (its verify stanza) is not in the repository yet")
    from deploy_guard.commands.check import check

    lines = _verify_words()
    assert lines, "skaffold.yaml has no verify container"
    for words in lines:
        if words[:1] == ["deploy-guard"]:
            words = words[1:]
        assert words[:1] == ["check"], f"the verify container does not run a check: {words}"
        assert "--cloud-deploy" in words
        try:
            check.make_context("check", words[1:])
        except click.ClickException as exc:
            pytest.fail(f"deploy-guard check refuses {words}: {exc.format_message()}")
        for flag in ("--revision", "--promote", "--to-revision"):
            assert flag not in words, f"{flag}: Cloud Deploy names the revision and the traffic"
        # the policies image holds policies/ at /policies (deploy/watch/Dockerfile)
        for i, word in enumerate(words[:-1]):
            if word == "--policy" and words[i + 1].startswith("/policies/"):
                in_repo = REPO / "policies" / words[i + 1].removeprefix("/policies/")
                assert in_repo.exists(), f"{words[i + 1]}: no {in_repo.relative_to(REPO)}"
