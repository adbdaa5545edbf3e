"""Read ``cloudbuild.yaml`` the way Cloud Build does, for the tests in this folder.

Cloud Build replaces ``$NAME`` and ``${NAME}`` with substitutions before a step runs
and turns ``$$`` into ``$``. :class:`Pipeline` does the same, so a test can take a
step's own shell script out of the file, expand it with chosen values and run it:
the commands the tests prove are the pipeline's commands, not a copy of them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
CLOUDBUILD = REPO / "cloudbuild.yaml"

#: Cloud Build's built-in substitutions (docs: "Substituting variable values"):
#: for every build, for triggered builds, and the GitHub pull-request ones.
BUILT_INS = frozenset(
    {
        "PROJECT_ID",
        "BUILD_ID",
        "PROJECT_NUMBER",
        "LOCATION",
        "TRIGGER_NAME",
        "COMMIT_SHA",
        "REVISION_ID",
        "SHORT_SHA",
        "REPO_NAME",
        "REPO_FULL_NAME",
        "BRANCH_NAME",
        "TAG_NAME",
        "REF_NAME",
        "TRIGGER_BUILD_CONFIG_PATH",
        "SERVICE_ACCOUNT_EMAIL",
        "SERVICE_ACCOUNT",
        "_HEAD_BRANCH",
        "_BASE_BRANCH",
        "_HEAD_REPO_URL",
        "_PR_NUMBER",
    }
)

# `$$` (an escaped dollar), `${NAME}`, `$NAME`, or any other `$` (an error in a config
# that must match: Cloud Build would try to substitute it or leave it half-done).
_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$")


class SubstitutionError(ValueError):
    """A ``$`` in the config that Cloud Build could not substitute cleanly."""


def references(text: str) -> list[str]:
    """Every substitution name ``text`` refers to; raise on a bare, unescaped ``$``."""
    names: list[str] = []
    for match in _TOKEN.finditer(text):
        if match.group(0) == "$$":
            continue
        name = match.group(1) or match.group(2)
        if name is None:
            raise SubstitutionError(f"bare '$' at offset {match.start()} in {text[:60]!r}")
        names.append(name)
    return names


def expand(text: str, values: dict[str, str]) -> str:
    """Substitute like Cloud Build: ``$$`` becomes ``$``, names become their values."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        if name is None:
            raise SubstitutionError(f"bare '$' at offset {match.start()}")
        if name not in values:
            raise SubstitutionError(f"no value for substitution {name}")
        return values[name]

    return _TOKEN.sub(one, text)


def strings_in(node: Any) -> list[str]:
    """All string leaves of a loaded YAML document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings_in(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return []


def to_plain(node: Any) -> Any:
    """ruamel's commented maps and sequences as plain dicts and lists."""
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    return node


class Pipeline:
    """The loaded ``cloudbuild.yaml`` with the look-ups the tests need.

    The helpers hang off this class because test modules cannot import this conftest
    (pytest runs with ``--import-mode=importlib``); they reach it through the fixture.
    """

    BUILT_INS = BUILT_INS
    SubstitutionError = SubstitutionError
    references = staticmethod(references)
    expand = staticmethod(expand)
    strings_in = staticmethod(strings_in)

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.doc["steps"])

    def step(self, step_id: str) -> dict[str, Any]:
        for step in self.steps:
            if step.get("id") == step_id:
                return step
        raise KeyError(f"no step with id {step_id!r} in cloudbuild.yaml")

    def script(self, step_id: str) -> str:
        """The shell script of a ``bash -c`` step, as written (before substitution)."""
        step = self.step(step_id)
        assert step.get("entrypoint") == "bash", f"{step_id} is not a bash step"
        args = step["args"]
        assert args[0] == "-c", f"{step_id}: expected ['-c', script]"
        assert len(args) == 2, f"{step_id}: expected ['-c', script]"
        return str(args[1])

    def values(self, **overrides: str) -> dict[str, str]:
        """Substitution values: the file's defaults, made concrete, then ``overrides``.

        Defaults may refer to other substitutions (``dynamicSubstitutions``), so they
        are expanded until nothing is left to expand.
        """
        values = {"PROJECT_ID": "test-project", "BUILD_ID": "0000-build"}
        values.update({k: str(v) for k, v in self.doc.get("substitutions", {}).items()})
        values.update(overrides)
        for _ in range(len(values)):
            expanded = {k: expand(v, values) for k, v in values.items()}
            if expanded == values:
                break
            values = expanded
        return values

    def start_step(
        self, step_id: str, values: dict[str, str], workspace: Path, env: dict[str, str]
    ) -> subprocess.Popen[str]:
        """:meth:`run_step` without waiting: the running ``bash``, to signal it."""
        script, step_env = self._prepared(step_id, values, workspace, env)
        return subprocess.Popen(
            ["bash", "-c", script],
            cwd=workspace,
            env=step_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _prepared(
        self, step_id: str, values: dict[str, str], workspace: Path, env: dict[str, str]
    ) -> tuple[str, dict[str, str]]:
        script = self.expand(self.script(step_id), values)
        script = script.replace("/workspace", str(workspace))
        step_env = dict(env)  # Cloud Build adds the step's `env` entries, substituted
        for entry in self.step(step_id).get("env", []):
            key, _, value = self.expand(str(entry), values).partition("=")
            step_env[key] = value
        return script, step_env

    def run_step(
        self,
        step_id: str,
        values: dict[str, str],
        workspace: Path,
        env: dict[str, str],
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run a bash step's own script as Cloud Build would, with ``workspace`` as /workspace.

        The script is substituted with ``values`` (``$$`` becoming ``$``) and run by
        bash in ``workspace``; ``env`` is the whole environment (PATH decides which
        ``gcloud`` or ``deploy-guard`` it finds), plus the step's own ``env`` entries.
        """
        script, step_env = self._prepared(step_id, values, workspace, env)
        return subprocess.run(
            ["bash", "-c", script],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def load_pipeline(path: Path = CLOUDBUILD) -> Pipeline:
    doc = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    return Pipeline(to_plain(doc))


@pytest.fixture
def pipeline() -> Pipeline:
    """``cloudbuild.yaml`` freshly loaded (tests may mutate ``pipeline.doc``)."""
    return load_pipeline()
