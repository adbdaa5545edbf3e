"""docs/fleets.md says what the code does: its numbers, its output, its flags and links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploy_guard.analysis.budget import LogBudget
from deploy_guard.cli import cli

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "fleets.md"


def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_the_50_service_table_is_the_budget_s_arithmetic() -> None:
    rows = re.findall(
        r"^\| (\d+)/min \| (\d+)/min \| (\d+) s \| (\d+) s \| (\d+) s \| (\d+)/min \|$",
        doc(),
        re.MULTILINE,
    )
    assert [r[0] for r in rows] == ["60", "120"]
    for quota, per_minute, slot, turn, wait, left in rows:
        budget = LogBudget(quota=float(quota), guards=50, index=0)
        assert float(per_minute) == budget.per_minute
        assert float(slot) == budget.slot
        assert float(turn) == float(wait) == budget.turn
        assert float(left) == float(quota) - budget.per_minute


def test_the_fleet_command_s_output_is_quoted_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"\$ (deploy-guard fleet [^\n]+)\n(.*?)\n```", doc(), re.DOTALL)
    assert block is not None
    monkeypatch.chdir(REPO)  # the doc runs it from the repository's root
    result = CliRunner().invoke(cli, block.group(1).split()[1:])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == block.group(2).strip()


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (["check"], "--fleet"),
        (["watch"], "--fleet"),
        (["emulator"], "--logging-read-quota"),
        (["fleet"], "--project"),
    ],
)
def test_the_flags_it_names_exist(command: list[str], flag: str) -> None:
    assert flag in doc()
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert flag in result.output


def test_its_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc()):
        if target.startswith("http"):
            continue
        assert (DOC.parent / target).resolve().exists(), target


def test_the_readme_points_to_it() -> None:
    assert "(docs/fleets.md)" in (REPO / "README.md").read_text(encoding="utf-8")
