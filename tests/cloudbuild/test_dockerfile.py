"""The guard's ``Dockerfile``, checked without a Docker engine.

No engine runs here, so the tests check what decides whether the image works: the base
is pinned, the user is not root, the build context (after ``.dockerignore``) holds
everything ``pip install .`` reads, the package it installs is the one the tests use,
and the entry point names the console script that package declares.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest


def find_packages(where: Path) -> list[str]:
    """Dotted names of the packages (folders with ``__init__.py``) under ``where``."""
    return sorted(
        ".".join(init.parent.relative_to(where).parts) for init in where.rglob("__init__.py")
    )


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """One ``.dockerignore`` pattern (Go ``filepath.Match`` plus ``**``) as a regex."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or a parent folder decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negated, regex in rules:
        if any(regex.match(c) for c in candidates):
            verdict = not negated
    return verdict


def ignore_rules(repo: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (repo / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, dockerignore_regex(line.lstrip("!").strip("/"))))
    return rules


def prunable(folder: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether nothing under an excluded ``folder`` can be re-included by a ``!`` rule."""
    if not excluded(folder, rules):
        return False
    for negated, regex in rules:
        literal = regex.pattern.startswith(re.escape(folder)) or regex.pattern[0] in "[(."
        if negated and literal:
            return False
    return True


def build_context(repo: Path) -> set[str]:
    """The repository paths ``docker build .`` would send (git-tracked or not)."""
    rules = ignore_rules(repo)
    files = set()
    for folder, dirs, names in os.walk(repo):
        base = Path(folder).relative_to(repo).as_posix()
        prefix = "" if base == "." else base + "/"
        # Skip folders that are excluded and that no `!` rule could re-include (.venv, .git).
        dirs[:] = [d for d in dirs if not prunable(prefix + d, rules)]
        files.update(prefix + n for n in names if not excluded(prefix + n, rules))
    return files


@pytest.fixture(scope="module")
def steps(repo_root: Path) -> list[tuple[str, str]]:
    return instructions(repo_root / "Dockerfile")


@pytest.fixture(scope="module")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pyproject(repo_root: Path) -> dict[str, object]:
    return tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))


def args_of(steps: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instr, args in steps if instr == name]


def copies(steps: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from=)."""
    result = []
    for args in args_of(steps, "COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        if "--from=" in args:
            continue
        result.append((words[:-1], words[-1]))
    return result


# --- the base and the user ---------------------------------------------------------


def test_the_base_is_python_slim_pinned_to_an_exact_release(
    steps: list[tuple[str, str]], pyproject: dict[str, object]
) -> None:
    froms = args_of(steps, "FROM")
    assert len(froms) == 1, "one stage: nothing to copy between stages"
    image = froms[0].split()[0]
    match = re.fullmatch(r"python:(3\.\d+)\.\d+-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?", image)
    assert match, f"{image}: pin python:<major>.<minor>.<patch>-slim-<debian>"
    project = pyproject["project"]
    assert isinstance(project, dict)
    assert project["requires-python"] == f">={match.group(1)}"


def test_it_runs_as_a_numeric_non_root_user_that_exists(steps: list[tuple[str, str]]) -> None:
    users = args_of(steps, "USER")
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), users[-1]
    assert int(uid) != 0, users[-1]
    runs = " ".join(args_of(steps, "RUN"))
    assert f"--uid {uid}" in runs, "the USER's uid is never created"
    # Nothing runs after USER as a different user, and the last instruction sets no root.
    last_user_at = max(i for i, (instr, _) in enumerate(steps) if instr == "USER")
    assert all(instr != "RUN" for instr, _ in steps[last_user_at:])


def test_no_secret_or_dev_tooling_goes_in(steps: list[tuple[str, str]]) -> None:
    text = " ".join(args for _, args in steps)
    assert "[dev]" not in text
    assert " -e " not in text
    for args in args_of(steps, "ENV") + args_of(steps, "ARG"):
        names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
        for name in names:
            assert not re.search(r"TOKEN|SECRET|KEY|CREDENTIAL|PASSWORD", name.upper()), name


# --- what it installs --------------------------------------------------------------


def test_it_installs_the_repository_package_with_pip(steps: list[tuple[str, str]]) -> None:
    destinations = {Path(dest) for srcs, dest in copies(steps) if "pyproject.toml" in srcs}
    assert len(destinations) == 1, "pyproject.toml must be copied once"
    (project_dir,) = destinations
    installs = [a for a in args_of(steps, "RUN") if "pip install" in a and " -r " not in a]
    assert installs, "no pip install of the package (the lock's install is separate)"
    words = installs[0].split("&&")[0].split()
    (target,) = [w for w in words[words.index("install") + 1 :] if not w.startswith("--")]
    assert Path(target) == project_dir, f"pip installs {target}, pyproject is in {project_dir}"


def test_the_build_context_holds_everything_pip_install_reads(
    repo_root: Path, steps: list[tuple[str, str]], pyproject: dict[str, object], tmp_path: Path
) -> None:
    context = build_context(repo_root)
    for private in (".git/", ".venv/", "tests/", ".mypy_cache/"):
        assert not any(p.startswith(private) for p in context), f"{private} is in the context"
    # Lay the COPY instructions out in a temporary image filesystem.
    image = tmp_path / "image"
    for sources, dest in copies(steps):
        for source in sources:
            inside = sorted(p for p in context if p == source or p.startswith(source + "/"))
            assert inside, f"COPY {source}: nothing in the build context"
            for rel in inside:
                if rel == source:  # a file copied into a folder
                    target = image / dest.lstrip("/") / Path(rel).name
                else:  # a folder copied: its contents land under dest
                    target = image / dest.lstrip("/") / Path(rel).relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(repo_root / rel, target)
    (project_dir,) = {dest for srcs, dest in copies(steps) if "pyproject.toml" in srcs}
    project_root = image / project_dir.lstrip("/")
    copied = tomllib.loads((project_root / "pyproject.toml").read_text(encoding="utf-8"))
    assert copied == pyproject
    project = copied["project"]
    assert (project_root / project["readme"]).is_file(), "the readme pyproject names"
    where = copied["tool"]["setuptools"]["packages"]["find"]["where"]
    for folder in where:
        assert find_packages(project_root / folder) == find_packages(repo_root / folder)
        assert "deploy_guard" in find_packages(project_root / folder)
    # And the code the console script runs is among the copied files.
    module, _, _ = project["scripts"]["deploy-guard"].partition(":")
    assert (project_root / where[0] / (module.replace(".", "/") + ".py")).is_file()


def test_the_entrypoint_is_the_console_script_of_the_package_the_tests_use(
    steps: list[tuple[str, str]], pyproject: dict[str, object]
) -> None:
    (entrypoint,) = args_of(steps, "ENTRYPOINT")
    argv = json.loads(entrypoint)  # exec form: signals reach the guard, not a shell
    assert argv == ["deploy-guard"]
    project = pyproject["project"]
    assert isinstance(project, dict)
    assert argv[0] in project["scripts"]
    installed = importlib.metadata.distribution(project["name"])
    scripts = {ep.name: ep for ep in installed.entry_points if ep.group == "console_scripts"}
    assert scripts[argv[0]].value == project["scripts"][argv[0]]
    assert callable(scripts[argv[0]].load())


def test_the_console_script_runs(pyproject: dict[str, object]) -> None:
    script = Path(sys.executable).with_name("deploy-guard")
    assert script.is_file(), f"{script}: the package is not installed in this environment"
    out = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Usage: deploy-guard" in out.stdout


# --- the .dockerignore reader itself -------------------------------------------------


def test_the_dockerignore_reader_follows_dockers_rules() -> None:
    rules = [
        (False, dockerignore_regex("*")),
        (True, dockerignore_regex("src")),
        (False, dockerignore_regex("**/__pycache__")),
    ]
    assert excluded("tests/test_x.py", rules)
    assert not excluded("src/deploy_guard/cli.py", rules)
    assert excluded("src/deploy_guard/__pycache__/cli.cpython-311.pyc", rules)
    assert excluded(".git/config", rules)
