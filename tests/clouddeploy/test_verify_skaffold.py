"""``skaffold.yaml``: the verify stanza Cloud Deploy runs in every canary phase, checked as data.

What Cloud Deploy reads must be right before any pipeline runs it: the skaffold
config's shape (``skaffold/v4beta7``, a Cloud Run deployer, the manifest it
renders), and the verify container: deploy-guard's console script, ``check
--cloud-deploy`` with a policy from the image's ``/policies`` that applies to
the service the manifest deploys, nothing that would write traffic, reports
where the container may write. ``test_verify_e2e.py`` runs the same command.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from clouddeploy.verify_phase import IMAGE_PATHS, ROOT, SKAFFOLD, verify_container
from deploy_guard.policy import load_file

#: Flags that would make the guard act on traffic: Cloud Deploy owns it in a verify job.
WRITING_FLAGS = ("--promote", "--steps", "--resume")


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    doc: dict[str, Any] = load(SKAFFOLD)
    return doc


def arg_after(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_it_is_a_skaffold_config_cloud_deploy_renders_for_cloud_run(
    skaffold: dict[str, Any],
) -> None:
    assert skaffold["apiVersion"] == "skaffold/v4beta7"
    assert skaffold["kind"] == "Config"
    assert skaffold["deploy"] == {"cloudrun": {}}
    for manifest in skaffold["manifests"]["rawYaml"]:
        service = load(ROOT / manifest)
        assert service["apiVersion"] == "serving.knative.dev/v1"
        assert service["kind"] == "Service"
        # Cloud Deploy writes each phase's split: a traffic stanza here would fight it
        assert "traffic" not in service["spec"]


def test_the_verify_container_runs_the_guard_in_cloud_deploy_mode() -> None:
    container = verify_container()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert container["command"] == ["deploy-guard"]
    assert scripts["deploy-guard"] == "deploy_guard.cli:main"
    args = container["args"]
    assert args[:2] == ["check", "--cloud-deploy"]
    assert not set(args) & set(WRITING_FLAGS), args
    assert "--revision" not in args  # Cloud Deploy names it: CLOUD_RUN_REVISION
    # the image is deploy-guard's plus /policies (deploy/watch/Dockerfile builds it)
    assert container["image"].rsplit("/", 1)[-1].startswith("deploy-guard-policies:")
    assert (ROOT / "deploy" / "watch" / "Dockerfile").exists()
    for flag in ("--report", "--summary"):  # where a non-root container may write
        assert arg_after(args, flag).startswith("/tmp/deploy-guard/")


def test_the_policy_it_reads_applies_to_the_service_the_manifest_deploys(
    skaffold: dict[str, Any],
) -> None:
    args = verify_container()["args"]
    inside = arg_after(args, "--policy")
    assert inside.startswith(IMAGE_PATHS[0])
    policy = load_file(ROOT / "policies" / inside.removeprefix(IMAGE_PATHS[0]))
    (manifest,) = skaffold["manifests"]["rawYaml"]
    service = load(ROOT / manifest)["metadata"]["name"]
    assert policy.applies_to(service)
    # its WebSocket holds fit the request timeout the manifest sets
    timeout = load(ROOT / manifest)["spec"]["template"]["spec"]["timeoutSeconds"]
    for rule in policy.rules:
        if rule.websocket is not None:
            assert rule.websocket.longest_session < timeout
