"""``deploy-guard judge``: one verdict from the measurement files of N probe shards.

The shards of one run (``deploy-guard probe --shard K/N --measurements FILE``, typically the
tasks of one Cloud Run job: docs/shards.md) each hold counts, latency histograms and a few
samples per rule. Merged (:func:`deploy_guard.shards.combine`), they are what one process
running every shard's attempts would have measured, so the verdict has the reasons and
counts a single run gives, and is printed the way ``probe`` prints its own.

Files that do not belong together are refused (exit 2): another policy than ``--policy``,
another target, another N, a shard given twice, other rules. A missing shard, or one stopped
before its attempts finished, leaves its attempts as not run: the rules can still fail on
what the other shards saw, but missing evidence is never a pass, so the verdict is then
``fail`` or ``inconclusive`` (exit 1 or 3).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from deploy_guard import shards
from deploy_guard.errors import ConfigError
from deploy_guard.judge import Verdict, evaluate
from deploy_guard.log import allow_query_params, redact_text
from deploy_guard.policy.load import load_file

#: What a verdict becomes when shards are missing or were cut short.
NEVER_A_PASS = "missing evidence is never a pass"


def measurement_files(paths: Sequence[str]) -> list[Path]:
    """The files named, a folder standing for the ``*.json`` files in it (sorted)."""
    out: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if p.is_file())
            if not found:
                raise ConfigError(f"{path}: a folder with no .json measurement files")
            out.extend(found)
        else:
            out.append(path)
    return out


def with_gaps(verdict: Verdict, gaps: Sequence[str]) -> Verdict:
    """The verdict knowing that shards are missing or incomplete: never a pass.

    A failure stands (the shards present already break a limit that more attempts could
    only break further), with the gaps named after its reasons; a pass or a warning
    becomes inconclusive, with the gaps as its first reasons.
    """
    if not gaps:
        return verdict
    if verdict.status in ("pass", "warn"):
        return replace(
            verdict,
            status="inconclusive",
            action="hold",
            reasons=(*gaps, NEVER_A_PASS, *verdict.reasons),
        )
    return replace(verdict, reasons=(*verdict.reasons, *gaps))


@click.command("judge")
@click.option(
    "--policy",
    "policy_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The policy file the shards ran.",
)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def judge(policy_path: str, files: tuple[str, ...]) -> None:
    """Merge probe shards' measurement files into one verdict.

    Each FILE is what `deploy-guard probe --shard K/N --measurements FILE`
    wrote (a folder stands for the .json files in it). The merged counts and
    latency percentiles are those of one run of all the shards' attempts, so
    the verdict gives the reasons and counts a single run would; results,
    samples and the verdict are printed as probe prints them.

    \b
    Exit codes (as for check): 0 pass or warn, 1 fail, 2 the files do not
    belong together (another policy, target or shard count, a shard twice)
    or cannot be read, 3 inconclusive (too few attempts, or a shard missing
    or stopped early: missing evidence is never a pass).

    \b
    Examples:
      deploy-guard probe --policy chat.yaml --url URL --shard 0/3 --measurements s0.json
      ... (shards 1/3 and 2/3 elsewhere, at the same time)
      deploy-guard judge --policy chat.yaml s0.json s1.json s2.json
      deploy-guard judge --policy chat.yaml ./shards/
    """
    from deploy_guard.commands import terminal_output
    from deploy_guard.commands.probe import render

    terminal_output()
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    try:
        policy = load_file(policy_path)
        allow_query_params(policy.auth.safe_query_params)
        records = [shards.read(path) for path in measurement_files(files)]
        combined = shards.combine(records, policy)
    except ConfigError as exc:
        click.echo(f"error: {redact_text(str(exc))}", err=True)
        raise SystemExit(int(exc.exit_code)) from None
    rules = [policy.rule(run.name) for run in combined.rules]
    present = ", ".join(f"{k}/{combined.count}" for k in combined.present)
    console.print(
        f"judging shard{'s' if len(combined.present) > 1 else ''} {present} of {policy.name} "
        f"against {combined.target}: {', '.join(r.name for r in rules)}",
        highlight=False,
        markup=False,
    )
    judged = policy.model_copy(update={"rules": rules})
    verdict = with_gaps(evaluate(judged, combined.measurements.values()), combined.gaps())
    raise SystemExit(int(render(console, rules, combined.measurements, verdict)))
