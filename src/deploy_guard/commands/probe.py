"""``deploy-guard probe``: run a policy's HTTP and WebSocket rules against any URL.

This is how a team develops a policy before wiring it into a pipeline: point
it at a local server or a staging URL, read which sessions failed and why,
adjust, repeat. Only ``http`` and ``websocket`` rules run (logs and metrics
need a Cloud Run revision); the verdict covers just those rules, with the same
exit codes as ``check``: 0 pass or warn, 1 fail, 2 usage, 3 inconclusive.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence

import click
from rich.console import Console
from rich.table import Table

from deploy_guard.errors import ConfigError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.judge import Judge, Verdict
from deploy_guard.log import redact_text
from deploy_guard.measurements import ProbeMeasurement
from deploy_guard.policy.load import load_file
from deploy_guard.policy.model import Policy, Rule
from deploy_guard.probes.auth import TokenChoice, resolve_token
from deploy_guard.probes.runner import is_probe, run_rules
from deploy_guard.probes.target import Target

_EXIT = {"pass": ExitCode.PASS, "warn": ExitCode.PASS, "fail": ExitCode.FAIL}


def select_rules(policy: Policy, names: Sequence[str]) -> list[Rule]:
    """The probe rules to run: all of them, or those named (each must exist and be a probe)."""
    if not names:
        rules = [r for r in policy.rules if is_probe(r)]
        if not rules:
            raise ConfigError(f"policy {policy.name} has no http or websocket rules to probe")
        return rules
    chosen = []
    for name in names:
        try:
            rule = policy.rule(name)
        except KeyError:
            known = ", ".join(r.name for r in policy.rules)
            raise ConfigError(
                f"policy {policy.name} has no rule {name!r} (it has: {known})"
            ) from None
        if not is_probe(rule):
            raise ConfigError(f"rule {name!r} is a {rule.kind} rule; probe runs http and websocket")
        chosen.append(rule)
    return chosen


class _Judging:
    """Feeds the judge as snapshots arrive: the one place that calls ``deploy_guard.judge``."""

    def __init__(self, policy: Policy) -> None:
        self._judge = Judge(policy)

    def observe(self, m: ProbeMeasurement) -> bool:
        """Record a snapshot; True once the verdict can no longer change (stop early)."""
        self._judge.observe(m)
        return self._judge.early_verdict() is not None

    def verdict(self) -> Verdict:
        return self._judge.verdict()


#: Seconds between progress lines per rule while nothing new fails.
PROGRESS_EVERY = 2.0


async def run_probe(
    policy: Policy, rules: Sequence[Rule], target: Target, console: Console
) -> tuple[dict[str, ProbeMeasurement], Verdict]:
    """Run ``rules``, showing progress; return the last snapshot per rule and the verdict.

    A progress line is printed per rule when it completes, when a new failure
    cause appears, and otherwise every :data:`PROGRESS_EVERY` seconds: plain
    lines, so the output reads the same in a terminal and in a CI log.
    """
    judging = _Judging(policy.model_copy(update={"rules": list(rules)}))
    last: dict[str, ProbeMeasurement] = {}
    shown: dict[str, tuple[float, frozenset[str]]] = {}
    loop = asyncio.get_running_loop()
    async with contextlib.aclosing(run_rules(rules, target)) as stream:
        async for m in stream:
            last[m.rule] = m
            at, causes = shown.get(m.rule, (loop.time(), frozenset()))
            new_causes = frozenset(m.failures_by_cause) - causes
            if m.complete or new_causes or loop.time() - at >= PROGRESS_EVERY:
                shown[m.rule] = (loop.time(), causes | new_causes)
                console.print(f"  {_progress_line(m)}", highlight=False, markup=False)
            if judging.observe(m):
                console.print("  stopping early: the verdict can no longer change", markup=False)
                break
    return last, judging.verdict()


def _progress_line(m: ProbeMeasurement) -> str:
    causes = ", ".join(f"{c} {n}" for c, n in sorted(m.failures_by_cause.items()))
    line = f"{m.rule}: {m.done}/{m.planned} run, {m.succeeded} ok"
    line += f", failed: {causes}" if causes else ""
    return line + (" (finished)" if m.complete else "")


def _latency(m: ProbeMeasurement) -> str:
    total = m.latencies.get("total") or {}
    if not total:
        return "-"
    return f"{total['p50'] * 1000:.0f} / {total['p95'] * 1000:.0f} ms"


def render(
    console: Console, rules: Sequence[Rule], last: dict[str, ProbeMeasurement], verdict: Verdict
) -> None:
    """Results per rule, a few failure samples with transcripts, then the verdict."""
    table = Table(title="Probe results", title_justify="left")
    for col in ("rule", "kind", "done", "ok", "failures", "close codes", "p50 / p95"):
        table.add_column(col)
    for rule in rules:
        m = last.get(rule.name)
        if m is None:
            table.add_row(rule.name, rule.kind, "0", "0", "not run", "", "-")
            continue
        causes = ", ".join(f"{c}: {n}" for c, n in sorted(m.failures_by_cause.items()))
        codes = ", ".join(f"{c}: {n}" for c, n in m.close_codes.items())
        table.add_row(
            m.rule,
            m.kind,
            f"{m.done}/{m.planned}",
            str(m.succeeded),
            causes or "-",
            codes or "-",
            _latency(m),
        )
    console.print(table)
    for m in last.values():
        for sample in m.samples[:3]:
            who = f" {sample.user} session {sample.session}" if sample.user else ""
            console.print(
                f"[red]x[/] {m.rule}{who}: {sample.cause}: {redact_text(sample.detail)}",
                highlight=False,
            )
            for entry in sample.transcript[-8:]:
                data = redact_text(str(entry.get("data")))
                console.print(
                    f"    {entry.get('t', 0):>7.3f}s {entry.get('dir', ''):<5} {data}",
                    highlight=False,
                    markup=False,
                )
    style = {"pass": "green", "warn": "yellow", "fail": "red"}.get(verdict.status, "magenta")
    console.print(f"verdict: [bold {style}]{verdict.status.upper()}[/]")
    for reason in verdict.reasons:
        console.print(f"  - {redact_text(reason)}", highlight=False, markup=False)


@click.command("probe")
@click.option(
    "--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Policy file."
)
@click.option("--url", required=True, help="Base URL to probe, e.g. http://127.0.0.1:8080.")
@click.option("--rule", "rule_names", multiple=True, help="Run only this rule (repeatable).")
@click.option("--token-env", help="Environment variable holding a bearer token.")
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding a bearer token.")
@click.option("--no-id-token", is_flag=True, help="Never mint a Google ID token.")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
def probe(
    policy_path: str,
    url: str,
    rule_names: tuple[str, ...],
    token_env: str | None,
    token_file: str | None,
    no_id_token: bool,
    insecure: bool,
) -> None:
    """Run the http and websocket rules of a policy against URL and judge them.

    \b
    Example:
      deploy-guard probe --policy policies/chat-agent.yaml --url http://127.0.0.1:8080
    """
    # Wide enough for the table when piped (CI logs); a terminal uses its own width.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    try:
        policy = load_file(policy_path)
        rules = select_rules(policy, rule_names)
        choice = TokenChoice(token_env=token_env, token_file=token_file, id_token=not no_id_token)
        target = Target(url, verify_tls=not insecure)
        auth = policy.auth
        token = asyncio.run(
            resolve_token(
                choice,
                url=target.audience,
                policy_token_env=auth.token_env,
                policy_token_file=auth.token_file,
                policy_id_token=auth.id_token,
                policy_audience=auth.audience,
            )
        )
        target = Target(url, verify_tls=not insecure, token=token)
    except ConfigError as exc:
        click.echo(f"error: {redact_text(str(exc))}", err=True)
        raise SystemExit(int(exc.exit_code)) from None
    names = ", ".join(r.name for r in rules)
    console.print(f"probing {redact_text(url)} with {policy.name}: {names}", highlight=False)
    last, verdict = asyncio.run(run_probe(policy, rules, target, console))
    render(console, rules, last, verdict)
    raise SystemExit(int(_EXIT.get(verdict.status, ExitCode.INCONCLUSIVE)))
