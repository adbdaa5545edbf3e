"""The manifests of ``deploy/watch/`` loaded as ``envsubst`` and ``gcloud ... replace`` read them.

Shared by the tests in ``tests/deploy/``: the placeholders and the values they are filled
with, a file's header comment (how to apply it) and its YAML documents, and the watcher's
command line inside a Cloud Run manifest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
WATCH = REPO / "deploy" / "watch"

#: Placeholder -> a concrete value, as `envsubst` fills them in before `replace`.
PLACEHOLDERS = {
    "PROJECT_ID": "acme-prod",
    "REGION": "europe-west1",
    "SERVICE": "chat-agent",
    "IMAGE": "europe-west1-docker.pkg.dev/acme-prod/cloud-run/deploy-guard-policies:0.1.0",
    "WATCHER_SA": "deploy-guard-watch@acme-prod.iam.gserviceaccount.com",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


def header(name: str) -> str:
    """The leading comment block of a file: how to apply it."""
    lines = (WATCH / name).read_text(encoding="utf-8").splitlines()
    end = next((i for i, line in enumerate(lines) if line and not line.startswith("#")), None)
    return "\n".join(lines[:end])


def body(name: str) -> str:
    """The file without its comments (what `envsubst` and then `replace` read)."""
    text = (WATCH / name).read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def substitute(text: str) -> str:
    return PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(1)], text)


def documents(name: str) -> list[dict[str, Any]]:
    """Every YAML document of a file, placeholders filled in."""
    yaml = YAML(typ="safe", pure=True)
    docs = [d for d in yaml.load_all(substitute(body(name))) if d is not None]
    assert docs, f"{name} holds no document"
    return docs


def the_document(name: str) -> dict[str, Any]:
    (doc,) = documents(name)
    return doc


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    if doc["kind"] == "Job":
        spec = spec["template"]["spec"]
    return list(spec["containers"])


def watch_args(doc: dict[str, Any]) -> list[str]:
    """The words after ``watch`` of the manifest's one container."""
    (container,) = containers(doc)
    words = [*container.get("command", []), *container["args"]]
    if words[:1] == ["deploy-guard"]:  # the image's entrypoint written out
        words = words[1:]
    assert words[:1] == ["watch"], f"the container does not run `deploy-guard watch`: {words}"
    return [str(w) for w in words[1:]]


def values_of(words: list[str], name: str) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words) if w == name]


def the_value(words: list[str], name: str) -> str:
    (value,) = values_of(words, name)
    return value
