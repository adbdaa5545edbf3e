"""``docs/watch.md`` shows commands that run and say what the manifests do.

The guide's shell snippets are parsed by bash, its ``deploy-guard watch`` lines are held to
the command's flags (tests/watch_cli.py), and each ``envsubst`` it shows fills exactly the
placeholders of the manifest it applies, as the manifest's own header does.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import watch_cli

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "watch.md"
WATCH = REPO / "deploy" / "watch"


def shell_blocks(markdown: str) -> list[str]:
    return re.findall(r"```(?:bash|sh)\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.mark.parametrize("guide", ["docs/watch.md", "docs/permissions.md"])
def test_every_shell_snippet_parses(guide: str) -> None:
    blocks = shell_blocks((REPO / guide).read_text(encoding="utf-8"))
    assert blocks
    for block in blocks:
        result = subprocess.run(
            ["bash", "-n"], input=block, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{guide}: {result.stderr}\n{block}"


def test_watch_commands_in_the_guide_use_its_flags() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    lines = [
        line.strip()
        for block in shell_blocks(text)
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip().startswith("deploy-guard watch")
    ]
    assert len(lines) >= 3
    for line in lines:
        words = line.split("#")[0].split()[2:]
        watch_cli.parse(words)
    # and the flag table lists every flag the command takes
    listed = set(re.findall(r"`(--[a-z-]+)", text))
    flags = {f for f in watch_cli.accepted() if f.startswith("--") and f != "--help"}
    assert listed >= flags, flags - listed


def test_the_guide_fills_each_manifest_as_its_header_does() -> None:
    text = GUIDE.read_text(encoding="utf-8").replace("\\\n", " ")
    shown = re.findall(r"envsubst '([^']*)'\s*<\s*deploy/watch/([\w.-]+)", text)
    assert {name for _, name in shown} == {
        "job.yaml", "fleet-job.yaml", "worker-pool.yaml", "service.yaml",
    }  # fmt: skip
    for names, manifest in shown:
        header = (WATCH / manifest).read_text(encoding="utf-8").replace("\\\n#", " ")
        (in_header,) = re.findall(r"envsubst '([^']*)'", header)
        assert names == in_header, manifest


def test_the_guide_covers_every_file_exit_code_and_what_was_confirmed() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for path in WATCH.iterdir():
        assert f"deploy/watch/{path.name}" in text, path.name
    codes = re.findall(r"^\| ([0-4]) \|", text, flags=re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "4"]
    assert "## What was confirmed, and from where" in text
    assert "Not confirmed" in text or "not confirmed" in text
