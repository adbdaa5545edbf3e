"""``deploy/clouddeploy.yaml`` read the way ``gcloud deploy apply --file`` reads it, strictly.

No Cloud Deploy API is reachable from here, so each YAML document goes through what gcloud
does to it (``googlecloudsdk/command_lib/deploy/manifest_util.py``: ``apiVersion`` and
``kind`` dropped, ``metadata`` turned into ``name``/``annotations``/``labels``, the
Automation's short forms expanded) and is then parsed into the real ``google.cloud.deploy_v1``
message with ``json_format.ParseDict(..., ignore_unknown_fields=False)``: a misspelled or
unknown field fails here as it would fail ``apply``. Three things ParseDict lets through are
refused as well: snake_case keys (gcloud's apitools messages know only the JSON names),
fields the API documents as output only, and required fields left out (both read from the
message classes' own attribute docs, "Required." and "Output only.").

The tests in ``tests/clouddeploy/`` share this: the placeholders and their values, the
documents, :func:`parse` and a small model of the pipeline (:class:`Fleet`) that answers
which phases and jobs a target's rollouts have.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.cloud import deploy_v1
from google.protobuf import descriptor, json_format
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "clouddeploy.yaml"
SKAFFOLD = REPO / "skaffold.yaml"

#: Placeholder -> a concrete value, as ``envsubst`` fills them in before ``apply``.
PLACEHOLDERS = {
    "PROJECT_ID": "acme-prod",
    "REGION": "europe-west1",
    "DEPLOYER_SA": "cd-deployer@acme-prod.iam.gserviceaccount.com",
    "GUARD_SA": "cd-guard@acme-prod.iam.gserviceaccount.com",
    "AUTOMATION_SA": "cd-automation@acme-prod.iam.gserviceaccount.com",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")
#: Cloud Deploy resource and rule IDs, phase and job names (the API's documented pattern).
RESOURCE_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
API_VERSIONS = frozenset({"deploy.cloud.google.com/v1", "deploy.cloud.google.com/v1beta1"})
MESSAGES = {
    "DeliveryPipeline": deploy_v1.DeliveryPipeline,
    "Target": deploy_v1.Target,
    "Automation": deploy_v1.Automation,
}
#: Set by gcloud from metadata.name although the API documents it as output only.
_SET_BY_GCLOUD = frozenset({"name"})


class ManifestError(ValueError):
    """A document ``gcloud deploy apply`` would refuse, or send with fields the API refuses."""


# --- the file --------------------------------------------------------------------------


def header(path: Path = MANIFEST) -> str:
    """The leading comment block: how to apply the file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    end = next((i for i, line in enumerate(lines) if line and not line.startswith("#")), None)
    return "\n".join(lines[:end])


def body(path: Path = MANIFEST) -> str:
    """The file without its comment lines (what ``envsubst`` and then ``apply`` read)."""
    text = path.read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def documents(text: str | None = None) -> list[dict[str, Any]]:
    """Every YAML document of the manifest, placeholders filled in, as plain data."""
    filled = PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(1)], body() if text is None else text)
    yaml = YAML(typ="safe", pure=True)
    return [doc for doc in yaml.load_all(filled) if doc is not None]


# --- what gcloud does to a document ----------------------------------------------------


def _snake(key: str) -> str:
    """gcloud's label-key conversion (``resource_property.ConvertToSnakeCase``)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def _wait_seconds(wait: Any) -> str:
    """An Automation's ``wait``: gcloud takes whole minutes only ("5m") and sends seconds."""
    if not isinstance(wait, str) or not re.fullmatch(r"\d+m", wait):
        raise ManifestError(f"wait {wait!r}: gcloud takes minutes, like '5m'")
    return f"{int(wait[:-1]) * 60}s"


def _resource_name(kind: str, name: str) -> str:
    parent = f"projects/{PLACEHOLDERS['PROJECT_ID']}/locations/{PLACEHOLDERS['REGION']}"
    if kind == "Automation":
        pipeline, _, automation = name.partition("/")
        if not automation or "/" in automation:
            raise ManifestError(f"Automation metadata.name {name!r}: expected PIPELINE/ID")
        return f"{parent}/deliveryPipelines/{pipeline}/automations/{automation}"
    if "/" in name:
        raise ManifestError(f"{kind} metadata.name {name!r}: a resource ID has no '/'")
    collection = "deliveryPipelines" if kind == "DeliveryPipeline" else "targets"
    return f"{parent}/{collection}/{name}"


def _automation_rules(rules: Any) -> list[dict[str, Any]]:
    """The rule short forms gcloud expands: old rule names, ``name`` for ``id``, wait in minutes,
    ``backoffMode: LINEAR``, a bare ``retry:``."""
    if not isinstance(rules, list):
        raise ManifestError("Automation rules: expected a list")
    old = {
        "promoteRelease": "promoteReleaseRule",
        "advanceRollout": "advanceRolloutRule",
        "repairRollout": "repairRolloutRule",
    }
    expanded = []
    for rule in rules:
        rule = {old.get(key, key): value for key, value in rule.items()}
        for body_ in rule.values():
            if isinstance(body_, dict) and "name" in body_:
                if "id" in body_:
                    raise ManifestError("an automation rule has both name and id")
                body_["id"] = body_.pop("name")
            if isinstance(body_, dict) and "wait" in body_:
                body_["wait"] = _wait_seconds(body_["wait"])
        for phase in rule.get("repairRolloutRule", {}).get("repairPhases", []):
            if "retry" in phase and phase["retry"] is None:
                phase["retry"] = {}
            retry = phase.get("retry") or {}
            if "wait" in retry:
                retry["wait"] = _wait_seconds(retry["wait"])
            mode = retry.get("backoffMode")
            if isinstance(mode, str) and not mode.startswith("BACKOFF_MODE_"):
                retry["backoffMode"] = f"BACKOFF_MODE_{mode}"
        expanded.append(rule)
    return expanded


def to_api(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(kind, the resource as the API's JSON) from one YAML document, as gcloud builds it."""
    manifest = copy.deepcopy(doc)
    api_version, kind = manifest.pop("apiVersion", None), manifest.pop("kind", None)
    if api_version not in API_VERSIONS:
        raise ManifestError(f"apiVersion {api_version!r} is not one gcloud deploy accepts")
    if kind not in MESSAGES:
        raise ManifestError(f"kind {kind!r}: this file holds only {sorted(MESSAGES)}")
    metadata = manifest.pop("metadata", None)
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
        raise ManifestError(f"{kind}: missing metadata.name")
    # gcloud validates metadata with additionalProperties: false
    extra = set(metadata) - {"name", "description", "annotations", "labels"}
    if extra:
        raise ManifestError(f"{kind} {metadata['name']}: unknown metadata fields {sorted(extra)}")
    manifest["name"] = _resource_name(kind, metadata["name"])
    for key in ("annotations", "labels", "description"):
        if key in metadata:
            manifest[key] = metadata[key]
    if isinstance(manifest.get("labels"), dict):
        manifest["labels"] = {_snake(k): v for k, v in manifest["labels"].items()}
    if kind == "Automation":
        if isinstance(manifest.get("selector"), list):  # the old `- target: {id: ...}` form
            manifest["selector"] = {"targets": [s["target"] for s in manifest["selector"]]}
        if "rules" in manifest:
            manifest["rules"] = _automation_rules(manifest["rules"])
    return kind, manifest


# --- strict parsing --------------------------------------------------------------------


def _behaviours(full_name: str) -> dict[str, str]:
    """Field name -> "Required" / "Output only" / "Optional", from the message class's docs."""
    node: Any = deploy_v1
    for part in full_name.removeprefix("google.cloud.deploy.v1.").split("."):
        node = getattr(node, part, None)
        if node is None:
            return {}
    found = re.findall(
        r"^\s+(\w+) \([^\n]*\):\n\s+(Required|Output only|Optional|Identifier)\.",
        node.__doc__ or "",
        re.M,
    )
    return dict(found)


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _check_fields(node: Any, desc: descriptor.Descriptor, path: str) -> Iterator[str]:
    """Keys that are not the JSON names, output-only fields set, required fields left out."""
    if not isinstance(node, dict):
        return
    by_json = {f.json_name: f for f in desc.fields}
    behaviours = _behaviours(desc.full_name)
    for key, value in node.items():
        field = by_json.get(key)
        where = f"{path}.{key}".lstrip(".")
        if field is None:
            yield f"{where}: not a field of {desc.name} (gcloud knows only the JSON names)"
            continue
        if behaviours.get(field.name) == "Output only" and field.name not in _SET_BY_GCLOUD:
            yield f"{where}: output only"
        if _is_map(field) or field.message_type is None:
            continue
        if not field.message_type.full_name.startswith("google.cloud.deploy."):
            continue  # Duration, Timestamp: strings in JSON
        items = value if field.is_repeated and isinstance(value, list) else [value]
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if field.is_repeated else where
            yield from _check_fields(item, field.message_type, at)
    for field in desc.fields:
        if behaviours.get(field.name) == "Required" and field.json_name not in node:
            yield f"{path or desc.name}: missing required {field.json_name}"


def parse(doc: dict[str, Any]) -> Any:
    """The ``deploy_v1`` message of one YAML document; :class:`ManifestError` if any field is
    unknown, misspelled, output only, or required and missing."""
    kind, manifest = to_api(doc)
    message = MESSAGES[kind]()
    try:
        json_format.ParseDict(manifest, message._pb, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ManifestError(f"{kind} {doc['metadata']['name']}: {exc}") from exc
    problems = list(_check_fields(manifest, message._pb.DESCRIPTOR, ""))
    if problems:
        raise ManifestError(f"{kind} {doc['metadata']['name']}: " + "; ".join(problems))
    return message


# --- the pipeline as Cloud Deploy runs it ----------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One phase of a target's rollouts and the jobs it runs."""

    id: str
    percentage: int
    jobs: tuple[str, ...]


@dataclass(frozen=True)
class Fleet:
    """The parsed documents: one pipeline, its targets, its automations."""

    pipeline: Any
    targets: dict[str, Any]
    automations: dict[str, Any]

    @classmethod
    def load(cls, docs: list[dict[str, Any]] | None = None) -> Fleet:
        pipelines, targets, automations = [], {}, {}
        for doc in documents() if docs is None else docs:
            message = parse(doc)
            short = message.name.rsplit("/", 1)[-1]
            if doc["kind"] == "DeliveryPipeline":
                pipelines.append(message)
            elif doc["kind"] == "Target":
                targets[short] = message
            else:
                automations[doc["metadata"]["name"]] = message
        (pipeline,) = pipelines
        return cls(pipeline, targets, automations)

    @property
    def pipeline_id(self) -> str:
        return str(self.pipeline.name.rsplit("/", 1)[-1])

    def stage_of(self, target_id: str) -> Any:
        """The stage that deploys to ``target_id``, itself or as a multi-target's child."""
        for stage in self.pipeline.serial_pipeline.stages:
            if stage.target_id == target_id:
                return stage
            parent = self.targets.get(stage.target_id)
            if parent is not None and target_id in parent.multi_target.target_ids:
                return stage
        raise KeyError(f"no stage deploys to {target_id}")

    def phases(self, target_id: str) -> list[Phase]:
        """The phases of a rollout to ``target_id`` (Cloud Deploy's names: ``canary-N``,
        then ``stable``) and each one's jobs."""
        strategy = self.stage_of(target_id).strategy
        if "canary" in strategy:
            canary = strategy.canary.canary_deployment
            pre = ("predeploy",) if "predeploy" in canary else ()
            post = ("postdeploy",) if "postdeploy" in canary else ()
            verify = ("verify",) if canary.verify else ()
            steps = [*canary.percentages, 100]
            return [
                Phase(
                    "stable" if p == 100 else f"canary-{p}",
                    p,
                    (*(pre if i == 0 else ()), "deploy", *verify, *(post if p == 100 else ())),
                )
                for i, p in enumerate(steps)
            ]
        standard = strategy.standard
        jobs = (
            *(("predeploy",) if "predeploy" in standard else ()),
            "deploy",
            *(("verify",) if standard.verify else ()),
            *(("postdeploy",) if "postdeploy" in standard else ()),
        )
        return [Phase("stable", 100, jobs)]
