"""``deploy-guard probe --shard K/N --measurements FILE``: one shard's run, written for the judge.

Kept apart from :mod:`deploy_guard.commands.probe` so that the probe command only gains two
flags and a call. A shard runs its share of every rule (:mod:`deploy_guard.probes.shard`),
shows its own results, writes its measurements (:mod:`deploy_guard.shards`) and gives no
verdict: its exit code says whether the measurements were written (0), the run was
interrupted (3, the partial measurements written all the same) or the file could not be
written (4). Without ``--shard``, ``--measurements`` writes an unsharded run's measurements
(shard 0/1) beside its usual verdict, which ``deploy-guard judge`` re-judges alone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

from deploy_guard import shards
from deploy_guard.errors import ConfigError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import redact_text
from deploy_guard.measurements import ProbeMeasurement
from deploy_guard.policy.model import Policy, Rule
from deploy_guard.probes.runner import planned_attempts
from deploy_guard.probes.shard import WHOLE, Shard, idle_note, parse_shard
from deploy_guard.probes.target import Target

SHARD_HELP = (
    "Run shard K's share of every rule's sessions and requests (K from 0, as "
    "CLOUD_RUN_TASK_INDEX); auto: Cloud Run's CLOUD_RUN_TASK_INDEX/CLOUD_RUN_TASK_COUNT. "
    "Writes --measurements and gives no verdict: deploy-guard judge merges the N shards."
)
MEASUREMENTS_HELP = (
    "Write the run's measurements (JSON) to FILE, atomically, for deploy-guard judge. "
    "{shard}, {shards} and {execution} (CLOUD_RUN_EXECUTION) are filled in."
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ShardOutput:
    """What ``--shard`` and ``--measurements`` ask of one probe run."""

    shard: Shard = WHOLE
    path: Path | None = None
    started_at: str = field(default_factory=_now)

    @classmethod
    def from_flags(cls, shard: str | None, measurements: str | None) -> ShardOutput:
        """Parse and check the flags before anything runs; ConfigError (exit 2) otherwise."""
        if shard is not None and measurements is None:
            raise ConfigError(
                "--shard needs --measurements FILE: a shard gives no verdict of its own; "
                "deploy-guard judge merges the shards' files into one"
            )
        chosen = parse_shard(shard) if shard is not None else WHOLE
        if measurements is None:
            return cls(chosen)
        path = shards.destination(measurements, chosen)
        shards.prepare(path)
        return cls(chosen, path)

    @property
    def sharded(self) -> bool:
        return self.shard != WHOLE

    def notes(self, rules: Sequence[Rule]) -> list[str]:
        """Said before probing: this shard's share, and rules it runs nothing of."""
        if not self.sharded:
            return []
        out = []
        for rule in rules:
            spec = rule.websocket or rule.http
            total = planned_attempts(rule)
            workers = max(1, min(int(spec.concurrency), total)) if spec is not None else 1
            note = idle_note(rule.name, workers, self.shard)
            if note is not None:
                out.append(note)
        shares = ", ".join(f"{r.name} {planned_attempts(r, self.shard)}" for r in rules)
        return [f"shard {self.shard}: this share of the attempts: {shares}", *out]

    def record(
        self,
        policy: Policy,
        rules: Sequence[Rule],
        target: Target,
        last: dict[str, ProbeMeasurement],
        interrupted: str | None,
    ) -> shards.ShardRecord:
        """The file's content: each rule's last snapshot (an empty, incomplete one if none)."""
        measured = {r.name: last.get(r.name) or self._nothing(r) for r in rules}
        return shards.ShardRecord(
            policy=policy.name,
            policy_digest=shards.policy_digest(policy),
            target=redact_text(target.base_url),
            shard=self.shard,
            rules=tuple(
                shards.RuleRun(r.name, r.kind, shards.rule_digest(r), planned_attempts(r))
                for r in rules
            ),
            measurements=measured,
            interrupted=interrupted,
            started_at=self.started_at,
            finished_at=_now(),
            execution=os.environ.get(shards.EXECUTION_ENV) or None,
        )

    def _nothing(self, rule: Rule) -> ProbeMeasurement:
        """A rule that reported nothing before the run stopped: none done, not complete."""
        planned = planned_attempts(rule, self.shard)
        return ProbeMeasurement(rule.name, rule.kind, planned=planned, done=0, succeeded=0)

    def finish(
        self,
        console: Console,
        record: shards.ShardRecord,
        verdict_code: ExitCode | None,
    ) -> ExitCode:
        """Write the file and say so; the exit code (``verdict_code``: an unsharded run's)."""
        assert self.path is not None
        try:
            shards.write(self.path, record)
        except OSError as exc:
            click.echo(
                f"error: could not write the measurements to {self.path}: {exc.strerror or exc}",
                err=True,
            )
            return ExitCode.ACTION_FAILED
        console.print(
            f"measurements of shard {self.shard} written to {self.path}",
            highlight=False,
            markup=False,
        )
        if verdict_code is not None:
            return verdict_code
        if record.interrupted is not None:
            return ExitCode.INCONCLUSIVE
        console.print(
            f"shard {self.shard} gives no verdict: merge the {self.shard.count} shards' files "
            "with deploy-guard judge --policy POLICY FILE...",
            highlight=False,
            markup=False,
        )
        return ExitCode.PASS
