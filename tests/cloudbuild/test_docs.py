"""The Cloud Build and permissions guides say only what the tool and pipeline do.

Documentation drifts: these tests hold the commands shown in ``docs/cloud-build.md``
to the real click commands, the substitutions it lists to ``cloudbuild.yaml``, and the
grants in ``docs/permissions.md`` to least privilege.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import click
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def shell_blocks(markdown: str) -> list[str]:
    """The bodies of the ```bash blocks, with backslash continuations joined."""
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", markdown, flags=re.DOTALL)
    return [b.replace("\\\n", " ") for b in blocks]


def commands_in(markdown: str, prefix: str) -> list[str]:
    return [
        line.strip()
        for block in shell_blocks(markdown)
        for line in block.splitlines()
        if line.strip().startswith(prefix)
    ]


@pytest.mark.parametrize("guide", ["docs/cloud-build.md", "README.md", "docs/emulator.md"])
@pytest.mark.parametrize("name", ["check", "rollback"])
def test_deploy_guard_commands_in_the_guide_use_real_flags(name: str, guide: str) -> None:
    module = importlib.import_module(f"deploy_guard.commands.{name}")
    command = getattr(module, name)
    assert isinstance(command, click.Command)
    accepted = {opt for param in command.params for opt in param.opts}
    shown = commands_in((DOCS.parent / guide).read_text(encoding="utf-8"), f"deploy-guard {name}")
    assert shown, f"the guide shows no 'deploy-guard {name}' command"
    for line in shown:
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line))
        assert used <= accepted, f"{line!r}: unknown flags {used - accepted}"


@pytest.mark.parametrize("name", ["status", "rollout"])
def test_the_rollout_commands_in_the_cloud_build_guide_use_real_flags(name: str) -> None:
    module = pytest.importorskip(
        f"deploy_guard.commands.{name}", reason=f"deploy-guard {name} not built yet"
    )
    command = getattr(module, name)
    accepted = {opt for param in command.params for opt in param.opts}
    guide = (DOCS / "cloud-build.md").read_text(encoding="utf-8")
    every = [
        line[line.index(f"deploy-guard {name}") :]
        for line in guide.splitlines()
        if f"deploy-guard {name} " in line
    ]
    assert every, f"the guide shows no 'deploy-guard {name}' command"
    for line in every:
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line.split("`")[0]))
        assert used <= accepted, f"{line!r}: unknown flags {used - accepted}"


def test_every_substitution_in_the_guide_exists_in_cloudbuild_yaml(pipeline: Any) -> None:
    guide = (DOCS / "cloud-build.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(_[A-Z_]+)` \|", guide, flags=re.MULTILINE))
    declared = set(pipeline.doc["substitutions"])
    assert listed == declared, {"missing": declared - listed, "unknown": listed - declared}


def test_the_permissions_guide_grants_no_broad_role() -> None:
    text = (DOCS / "permissions.md").read_text(encoding="utf-8")
    grants = commands_in(text, "gcloud")
    roles = {r for line in grants for r in re.findall(r"--role\s+\"?([\w./${}-]+)", line)}
    assert roles, "no grant found"
    assert not roles & {
        "roles/owner",
        "roles/editor",
        "roles/run.admin",
        "roles/iam.serviceAccountAdmin",
    }
    # Every predefined role granted is explained in the guide's tables.
    for role in roles:
        if role.startswith("roles/"):
            assert text.count(role) >= 2, f"{role} is granted but never explained"
