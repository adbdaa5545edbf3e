"""``docs/cloud-deploy.md`` says what ``deploy/clouddeploy.yaml`` does, with commands that run.

The guide's shell snippets parse; its ``envsubst`` fills exactly what the manifest's header
does; every target, automation and phase of the file is named in it; the roles it grants keep
the guard's account unable to write traffic; it keeps the sections the other halves of the
feature fill in (the verify container) and says what was confirmed and what was not.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from clouddeploy_manifest import REPO, Fleet, header

GUIDE = REPO / "docs" / "cloud-deploy.md"
#: Roles that can change a Cloud Run service (its traffic): never the guard's here.
WRITE_ROLES = {"roles/run.developer", "roles/run.admin", "roles/editor", "roles/owner"}


def _text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _shell_blocks() -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.*?)```", _text(), flags=re.DOTALL)


def test_every_shell_snippet_parses() -> None:
    blocks = _shell_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        result = subprocess.run(
            ["bash", "-n"], input=block, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{result.stderr}\n{block}"


def test_the_guide_fills_the_manifest_as_its_header_does() -> None:
    text = _text().replace("\\\n", " ")
    (shown,) = re.findall(r"envsubst '([^']*)'\s*<\s*deploy/clouddeploy\.yaml", text)
    (in_header,) = re.findall(r"envsubst '([^']*)'", header().replace("\\\n#", " "))
    assert shown == in_header
    assert "gcloud deploy apply --file=" in text
    assert "gcloud deploy releases create" in text


def test_the_guide_names_every_target_automation_and_phase() -> None:
    text = _text()
    fleet = Fleet.load()
    for name in [fleet.pipeline_id, *fleet.targets, *fleet.automations]:
        assert f"`{name}`" in text, name
    phases = {p.id for target in fleet.targets for p in fleet.phases(target)}
    for phase in phases:
        assert f"`{phase}`" in text, phase


def _grants() -> list[tuple[str, str]]:
    """(account variable, role) of every ``grant ACCOUNT ROLE`` line of the guide."""
    return re.findall(r'^grant "\$(\w+)" (roles/[\w.]+)', "\n".join(_shell_blocks()), re.M)


def test_the_guard_account_gets_read_roles_and_never_one_that_writes() -> None:
    grants = _grants()
    guard = {role for account, role in grants if account == "GUARD_SA"}
    assert guard >= {
        "roles/run.viewer",
        "roles/logging.viewer",
        "roles/monitoring.viewer",
        "roles/run.invoker",
        "roles/clouddeploy.jobRunner",
    }
    assert not guard & WRITE_ROLES, guard & WRITE_ROLES
    deployer = {role for account, role in grants if account == "DEPLOYER_SA"}
    assert "roles/run.developer" in deployer
    # the table says the same as the commands
    (row,) = [line for line in _text().splitlines() if line.startswith("| `cd-guard`")]
    for role in guard:
        assert role in row, role


@pytest.mark.parametrize(
    "fact",
    [
        "between 10 minutes and 24 hours",
        "1 hour when it is unset",
        "exited 0",
        "canary phases",  # skipped on a target's first release
        "`rollback: {}`",
        "multiTarget.targetIds",
    ],
)
def test_the_guide_states_the_facts_the_pipeline_relies_on(fact: str) -> None:
    assert fact in _text().replace("\n", " ")


def test_the_guide_has_every_exit_code_and_what_was_confirmed() -> None:
    text = _text()
    codes = re.findall(r"^\| ([0-4]) \|", text, flags=re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "4"]
    assert "## The verify container" in text
    assert "## What was confirmed, and from where" in text
    assert "**Not confirmed**" in text


def test_the_readme_links_the_guide() -> None:
    assert "docs/cloud-deploy.md" in (REPO / "README.md").read_text(encoding="utf-8")
