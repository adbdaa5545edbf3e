"""Measurement files: what a probe shard writes and what ``deploy-guard judge`` merges.

``deploy-guard probe --shard K/N --measurements FILE`` runs shard K's share of every rule
(:mod:`deploy_guard.probes.shard`) and writes one JSON file: a versioned schema, the
policy's name and digest, the target (redacted), the shard, the rules as they ran (name,
kind, digest, attempts planned over all shards) and each rule's cumulative measurement
(counts, latency histograms, a few samples: :func:`deploy_guard.measurements.probe_to_dict`).
The file is replaced atomically (written beside it, then renamed), so a reader never sees
half of one, and a Cloud Storage volume receives it as one object.

:func:`combine` checks that a set of files belongs together (one policy, the one given to
the judge, one target, one N, no shard twice, the same rules) and merges each rule's
measurements (:func:`deploy_guard.probes.aggregate.merge`). A missing shard, or a shard
interrupted before its attempts finished, is a *gap*: its attempts count as not run, so the
rule can still fail on what the others saw, but the verdict can never be a pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_guard import __version__
from deploy_guard.errors import ConfigError
from deploy_guard.log import redact_data
from deploy_guard.measurements import ProbeMeasurement, probe_from_dict, probe_to_dict
from deploy_guard.policy.model import Policy, Rule
from deploy_guard.probes.aggregate import merge
from deploy_guard.probes.shard import MAX_SHARDS, Shard

#: The file's schema name and version: another version is refused, never guessed at.
SCHEMA = "deploy-guard/measurements"
VERSION = 1
#: Set by Cloud Run in each task of a job execution; names the run in ``{execution}``.
EXECUTION_ENV = "CLOUD_RUN_EXECUTION"
#: Largest measurement file read (a file holds counts, histograms and a few samples).
MAX_BYTES = 8 << 20


def digest(data: Any) -> str:
    """``sha256:<hex>`` of ``data`` as canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def policy_digest(policy: Policy) -> str:
    """What makes two loads of a policy the same policy (comments and layout aside)."""
    return digest(policy.model_dump(mode="json"))


def rule_digest(rule: Rule) -> str:
    """The rule as it ran (command-line overrides included)."""
    return digest(rule.model_dump(mode="json"))


@dataclass(frozen=True)
class RuleRun:
    """One rule as a shard ran it."""

    name: str
    kind: str
    digest: str
    #: Attempts over all shards (a shard's own share is its measurement's ``planned``).
    planned: int


@dataclass(frozen=True)
class ShardRecord:
    """One measurement file."""

    policy: str
    policy_digest: str
    target: str
    shard: Shard
    rules: tuple[RuleRun, ...]
    measurements: dict[str, ProbeMeasurement]
    #: The signal that stopped the run before its attempts finished, if one did.
    interrupted: str | None = None
    started_at: str = ""
    finished_at: str = ""
    #: The Cloud Run job execution that ran it (``CLOUD_RUN_EXECUTION``), if any.
    execution: str | None = None
    version: str = __version__
    #: Where it was read from (not written).
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The file's content, redacted (samples were already; the target's query too)."""
        data = {
            "schema": SCHEMA,
            "version": VERSION,
            "deploy_guard": self.version,
            "policy": {"name": self.policy, "digest": self.policy_digest},
            "target": self.target,
            "shard": {"index": self.shard.index, "count": self.shard.count},
            "execution": self.execution,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "interrupted": self.interrupted,
            "rules": [
                {"name": r.name, "kind": r.kind, "digest": r.digest, "planned": r.planned}
                for r in self.rules
            ],
            "measurements": [probe_to_dict(self.measurements[r.name]) for r in self.rules],
        }
        return dict(redact_data(data))


def destination(template: str, shard: Shard, environ: Mapping[str, str] | None = None) -> Path:
    """The file to write: ``template`` with ``{shard}``, ``{shards}`` and ``{execution}`` filled.

    ConfigError (exit 2, before anything runs) for a ``gs://`` URL or an ``{execution}``
    outside a Cloud Run job.
    """
    env = os.environ if environ is None else environ
    if template.startswith("gs://"):
        raise ConfigError(
            f"--measurements {template}: write to a file; to land in Cloud Storage, mount the "
            "bucket as a Cloud Storage volume and write under its mount path "
            "(deploy/shards/job.yaml), or copy the file with `gcloud storage cp`"
        )
    path = template.replace("{shard}", str(shard.index)).replace("{shards}", str(shard.count))
    if "{execution}" in path:
        execution = env.get(EXECUTION_ENV)
        if not execution:
            raise ConfigError(
                f"--measurements {template}: {{execution}} is {EXECUTION_ENV}, which Cloud Run "
                "sets in each task of a job; it is not set here"
            )
        path = path.replace("{execution}", execution)
    return Path(path)


def prepare(path: Path) -> None:
    """Make the file's folder now, so a path that cannot be written fails before probing."""
    if path.is_dir():
        raise ConfigError(f"--measurements {path}: is a folder; name a file in it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--measurements {path}: cannot create its folder: {exc}") from None


def write(path: Path, record: ShardRecord) -> None:
    """Replace ``path`` with ``record`` atomically (a temporary file beside it, renamed)."""
    text = json.dumps(record.to_dict(), separators=(",", ":")) + "\n"  # `jq .` shows it
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read(path: Path) -> ShardRecord:
    """One measurement file; ConfigError (exit 2) naming the file and what is wrong."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: over {MAX_BYTES >> 20} MiB: not a measurement file")
    try:
        return parse(json.loads(raw), source=str(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a deploy-guard measurement file: {exc}") from None


def parse(data: Any, source: str = "") -> ShardRecord:
    """A measurement file's content; ValueError naming what is wrong."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f'no "schema": "{SCHEMA}"')
    if data.get("version") != VERSION:
        raise ValueError(
            f"schema version {data.get('version')!r}; this deploy-guard reads version {VERSION}"
        )
    policy, shard = _obj(data.get("policy"), "policy"), _obj(data.get("shard"), "shard")
    index, count = _count(shard.get("index"), "shard index"), _count(shard.get("count"), "count")
    if not 0 <= index < count <= MAX_SHARDS:
        raise ValueError(f"shard {index}/{count} is not K/N with 0 <= K < N")
    rules = tuple(_rule_run(r) for r in _list(data.get("rules"), "rules"))
    measured = [probe_from_dict(m) for m in _list(data.get("measurements"), "measurements")]
    by_name = {m.rule: m for m in measured}
    if [r.name for r in rules] != [m.rule for m in measured] or len(by_name) != len(rules):
        raise ValueError("its measurements are not one per rule, in the rules' order")
    for r in rules:
        if by_name[r.name].kind != r.kind:
            raise ValueError(f"rule {r.name}: measured as {by_name[r.name].kind}, not {r.kind}")
    return ShardRecord(
        policy=_str(policy.get("name"), "policy name"),
        policy_digest=_str(policy.get("digest"), "policy digest"),
        target=_str(data.get("target"), "target"),
        shard=Shard(index, count),
        rules=rules,
        measurements=by_name,
        interrupted=_opt_str(data.get("interrupted"), "interrupted"),
        started_at=_str(data.get("started_at", ""), "started_at"),
        finished_at=_str(data.get("finished_at", ""), "finished_at"),
        execution=_opt_str(data.get("execution"), "execution"),
        version=_str(data.get("deploy_guard", ""), "deploy_guard"),
        source=source,
    )


def _rule_run(data: Any) -> RuleRun:
    d = _obj(data, "rule")
    return RuleRun(
        name=_str(d.get("name"), "rule name"),
        kind=_str(d.get("kind"), "rule kind"),
        digest=_str(d.get("digest"), "rule digest"),
        planned=_count(d.get("planned"), "rule planned"),
    )


def _obj(x: Any, what: str) -> dict[str, Any]:
    if not isinstance(x, dict):
        raise ValueError(f"{what} is not an object")
    return x


def _list(x: Any, what: str) -> list[Any]:
    if not isinstance(x, list):
        raise ValueError(f"{what} is not a list")
    return x


def _count(x: Any, what: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or x < 0:
        raise ValueError(f"{what} {x!r} is not a count")
    return x


def _str(x: Any, what: str) -> str:
    if not isinstance(x, str):
        raise ValueError(f"{what} {x!r} is not a string")
    return x


def _opt_str(x: Any, what: str) -> str | None:
    return None if x is None else _str(x, what)


# --- combining shards ---------------------------------------------------------------------


@dataclass(frozen=True)
class Combined:
    """Shards merged: one measurement per rule, and what is missing from them."""

    rules: tuple[RuleRun, ...]
    measurements: dict[str, ProbeMeasurement]
    count: int
    present: tuple[int, ...]
    missing: tuple[int, ...]
    #: Shards stopped before their attempts finished: "1/3 (SIGTERM)".
    interrupted: tuple[str, ...]
    target: str

    def gaps(self) -> tuple[str, ...]:
        """Why the evidence is incomplete, in words (empty: every shard ran to its end)."""
        out = []
        if self.missing:
            listed = ", ".join(f"{k}/{self.count}" for k in self.missing)
            out.append(
                f"shard{'s' if len(self.missing) > 1 else ''} {listed} missing: "
                "their attempts count as not run"
            )
        if self.interrupted:
            out.append(
                f"shard{'s' if len(self.interrupted) > 1 else ''} "
                f"{', '.join(self.interrupted)} stopped before their attempts finished"
            )
        return tuple(out)


def combine(records: Sequence[ShardRecord], policy: Policy) -> Combined:
    """Merge shards of one run judged by ``policy``; ConfigError (exit 2) when they do not
    belong together (another policy or target, another N, a shard twice, other rules)."""
    if not records:
        raise ConfigError("no measurement files given")
    first = records[0]
    expected = policy_digest(policy)
    for rec in records:
        if rec.policy_digest != expected:
            raise ConfigError(
                f"{_src(rec)}: ran policy {rec.policy} ({rec.policy_digest[:19]}), not "
                f"{policy.name} as --policy loads it ({expected[:19]}): judge shards with the "
                "policy file they ran" + _versions(rec)
            )
        differs = _difference(rec, first)
        if differs:
            raise ConfigError(f"{_src(rec)} {differs}: these shards are not one run")
    by_index: dict[int, ShardRecord] = {}
    for rec in records:
        twin = by_index.get(rec.shard.index)
        if twin is not None:
            raise ConfigError(
                f"shard {rec.shard} given twice ({_src(twin)} and {_src(rec)}): its attempts "
                "would count twice"
            )
        by_index[rec.shard.index] = rec
    count = first.shard.count
    missing = tuple(k for k in range(count) if k not in by_index)
    for run in first.rules:
        share = sum(rec.measurements[run.name].planned for rec in records)
        if share > run.planned or (not missing and share != run.planned):
            raise ConfigError(
                f"rule {run.name}: the shards planned {share} attempts in all, not "
                f"{run.planned}: they do not split one run"
            )
    interrupted = tuple(
        f"{rec.shard}" + (f" ({rec.interrupted})" if rec.interrupted else "")
        for rec in sorted(records, key=lambda r: r.shard.index)
        if rec.interrupted or not all(m.complete for m in rec.measurements.values())
    )
    ordered = [by_index[k] for k in sorted(by_index)]
    merged = {
        run.name: merge(
            [rec.measurements[run.name] for rec in ordered],
            planned=run.planned,
            complete=not missing and all(rec.measurements[run.name].complete for rec in ordered),
        )
        for run in first.rules
    }
    return Combined(
        rules=first.rules,
        measurements=merged,
        count=count,
        present=tuple(sorted(by_index)),
        missing=missing,
        interrupted=interrupted,
        target=first.target,
    )


def _difference(rec: ShardRecord, first: ShardRecord) -> str:
    """How ``rec`` differs from the first file in what makes shards one run ("" if not)."""
    if rec.target != first.target:
        return f"probed {rec.target}, {_src(first)} {first.target}"
    if rec.shard.count != first.shard.count:
        return f"is shard {rec.shard}, {_src(first)} {first.shard}"
    if rec.rules != first.rules:
        return f"ran other rules or overrides than {_src(first)}"
    if rec.execution and first.execution and rec.execution != first.execution:
        return f"comes from job execution {rec.execution}, {_src(first)} {first.execution}"
    return ""


def _src(rec: ShardRecord) -> str:
    return rec.source or f"shard {rec.shard}"


def _versions(rec: ShardRecord) -> str:
    if rec.version and rec.version != __version__:
        return f" (the shard ran deploy-guard {rec.version}; this is {__version__})"
    return ""
