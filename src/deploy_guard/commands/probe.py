"""``deploy-guard probe``: run a policy's HTTP and WebSocket rules against any URL.

This is how a team develops a policy before wiring it into a pipeline: point
it at a local server or a staging URL, read which sessions failed and why,
adjust, repeat. Only ``http`` and ``websocket`` rules run (logs and metrics
need a Cloud Run revision); the verdict covers just those rules, with the same
exit codes as ``check``: 0 pass or warn, 1 fail, 2 usage, 3 inconclusive or
interrupted (SIGINT/SIGTERM cancel the probes, which close their connections,
and the results so far are printed).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from deploy_guard import signals
from deploy_guard.commands import probe_shard
from deploy_guard.commands.load_flags import LoadFlags, apply_load_flags, load_options
from deploy_guard.errors import ConfigError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.judge import Judge, Verdict
from deploy_guard.log import allow_query_params, redact_text
from deploy_guard.measurements import ProbeMeasurement
from deploy_guard.policy.load import load_file
from deploy_guard.policy.model import Policy, Rule
from deploy_guard.policy.pacing import Pacing
from deploy_guard.policy.units import format_duration
from deploy_guard.probes.auth import TokenChoice, resolve_token
from deploy_guard.probes.fdlimit import check_fds, raise_fd_limit
from deploy_guard.probes.runner import is_probe, planned_attempts, run_rules
from deploy_guard.probes.shard import WHOLE, Shard, parse_shard
from deploy_guard.probes.target import Target, check_env_headers

_EXIT = {"pass": ExitCode.PASS, "warn": ExitCode.PASS, "fail": ExitCode.FAIL}
_MEANING = {
    ExitCode.PASS: "these rules pass",
    ExitCode.FAIL: "a fail rule failed",
    ExitCode.INCONCLUSIVE: "not enough evidence to decide",
}


def exit_code(verdict: Verdict) -> ExitCode:
    """The same codes as ``check``: 0 pass or warn, 1 fail, 3 inconclusive."""
    return _EXIT.get(verdict.status, ExitCode.INCONCLUSIVE)


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
    """Feeds the judge as snapshots arrive: the one place that calls ``deploy_guard.judge``.

    A shard's snapshots are judged as part of the whole run (the rule's attempts over all
    shards, never complete), so a shard stops early only when its own failures already fail
    the rule for every shard together; its verdict is otherwise ``deploy-guard judge``'s.
    """

    def __init__(self, policy: Policy, shard: Shard = WHOLE) -> None:
        self._judge = Judge(policy)
        self._whole = {} if shard == WHOLE else {r.name: planned_attempts(r) for r in policy.rules}

    def observe(self, m: ProbeMeasurement) -> bool:
        """Record a snapshot; True once the verdict can no longer change (stop early)."""
        if self._whole:
            m = replace(m, planned=self._whole[m.rule], complete=False)
        self._judge.observe(m)
        return self._judge.early_verdict() is not None

    def verdict(self) -> Verdict:
        return self._judge.verdict()


#: Seconds between progress lines per rule while nothing new fails.
PROGRESS_EVERY = 2.0
#: Seconds between "still running" lines for a rule that has nothing new to show
#: (a 60 s hold yields no result until it ends).
HEARTBEAT_EVERY = 5.0


async def run_probe(
    policy: Policy,
    rules: Sequence[Rule],
    target: Target,
    console: Console,
    last: dict[str, ProbeMeasurement] | None = None,
    shard: Shard = WHOLE,
) -> tuple[dict[str, ProbeMeasurement], Verdict]:
    """Run ``rules``, showing progress; return the last snapshot per rule and the verdict.

    ``last`` (filled as snapshots arrive) lets a caller that cancels the run
    still show what it had.

    A progress line is printed per rule when it completes, when a new failure
    cause appears, otherwise every :data:`PROGRESS_EVERY` seconds while results
    arrive, and every :data:`HEARTBEAT_EVERY` seconds while sessions are open
    but none has ended (a long hold). Plain lines, so the output reads the same
    in a terminal and in a CI log.
    """
    # Printed from inside the loop, once SIGINT/SIGTERM cancel this task cleanly.
    names = ", ".join(r.name for r in rules)
    console.print(
        f"probing {redact_text(target.base_url)} with {policy.name}: {names}",
        highlight=False,
        markup=False,  # "[redacted]" is not a style tag
    )
    judging = _Judging(policy.model_copy(update={"rules": list(rules)}), shard)
    last = {} if last is None else last
    loop = asyncio.get_running_loop()
    start = loop.time()
    shown: dict[str, tuple[float, frozenset[str]]] = {r.name: (start, frozenset()) for r in rules}

    def show(rule: Rule, m: ProbeMeasurement | None) -> None:
        causes = frozenset(m.failures_by_cause) if m is not None else frozenset()
        shown[rule.name] = (loop.time(), shown[rule.name][1] | causes)
        line = progress_line(rule, m, loop.time() - start, shard)
        console.print(f"  {line}", highlight=False, markup=False)

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY / 5)
            for rule in rules:
                m = last.get(rule.name)
                quiet = loop.time() - shown[rule.name][0] >= HEARTBEAT_EVERY
                if quiet and (m is None or not m.complete):
                    show(rule, m)

    by_name = {r.name: r for r in rules}
    stopped_early = False
    ticker = loop.create_task(heartbeat())
    try:
        async with contextlib.aclosing(run_rules(rules, target, shard=shard)) as stream:
            async for m in stream:
                last[m.rule] = m
                at, causes = shown[m.rule]
                new_causes = frozenset(m.failures_by_cause) - causes
                if m.complete or new_causes or loop.time() - at >= PROGRESS_EVERY:
                    show(by_name[m.rule], m)
                if judging.observe(m):
                    stopped_early = any(
                        r.name not in last or not last[r.name].complete for r in rules
                    )
                    break
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    if stopped_early:
        console.print(
            "  stopped early: the verdict can no longer change (fail_fast); "
            "the remaining sessions and requests were cancelled",
            highlight=False,
            markup=False,
        )
    return last, judging.verdict()


async def probe_until_signalled(
    policy: Policy, rules: Sequence[Rule], target: Target, console: Console, shard: Shard = WHOLE
) -> tuple[dict[str, ProbeMeasurement], Verdict | None, str | None]:
    """:func:`run_probe`, stopped by the first SIGINT or SIGTERM as ``check`` is.

    Returns the last snapshot per rule, the verdict (None when interrupted) and
    the name of the signal that interrupted the run (None when it ran to the
    end). The cancellation closes every probe connection before this returns.
    """
    from deploy_guard.commands import cancelled_by_signals

    last: dict[str, ProbeMeasurement] = {}
    async with cancelled_by_signals() as caught:
        try:
            _, verdict = await run_probe(policy, rules, target, console, last, shard)
        except asyncio.CancelledError:
            if not caught:
                raise
    if caught:  # also when a clean-up step absorbed the cancellation
        return last, None, caught[0]
    return last, verdict, None


def _unit(rule: Rule, n: int) -> str:
    word = "session" if rule.kind == "websocket" else "request"
    return word if n == 1 else word + "s"


def _open_now(
    rule: Rule, m: ProbeMeasurement | None, shard: Shard = WHOLE, elapsed: float = 0.0
) -> int:
    """Attempts running right now: one per worker on the ramp while attempts remain."""
    planned = planned_attempts(rule, shard)
    done = m.done if m is not None else 0
    if m is not None and m.complete:
        return 0
    if rule.websocket is not None:
        workers = rule.websocket.concurrency
    elif rule.http is not None:
        workers = rule.http.concurrency
    else:  # pragma: no cover - select_rules keeps only probes
        workers = 1
    if shard != WHOLE:
        workers = len(shard.workers(max(1, min(workers, planned_attempts(rule)))))
    block = rule.websocket if rule.websocket is not None else rule.http
    if block is not None:
        workers = min(workers, Pacing.of(block).allowance(elapsed))
    return max(0, min(workers, planned - done))


def progress_line(
    rule: Rule, m: ProbeMeasurement | None, elapsed: float, shard: Shard = WHOLE
) -> str:
    """One rule's progress: ``chat-hold: 0 of 5 sessions done, 5 open (each held 60s) [12s]``."""
    planned = planned_attempts(rule, shard)
    done = m.done if m is not None else 0
    line = f"{rule.name}: {done} of {planned} {_unit(rule, planned)} done"
    if m is not None and done:
        line += f", {m.succeeded} ok"
        if m.failures_by_cause:
            line += ", failed: " + ", ".join(
                f"{c} {n}" for c, n in sorted(m.failures_by_cause.items())
            )
    open_now = _open_now(rule, m, shard, elapsed)
    if open_now:
        line += f", {open_now} open"
        hold = rule.websocket.hold if rule.websocket is not None else 0.0
        if hold:
            line += f" (each held {format_duration(hold)})"
    if m is not None and m.complete:
        line += ", finished"
    return f"{line} [{elapsed:.0f}s]"


def _latency(m: ProbeMeasurement) -> str:
    total = m.latencies.get("total") or {}
    if not total:
        return "-"
    if total["p95"] >= 10:  # a held session: "60072 ms" reads worse than "60.1 s"
        return f"{total['p50']:.1f} / {total['p95']:.1f} s"
    return f"{total['p50'] * 1000:.0f} / {total['p95'] * 1000:.0f} ms"


def render(
    console: Console,
    rules: Sequence[Rule],
    last: dict[str, ProbeMeasurement],
    verdict: Verdict | None,
    interrupted: str | None = None,
) -> ExitCode:
    """Results per rule, a few failure samples with transcripts, then the verdict.

    An ``interrupted`` run (the signal's name) shows what it had and decides
    nothing: exit 3, as ``check`` does. Returns the exit code.
    """
    render_results(console, rules, last)
    return render_verdict(console, verdict, interrupted)


def render_results(
    console: Console, rules: Sequence[Rule], last: dict[str, ProbeMeasurement]
) -> None:
    """The results table, then up to three failed attempts per rule with their transcripts."""
    table = Table(title="Probe results", title_justify="left", box=box.SIMPLE_HEAD)
    # Narrow terminals wrap the failure columns, never a rule name or a number.
    for col in ("rule", "done", "ok", "failures", "close codes", "p50 / p95"):
        table.add_column(col, no_wrap=col not in ("failures", "close codes"))
    for rule in rules:
        m = last.get(rule.name)
        if m is None:
            # stopped early (or failed to start) before this rule had a result to report
            table.add_row(rule.name, f"0/{planned_attempts(rule)}", "0", "none finished", "-", "-")
            continue
        causes = ", ".join(f"{c}: {n}" for c, n in sorted(m.failures_by_cause.items()))
        codes = ", ".join(f"{c}: {n}" for c, n in m.close_codes.items())
        table.add_row(
            m.rule,
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
                f"[red]x[/] {escape(f'{m.rule}{who}: {sample.cause}: ')}"
                f"{escape(redact_text(sample.detail))}",  # a server's words are not markup
                highlight=False,
            )
            for entry in sample.transcript[-8:]:
                data = redact_text(str(entry.get("data")))
                console.print(
                    f"    {entry.get('t', 0):>7.3f}s {entry.get('dir', ''):<5} {data}",
                    highlight=False,
                    markup=False,
                )


def render_verdict(
    console: Console, verdict: Verdict | None, interrupted: str | None = None
) -> ExitCode:
    """The verdict line and its reasons (INTERRUPTED without one); returns the exit code."""
    if verdict is None or interrupted is not None:
        console.print(
            f"verdict: [bold magenta]INTERRUPTED[/] (exit {int(ExitCode.INCONCLUSIVE)}: "
            f"{interrupted or 'cancelled'} stopped the probes before the rules finished; "
            "the results above are partial and decide nothing)",
            highlight=False,
        )
        return ExitCode.INCONCLUSIVE
    style = {"pass": "green", "warn": "yellow", "fail": "red"}.get(verdict.status, "magenta")
    code = exit_code(verdict)
    console.print(
        f"verdict: [bold {style}]{verdict.status.upper()}[/] (exit {int(code)}: {_MEANING[code]})",
        highlight=False,
    )
    for reason in verdict.reasons:
        console.print(f"  - {redact_text(reason)}", highlight=False, markup=False)
    return code


@click.command("probe")
@click.option(
    "--policy", "policy_path", required=True, type=click.Path(dir_okay=False), help="Policy file."
)
@click.option(
    "--url", required=True, metavar="URL", help="Base URL to probe, e.g. http://127.0.0.1:8080."
)
@click.option(
    "--rule", "rule_names", multiple=True, metavar="NAME", help="Run only this rule (repeatable)."
)
@click.option("--token-env", metavar="NAME", help="Environment variable holding a bearer token.")
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding a bearer token.")
@click.option(
    "--no-id-token", is_flag=True, help="Never mint a Google ID token (a public service)."
)
@click.option(
    "--audience",
    metavar="URL",
    help="Audience of the minted ID token: the service URL or its custom audience. "
    "Default: the policy's auth.audience, else the origin of --url. Set it when --url is a "
    "tag URL (https://TAG---SERVICE-HASH.a.run.app) of a private service.",
)
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates (self-signed).")
@click.option("--shard", "shard_spec", metavar="K/N|auto", help=probe_shard.SHARD_HELP)
@click.option("--measurements", metavar="FILE", help=probe_shard.MEASUREMENTS_HELP)
@load_options
def probe(
    policy_path: str,
    url: str,
    rule_names: tuple[str, ...],
    token_env: str | None,
    token_file: str | None,
    no_id_token: bool,
    audience: str | None,
    insecure: bool,
    shard_spec: str | None,
    measurements: str | None,
    **load: Any,
) -> None:
    """Run the http and websocket rules of a policy against URL and judge them.

    Use it to develop a policy before wiring it into a pipeline: logs and
    metric rules are skipped (they need a Cloud Run revision), and nothing is
    changed anywhere. Progress lines show each rule as it runs; then a table
    of results, up to three failed sessions per rule with their last events,
    and the verdict of the rules that ran.

    --sessions, --concurrency, --rate and --ramp override the policy for
    this run, for every rule it probes (narrow with --rule): a policy
    becomes a load test. The open-files limit is raised as far as the
    system allows; probes that would need more file descriptors are exit 2
    before anything starts, saying how to raise it (ulimit -n).

    \b
    Exit codes (as for check): 0 pass or warn, 1 fail, 2 usage or policy
    error, 3 inconclusive (a rule ran too few attempts to decide) or
    interrupted (SIGINT or SIGTERM: the probes are cancelled, their
    connections closed, and the results so far are shown).

    \b
    Examples:
      PORT=8080 python examples/chat_agent/app.py &
      deploy-guard probe --policy policies/chat-agent.yaml --url http://127.0.0.1:8080
      deploy-guard probe --policy policies/chat-agent.yaml --url http://127.0.0.1:8080 \\
          --rule chat-golden-path --rule health
      deploy-guard probe --policy policies/chat-agent.yaml --url http://127.0.0.1:8080 \\
          --rule chat-hold --sessions 10000 --concurrency 1000 --rate 200/s --ramp 1m
      deploy-guard probe --policy policies/chat-agent.yaml \\
          --url https://candidate---chat-abc-ew.a.run.app --audience https://chat-abc-ew.a.run.app

    A private service needs a bearer token: --token-env/--token-file, the
    policy's auth block, or (for https URLs) a Google ID token minted from a
    service account or the metadata server. The token is never printed,
    nor any ${NAME} header value or query value (shown as [redacted]; the
    policy's auth.safe_query_params lists parameters whose values may show).

    \b
    Beyond one machine (docs/shards.md): run N shards, each with
    --shard K/N --measurements FILE (exit 0 once its file is written), then
      deploy-guard judge --policy POLICY shard-*.json
    """
    from deploy_guard.commands import terminal_output

    raise_fd_limit()  # as many sessions as the system allows; check_fds says when too few
    flags = LoadFlags(**load)
    terminal_output()  # progress lines on a terminal; info events would tear them
    # Wide enough for the table when piped (CI logs); a terminal uses its own width.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    try:
        policy = load_file(policy_path)
        allow_query_params(policy.auth.safe_query_params)  # every other query value: redacted
        rules = apply_load_flags(select_rules(policy, rule_names), flags)
        shard = parse_shard(shard_spec) if shard_spec is not None else WHOLE
        # EMFILE mid-run would read as the server's failure: exit 2 now (a shard's own need)
        check_fds(rules, shard=shard)
        output = probe_shard.ShardOutput.from_flags(shard_spec, measurements)
        check_env_headers(rules)  # a ${NAME} header that cannot be sent: exit 2 now
        choice = TokenChoice(
            token_env=token_env, token_file=token_file, id_token=not no_id_token, audience=audience
        )
        target = Target(url, verify_tls=not insecure)
        auth = policy.auth
        token = asyncio.run(
            resolve_token(
                choice,
                url=url,
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
    except KeyboardInterrupt:  # Python's own SIGINT handler: nothing had started
        click.echo("interrupted by SIGINT before probing: nothing was probed", err=True)
        raise SystemExit(int(ExitCode.INCONCLUSIVE)) from None
    if signals.pending():  # deferred by the CLI's entry point while the policy loaded
        click.echo(
            f"interrupted by {signals.pending()} before probing: nothing was probed", err=True
        )
        raise SystemExit(int(ExitCode.INCONCLUSIVE))
    if flags.given:
        console.print(f"for this run: {flags.words()} (every rule probed)", markup=False)
    for note in output.notes(rules):
        console.print(note, highlight=False, markup=False)
    try:
        last, verdict, signalled = asyncio.run(
            probe_until_signalled(policy, rules, target, console, output.shard)
        )
    except KeyboardInterrupt:  # SIGINT as the loop started: asyncio.run cancelled the probes
        last, verdict, signalled = {}, None, "SIGINT"
    if signalled is not None:
        click.echo(
            f"interrupted by {signalled}: every probe was cancelled and its connection "
            "closed; no verdict",
            err=True,
        )
    if output.sharded:
        render_results(console, rules, last)
        code = None
    else:
        code = render(console, rules, last, verdict, signalled)
    if output.path is not None:
        record = output.record(policy, rules, target, last, signalled)
        code = output.finish(console, record, code)
    assert code is not None
    raise SystemExit(int(code))
