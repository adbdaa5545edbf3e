"""The guard's image is reproducible: it installs only what ``requirements.lock`` pins.

No Docker engine runs here, so the tests read the files: the ``Dockerfile`` installs
the lock with ``--require-hashes --no-deps`` and the package itself with ``--no-deps``;
every locked package is pinned to one version with sha256 hashes; every dependency in
``pyproject.toml`` (runtime and build backend) is locked within its range; and the
lock is closed under the dependencies its packages declare, so ``--no-deps`` leaves
nothing out. ``make lock`` regenerates the file.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
LOCK_NAME = LOCK.name

#: The image's interpreter and platform (Dockerfile: python:3.11 slim on linux/x86_64).
TARGET = {
    **default_environment(),
    "python_version": "3.11",
    "python_full_version": "3.11.14",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
}

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:\\)?$")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


@dataclass
class Pin:
    name: NormalizedName
    version: Version
    hashes: list[str] = field(default_factory=list)


def parse_lock(text: str) -> dict[NormalizedName, Pin]:
    """``name==version`` entries with their ``--hash`` lines; anything else is an error."""
    pins: dict[NormalizedName, Pin] = {}
    current: Pin | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if raw[:1].isspace():  # a continuation: one hash per line
            assert current is not None, f"{LOCK_NAME}:{number}: a hash outside an entry"
            option = line.rstrip("\\").strip()
            assert _HASH.match(option), f"{LOCK_NAME}:{number}: not a sha256 hash: {option}"
            current.hashes.append(option)
            continue
        match = _PIN.match(line)
        assert match, f"{LOCK_NAME}:{number}: not an exact name==version pin: {line}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{LOCK_NAME}:{number}: {name} is pinned twice"
        current = pins[name] = Pin(name, Version(match["version"]))
    return pins


@pytest.fixture(scope="module")
def pins() -> dict[NormalizedName, Pin]:
    assert LOCK.is_file(), f"{LOCK} is missing: run `make lock`"
    return parse_lock(LOCK.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def dockerfile_commands() -> list[str]:
    """The Dockerfile's RUN and COPY instructions, continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [c for c in logical if c.split(None, 1)[0].upper() in ("RUN", "COPY")]


def pip_installs(commands: list[str]) -> list[list[str]]:
    """The words of every ``pip install`` in the RUN instructions, in order."""
    found = []
    for command in commands:
        if not command.upper().startswith("RUN"):
            continue
        for part in command[3:].split("&&"):
            words = part.split()
            if words[:2] == ["pip", "install"]:
                found.append(words)
    return found


def locked(requirement: Requirement, pins: dict[NormalizedName, Pin]) -> Pin:
    name = canonicalize_name(requirement.name)
    assert name in pins, f"{requirement} is not in {LOCK_NAME}: run `make lock`"
    pin = pins[name]
    assert requirement.specifier.contains(pin.version, prereleases=True), (
        f"{LOCK_NAME} pins {name}=={pin.version}, outside {requirement}: run `make lock`"
    )
    return pin


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether ``requirement`` is installed on the image's platform for these extras."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET, "extra": e}) for e in extras | {""})


# --- the Dockerfile ------------------------------------------------------------------


def test_the_dockerfile_installs_dependencies_only_from_the_hashed_lock() -> None:
    commands = dockerfile_commands()
    installs = pip_installs(commands)
    assert len(installs) == 2, f"expected the lock, then the package: {installs}"
    lock_install, package_install = installs
    assert "-r" in lock_install, lock_install
    lock_path = Path(lock_install[lock_install.index("-r") + 1])
    assert lock_path.name == LOCK_NAME
    for option in ("--require-hashes", "--no-deps"):
        assert option in lock_install, f"the lock is installed without {option}"
    # The lock file is the one from the repository, copied to where pip reads it.
    copies = [c.split()[1:] for c in commands if c.upper().startswith("COPY")]
    assert any(
        LOCK_NAME in words[:-1] and Path(words[-1]) in (lock_path.parent, lock_path)
        for words in copies
    ), f"{LOCK_NAME} is not copied to {lock_path}"
    # Then the package itself: nothing resolved, nothing downloaded for its build.
    assert "--no-deps" in package_install, package_install
    assert "--no-build-isolation" in package_install, package_install
    assert not any(w == "-r" or w.startswith("--index-url") for w in package_install)


def test_the_build_context_sends_the_lock() -> None:
    rules = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert f"!{LOCK_NAME}" in rules


# --- the lock ------------------------------------------------------------------------


def test_every_locked_package_is_pinned_with_sha256_hashes(
    pins: dict[NormalizedName, Pin],
) -> None:
    assert pins
    unhashed = sorted(name for name, pin in pins.items() if not pin.hashes)
    assert not unhashed, f"pinned without --hash: {unhashed}"


def test_the_lock_parser_refuses_what_pip_would_not_check() -> None:
    good = "click==8.1.7 \\\n    --hash=sha256:" + "a" * 64 + "\n"
    assert parse_lock(good)["click"].version == Version("8.1.7")
    for bad in ("click>=8.1\n", "click==8.1.7 \\\n    --hash=md5:abc\n", good + good):
        with pytest.raises(AssertionError):
            parse_lock(bad)


def test_every_runtime_dependency_is_locked_within_its_range(
    pins: dict[NormalizedName, Pin], pyproject: dict[str, object]
) -> None:
    project = pyproject["project"]
    assert isinstance(project, dict)
    dependencies = [Requirement(d) for d in project["dependencies"]]
    assert dependencies
    for requirement in dependencies:
        if applies(requirement, set()):
            locked(requirement, pins)


def test_the_build_backend_is_locked_within_its_range(
    pins: dict[NormalizedName, Pin], pyproject: dict[str, object]
) -> None:
    build = pyproject["build-system"]
    assert isinstance(build, dict)
    for requirement in map(Requirement, build["requires"]):
        locked(requirement, pins)


def walk(roots: list[Requirement], pins: dict[NormalizedName, Pin]) -> int:
    """Check every dependency reachable from ``roots`` is locked; how many were walked.

    A package's own dependencies come from its metadata in the test environment, for
    the packages installed there at the locked version (``make lock`` constrains the
    lock to those versions); extras (``google-api-core[grpc]``) are followed.
    """
    todo = list(roots)
    seen: dict[NormalizedName, set[str]] = {}
    walked = 0
    while todo:
        requirement = todo.pop()
        if not applies(requirement, set()):
            continue
        pin = locked(requirement, pins)
        extras = set(requirement.extras)
        if pin.name in seen and extras <= seen[pin.name]:
            continue
        seen.setdefault(pin.name, set()).update(extras)
        try:
            installed = importlib.metadata.distribution(pin.name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(installed.version) != pin.version:
            continue
        walked += 1
        for spec in installed.requires or []:
            dependency = Requirement(spec)
            if applies(dependency, seen[pin.name]):
                dependency.marker = None
                todo.append(dependency)
    return walked


def test_the_lock_holds_every_dependency_its_packages_declare(
    pins: dict[NormalizedName, Pin], pyproject: dict[str, object]
) -> None:
    """``--no-deps`` installs nothing the lock forgot."""
    project, build = pyproject["project"], pyproject["build-system"]
    assert isinstance(project, dict)
    assert isinstance(build, dict)
    roots = [Requirement(d) for d in [*project["dependencies"], *build["requires"]]]
    assert walk(roots, pins) >= len(project["dependencies"]), "too few packages checked"


def test_the_walk_finds_a_dependency_of_an_extra_left_out(
    pins: dict[NormalizedName, Pin],
) -> None:
    api_core = Requirement("google-api-core[grpc]")
    assert walk([api_core], pins) > 1
    without = {name: pin for name, pin in pins.items() if name != "grpcio-status"}
    with pytest.raises(AssertionError, match="grpcio-status"):
        walk([api_core], without)
    older = {**pins, "click": Pin(canonicalize_name("click"), Version("7.1"))}
    with pytest.raises(AssertionError, match="outside click"):
        locked(Requirement("click>=8.1,<9"), older)


def test_make_lock_regenerates_it_for_the_images_python_outside_the_venv() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^lock:.*\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert match, "no `lock` target in the Makefile"
    recipe = match.group(1).replace("\\\n", " ")
    for option in (
        "--generate-hashes",
        "--python-version 3.11",
        "--python-platform x86_64-manylinux",
        f"--output-file {LOCK_NAME}",
        "build-system",  # the build backend is locked too
    ):
        assert option in recipe, f"make lock: {option} missing"
    assert "$(BIN)/python -m pip install" not in recipe, "the lock tool goes in its own venv"
    assert "make lock" in LOCK.read_text(encoding="utf-8").split("\n", 3)[1]
