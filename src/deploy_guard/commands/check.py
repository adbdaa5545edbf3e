"""``deploy-guard check``: judge a revision by policy; roll back on failure, promote on success.

This module parses flags, validates every policy before any API call, runs
:class:`deploy_guard.runtime.driver.Gate` under SIGINT/SIGTERM handling, writes the
reports (always, even after an error or a signal) and maps the outcome to the
documented exit codes. The sequence itself lives in the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from deploy_guard import signals
from deploy_guard.commands import location_options
from deploy_guard.errors import ConfigError, GuardError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger, redact_text
from deploy_guard.policy.units import parse_duration
from deploy_guard.report.model import CheckReport

log = get_logger("deploy_guard.check")
F = TypeVar("F", bound=Callable[..., Any])

HELP = """Judge REVISION by policy after a rollout, and act on the verdict.

\b
What it does, in order:
  1. loads and validates every --policy (any problem: exit 2, nothing touched);
  2. waits for the revision to be Ready (still starting at --ready-timeout:
     inconclusive, exit 3) and records the service's traffic; a WebSocket
     rule whose sessions (expect timeouts + hold) outlast the revision's
     request timeout is exit 2 (Cloud Run would cut them), nothing touched;
  3. probes the revision through its tag URL (adding a temporary 0 % dg- tag
     if it has none, removed afterwards; the tag records which check holds
     it until when, so one left behind shows as stale in
     `deploy-guard status --service S`, which removes it; a service name of
     43+ characters leaves no room for one: exit 2, deploy with a short --tag,
     which fits up to 45 characters: Cloud Run allows 46 for tag and name);
  4. reads Cloud Logging (one query per pass) and Cloud Monitoring;
  5. decides as evidence arrives (fail_fast stops at the first decided failure);
  6. acts: on fail puts traffic back on the revisions that served before
     (unless someone deployed meanwhile: then it refuses, exit 4);
     on pass with --promote sends 100 % to the revision, pinned by name.

\b
Output: the outcome in one line on stdout ("fail: ...", "pass: ..."); events
on stderr (JSON off a terminal); notes (a candidate on the rejected list,
leftover tags, the revision a rollback chose and why) in the report and on
stderr.

\b
Exit codes: 0 pass, 1 fail (rolled back or never shifted), 2 usage/config,
3 inconclusive or interrupted (traffic unchanged unless the policy says
on_inconclusive: rollback), 4 an action failed or was refused, or was sent
but could not be read back (the report says what to check). A pass whose
temporary tag could not be removed stays 0; the message says how to remove it.

\b
Signals: the first SIGINT/SIGTERM stops at a safe point (a traffic write in
flight is finished and verified first): exit 3, or the code of the action it
finished. A second one stops at once, without clean-up, after writing the
reports, which say what may be left (a temporary tag, an unverified write).
It exits with the decided outcome's code if the check had decided, else
130 (SIGINT) or 143 (SIGTERM).

\b
Examples:
  deploy-guard check --revision chat-agent-00002-abc --region europe-west1 \\
      --policy policies/chat-agent.yaml --report report.json --summary summary.md
  deploy-guard check --revision chat-agent-00003-xyz --promote
  deploy-guard check --revision chat-agent-00002-abc --dry-run     # judge only
  (a policy is used only for the services its services: list names: chat-agent here)

Against the local emulator: export DEPLOY_GUARD_EMULATOR_HOST=127.0.0.1:PORT
(printed by `deploy-guard emulator`).
"""


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(parse_duration(value))
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from exc


#: The shortest --log-interval: Cloud Logging's read quota is 60 requests a minute
#: per project, shared with everything else reading it (a 0s interval made
#: thousands of ListLogEntries calls in one check). The local emulator has no
#: quota, so tests may poll faster, but never in a loop with no pause.
MIN_LOG_INTERVAL_S = 1.0
MIN_LOG_INTERVAL_EMULATOR_S = 0.1


def _log_interval(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    seconds = _duration(ctx, param, value)
    local = bool(os.environ.get("DEPLOY_GUARD_EMULATOR_HOST"))
    least = MIN_LOG_INTERVAL_EMULATOR_S if local else MIN_LOG_INTERVAL_S
    if seconds is not None and seconds < least:
        raise click.BadParameter(
            f"{value} is too short: "
            + (
                "even the emulator needs a pause between reads; use at least 0.1s"
                if local
                else "Cloud Logging allows 60 reads a minute per project, shared with "
                "everything else reading it; use at least 1s (default 10s)"
            )
        )
    return seconds


def _at_least(
    minimum: float, why: str
) -> Callable[[click.Context, click.Parameter, str | None], float | None]:
    """A duration callback that refuses values under ``minimum`` seconds, saying ``why``."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
        seconds = _duration(ctx, param, value)
        if seconds is not None and seconds < minimum:
            raise click.BadParameter(f"{value} is too short: {why}")
        return seconds

    return check


def default_policy_paths() -> list[str]:
    return ["policies"] if Path("policies").is_dir() else []


def evidence_options(command: F) -> F:
    """The flags ``check`` and ``rollout`` share: where, which policies, reports, timing, auth."""
    decorators: list[Callable[[F], F]] = [
        click.option(
            "--service",
            metavar="NAME",
            help="Service name; derived from the revision name when omitted.",
        ),
        location_options,
        click.option(
            "--policy",
            "policy_paths",
            multiple=True,
            metavar="PATH",
            type=click.Path(),
            help="Policy file or folder (repeatable) [default: ./policies].",
        ),
    ]
    for extra in _EXTRA_OPTIONS:
        decorators.append(extra)
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _report_options(command: F) -> F:
    command = click.option(
        "--summary", "summary_path", type=click.Path(), help="Write a Markdown summary here."
    )(command)
    return click.option(
        "--report", "report_path", type=click.Path(), help="Write the JSON report here."
    )(command)


_EXTRA_OPTIONS: list[Callable[[Any], Any]] = [
    _report_options,
    click.option(
        "--timeout",
        callback=_at_least(1.0, "the check needs time to gather evidence (e.g. 10m)"),
        metavar="DURATION",
        help="Bound on gathering evidence (e.g. 10m) [default: the policy's timeout].",
    ),
    click.option(
        "--ready-timeout",
        default="5m",
        callback=_duration,
        metavar="DURATION",
        show_default=True,
        help="How long to wait for the revision to become Ready.",
    ),
    click.option(
        "--log-interval",
        default="10s",
        callback=_log_interval,
        metavar="DURATION",
        show_default=True,
        help="Time between Cloud Logging passes (its read quota is ~60/min per project): "
        "at least 1s (0.1s against the emulator).",
    ),
    click.option(
        "--log-settle",
        default="0s",
        callback=_duration,
        metavar="DURATION",
        show_default=True,
        help="Wait this long after the probes end before the last Cloud Logging pass, for "
        "entries still being ingested (Cloud Logging's delay is usually seconds, with no "
        "bound): 5s-10s catches most late lines, 30s or more nearly all.",
    ),
    click.option(
        "--api-retry",
        default="30s",
        callback=_duration,
        metavar="DURATION",
        show_default=True,
        help="Bound on retrying a Cloud API call that answers UNAVAILABLE, DEADLINE_EXCEEDED "
        "or RESOURCE_EXHAUSTED.",
    ),
    click.option(
        "--token-env", metavar="NAME", help="Env var holding a bearer token for the probes."
    ),
    click.option(
        "--token-file", type=click.Path(), help="File holding a bearer token for the probes."
    ),
    click.option(
        "--no-id-token", is_flag=True, help="Do not mint a Google ID token for the probes."
    ),
    click.option(
        "--audience",
        metavar="URL",
        help="Audience of the probes' ID token (a custom audience set on the service) "
        "[default: the policy's auth.audience, else the service URL].",
    ),
]


@click.command(name="check", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--revision",
    required=True,
    metavar="REV",
    help="Revision to judge: short name or full resource name.",
)
@evidence_options
@click.option("--promote", is_flag=True, help="On pass, send 100 % of traffic to the revision.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Judge and report; never move traffic. (A candidate without a tag URL still gets a "
    "temporary 0 % tag so the probes can reach it; it is removed afterwards.)",
)
def check(revision: str, promote: bool, dry_run: bool, **flags: Any) -> None:
    from deploy_guard.runtime.options import CheckOptions

    launch(revision, flags, CheckOptions, promote=promote, dry_run=dry_run)


def launch(
    revision: str,
    flags: dict[str, Any],
    options_class: Any,
    *,
    gate_class: Any = None,
    command: str = "check",
    **extra: Any,
) -> None:
    """Validate everything, run the gate (``gate_class``), write the reports, exit.

    ``flags`` are :func:`evidence_options`' values; ``extra`` the command's own
    fields of ``options_class`` (a :class:`~deploy_guard.runtime.options.CheckOptions`).
    """
    from deploy_guard.probes.auth import TokenChoice

    service, project, region = flags["service"], flags["project"], flags["region"]
    report_path, summary_path = flags["report_path"], flags["summary_path"]
    token_env, token_file, timeout = flags["token_env"], flags["token_file"], flags["timeout"]
    report = CheckReport(
        revision=revision, project=project or "", region=region or "", command=command
    )
    last_word = LastWord(report, report_path, summary_path)
    signals.on_second_signal(last_word)  # a second signal still writes the reports
    try:
        if token_env and token_file:
            raise ConfigError("--token-env and --token-file name two tokens: pass one of them")
        # each flag named; a path that cannot take a report is not tried for the error one
        unwritable = []
        if report_path and (why := _unwritable(report_path)):
            unwritable.append(f"cannot write the report (--report) to {report_path}: {why}")
            report_path = last_word.report_path = None
        if summary_path and (why := _unwritable(summary_path)):
            unwritable.append(f"cannot write the summary (--summary) to {summary_path}: {why}")
            summary_path = last_word.summary_path = None
        if unwritable:
            raise ConfigError("; ".join(unwritable))
        policies = _load(flags["policy_paths"])
        _check_timeout_fits(timeout, policies, service, revision)
        project, region = _need_project_region(project, region)
        log_interval, api_retry = flags["log_interval"], flags["api_retry"]
        options = options_class(
            project=project,
            region=region,
            revision=revision,
            service=service,
            timeout=timeout,
            ready_timeout=(flags["ready_timeout"] if flags["ready_timeout"] is not None else 300.0),
            log_interval=log_interval if log_interval is not None else 10.0,
            log_settle=flags["log_settle"] or 0.0,
            api_retry=api_retry if api_retry is not None else 30.0,
            token=TokenChoice(
                token_env=token_env,
                token_file=token_file,
                id_token=not flags["no_id_token"],
                audience=flags["audience"],
            ),
            **extra,
        )
    except GuardError as exc:
        _fail_early(report, exc, report_path, summary_path)
        raise AssertionError("unreachable") from None
    if signals.pending():  # before anything touched the service
        report.error = f"interrupted by {signals.pending()} before the check started"
        click.echo(f"error: {report.error}; nothing was checked or changed", err=True)
        report.verdict, report.action = "inconclusive", "none"
        report.exit_code = int(ExitCode.INCONCLUSIVE)
        report.message = "the check did not start"
        signals.settle(report.exit_code)
        _write_reports(report, report_path, summary_path)
        exit_fast(int(ExitCode.INCONCLUSIVE))
    code = run(
        policies,
        options,
        report,
        lambda: _write_reports(report, report_path, summary_path),
        last_word=last_word,
        gate_class=gate_class,
    )
    _write_reports(report, report_path, summary_path)  # again: the final API-call counts
    exit_fast(code)


def exit_fast(code: int) -> None:
    """``sys.exit(code)`` without paying for tearing the Google libraries down.

    Once the reports are written nothing is left to do, yet the interpreter's
    final garbage collection walks every protobuf descriptor the Google clients
    loaded: ~0.25 s of a check's wall time. Freezing the heap first moves those
    objects out of the collector's sight; atexit handlers and stream flushing
    still run as usual.
    """
    import gc

    signals.settle(code)  # a signal from here on cannot change the code or kill the process
    gc.freeze()
    sys.exit(code)


def _unwritable(path: str) -> str:
    """Why a report cannot be written to ``path`` ("" if it can): found before the check acts."""
    target = Path(path)
    if target.is_dir():
        return "it is a directory"
    # Missing folders are created when the report is written: the nearest one that
    # exists must be a folder we may write in.
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        return f"permission denied in {folder}"
    return ""


def _check_timeout_fits(
    timeout: float | None, policies: list[Any], service: str | None, revision: str
) -> None:
    """``--timeout`` shorter than a held session can never end in a verdict: say so now.

    Policy files get the same check when they are validated; the flag overrides
    their ``timeout``, so it is checked against the rules that will run.
    """
    from deploy_guard.gcp.cloudrun import need_service
    from deploy_guard.policy.units import format_duration

    if timeout is None:
        return
    with contextlib.suppress(ConfigError):  # no service to tell: the gate will say so
        name = need_service(service, revision)
        policies = [p for p in policies if p.applies_to(name)]
    for policy in policies:
        for rule in policy.rules:
            ws = rule.websocket
            if ws is not None and ws.hold + ws.connect_timeout > timeout:
                raise ConfigError(
                    f"--timeout {format_duration(timeout)} cannot fit rule {rule.name}'s hold "
                    f"of {format_duration(ws.hold)} (policy {policy.name}): the check could "
                    "never reach a verdict; raise --timeout or shorten the hold"
                )


def _load(paths: tuple[str, ...]) -> list[Any]:
    from deploy_guard.policy.load import load_paths

    chosen = list(paths) or default_policy_paths()
    if not chosen:
        raise ConfigError("no policy given: pass --policy FILE (or keep policies in ./policies)")
    return load_paths(chosen)


def _need_project_region(project: str | None, region: str | None) -> tuple[str, str]:
    from deploy_guard.commands import missing_project_region

    problem = missing_project_region(project, region)
    if problem:
        raise ConfigError(problem)
    assert project is not None
    assert region is not None
    return project, region


def _fail_early(
    report: CheckReport, exc: GuardError, report_path: str | None, summary_path: str | None
) -> None:
    problems = getattr(exc, "problems", None)
    text = "\n".join(str(p) for p in problems) if problems else str(exc)
    if problems:  # compiler-style lines first (editors jump to them), then what it means
        click.echo(redact_text(text), err=True)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        click.echo(f"error: {count} in the policy files; nothing was checked", err=True)
    else:
        click.echo(f"error: {redact_text(text)}", err=True)
    report.error = text
    # a usage or configuration error judged nothing: its verdict is "error", not a verdict
    verdict = "error" if exc.exit_code == ExitCode.USAGE else "inconclusive"
    report.verdict, report.action, report.exit_code = verdict, "none", int(exc.exit_code)
    report.message = "the check did not start"
    signals.settle(report.exit_code)
    _write_reports(report, report_path, summary_path)
    exit_fast(int(exc.exit_code))


def run(
    policies: list[Any],
    options: Any,
    report: CheckReport,
    write_reports: Callable[[], None] | None = None,
    *,
    last_word: LastWord | None = None,
    gate_class: Any = None,
) -> int:
    """Run the gate on a fresh event loop; SIGINT/SIGTERM cancel it (clean-up still runs).

    ``write_reports`` runs as soon as the gate ends, inside the loop: closing the
    loop waits for worker threads still finishing a cancelled API read (each
    bounded by ``--api-retry``), and a second signal meanwhile must not cost the
    reports.
    """
    from deploy_guard.analysis.sources import cloud_sources
    from deploy_guard.gcp.clients import Clients
    from deploy_guard.gcp.cloudrun import CloudRun
    from deploy_guard.gcp.errors import ApiCalls
    from deploy_guard.runtime.driver import Gate

    view = _terminal_view()
    clients = Clients.from_env()
    calls = ApiCalls()
    router = CloudRun(
        clients, options.project, options.region, calls=calls, retry_deadline=options.api_retry
    )
    sources = cloud_sources(clients, calls, retry_deadline=options.api_retry)
    gate = (gate_class or Gate)(policies, options, router, sources, report, progress=view)
    if last_word is not None:  # a second signal reads the check's state from here on
        last_word.gate, last_word.view = gate, view
    try:
        with view if view is not None else contextlib.nullcontext():
            # with the live view the error is in its final summary: an echo now would tear it
            code = asyncio.run(_main(gate, report, echo_errors=view is None, done=write_reports))
    finally:
        report.api_calls = calls.as_dict()
        clients.close()
    if view is not None:
        view.final(report)  # the view on stderr; its outcome lines on stdout
    elif report.message != report.error:  # an error was printed already
        # the outcome is the command's output (stdout), as rollback's; events stay on stderr
        click.echo(f"{report.verdict}: {redact_text(report.message)}")
        for note in report.notes:
            click.echo(f"note: {redact_text(note)}", err=True)
    if last_word is not None:
        last_word.shown = True  # a signal from here on need not repeat the outcome
    return code


async def _main(
    gate: Any,
    report: CheckReport,
    *,
    echo_errors: bool = True,
    done: Callable[[], None] | None = None,
) -> int:
    """Run the gate; the first SIGINT/SIGTERM cancels it (its clean-up still runs)."""
    code = await _gate_outcome(gate, report, echo_errors=echo_errors)
    report.exit_code = code  # the report and the process never disagree
    signals.settle(code)  # from here on a signal exits with this code, reports written
    if done is not None:
        done()
    return code


async def _gate_outcome(gate: Any, report: CheckReport, *, echo_errors: bool) -> int:
    from deploy_guard.commands import cancelled_by_signals

    def announce(name: str) -> None:
        log.warning("check_signalled", signal=name)

    async with cancelled_by_signals(announce) as caught:
        try:
            await gate.run()
            return report.exit_code  # a signal after the decision leaves it standing
        except asyncio.CancelledError:
            report.error = f"interrupted by {caught[0] if caught else 'cancellation'}"
            return int(ExitCode.INCONCLUSIVE)
        except GuardError as exc:
            from deploy_guard.runtime.driver import report_error

            report_error(report, exc)  # the gate's own mapping: action, verdict, code
            if echo_errors:
                click.echo(f"error: {redact_text(str(exc))}", err=True)
            return int(exc.exit_code)
        except Exception as exc:  # a bug: still write the report, and say so
            log.exception("check_crashed")
            report.error = redact_text(f"internal error: {type(exc).__name__}: {exc}")
            report.exit_code = int(ExitCode.ACTION_FAILED)
            if echo_errors:
                click.echo(f"error: {report.error}", err=True)
            return int(ExitCode.ACTION_FAILED)


def _terminal_view() -> Any:
    """The live rich view when stderr is a terminal and logs are not forced to JSON."""
    from deploy_guard.commands import terminal_output

    # the view shows progress; info logs would tear it, whatever --log-level says
    if not terminal_output(keep_explicit_level=False):
        return None
    from deploy_guard.report.terminal import TerminalView

    return TerminalView()


#: Traffic writes whose answer the check waits for: ``{kind}_requested`` until one of
#: ``{kind}_verified``, ``_refused``, ``_failed`` or ``_unverified`` is in the timeline.
_WRITES = ("rollback", "promote", "shift")


def write_in_flight(report: CheckReport) -> str | None:
    """The traffic write the check sent and has not seen answered ("rollback"), if any."""
    open_write = None
    for event in report.timeline.events:
        kind, _, step = event.event.rpartition("_")
        if kind in _WRITES and step == "requested":
            open_write = kind
        elif kind == open_write and step in ("verified", "refused", "failed", "unverified"):
            open_write = None
    return open_write


class LastWord:
    """What a second signal leaves behind: the reports, with the true state, and the code.

    :func:`deploy_guard.signals.stop_now` calls it (from a signal handler, in the
    main thread) before the process ends without clean-up. The exit code is the
    outcome's when one was decided (settled by the command, or by the gate
    before its clean-up), else 128 + the signal (130 SIGINT, 143 SIGTERM); the
    report says which, and names what may be left: a temporary tag, a traffic
    write that was sent and never verified.
    """

    def __init__(
        self, report: CheckReport, report_path: str | None, summary_path: str | None
    ) -> None:
        self.report = report
        self.report_path, self.summary_path = report_path, summary_path
        #: The running check (set by :func:`run`), None before it exists.
        self.gate: Any = None
        #: The live terminal view, closed before the process ends.
        self.view: Any = None
        #: The outcome line was printed (stdout): the last word does not repeat it.
        self.shown = False

    def __call__(self, name: str, settled: int | None) -> int:
        report = self.report
        state = self.gate.run_state if self.gate is not None else None
        notes: list[str] = []
        if settled is not None:
            code = settled  # the reports say it already; they are written again below
        elif state is not None and state.decided:
            code = report.exit_code
            notes.append(
                f"a second stop signal ({name}) cut the clean-up short; the decision stands"
            )
        else:
            code = signals.signal_exit_code(name)
            notes.append(self._interrupted(name, code))
        if state is not None and state.temp_tag and settled is None:
            notes.append(self._tag_left(state.temp_tag))
        if notes:
            report.error = "; ".join([*([report.error] if report.error else []), *notes])
        report.exit_code = code
        signals.exit_with(code)  # should a write below hang, the process still ends so
        report.timeline.add("second_signal", signal=name, exit_code=code)
        if not report.finished_at:
            from datetime import UTC, datetime

            report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        _write_reports(report, self.report_path, self.summary_path)  # first: files, then output
        log.warning("check_stopped", signal=name, exit_code=code)
        if self.view is not None:
            with contextlib.suppress(Exception):
                self.view.__exit__(None, None, None)
        if not self.shown:  # the outcome line a pipeline reads on stdout
            self.shown = True
            if self.view is not None:
                with contextlib.suppress(Exception):
                    self.view.final(report)
            else:
                click.echo(f"{report.verdict}: {redact_text(report.message)}")
        for note in notes:
            click.echo(f"note: {redact_text(note)}", err=True)
        return code

    def _interrupted(self, name: str, code: int) -> str:
        """Fill the report of a check stopped before its outcome was decided."""
        report = self.report
        first = signals.pending()
        after = f" after {first}" if first and first != name else ""
        if self.gate is None:
            report.verdict, report.action = "inconclusive", "none"
            report.message = "the check did not start"
            return (
                f"stopped by a second stop signal ({name}{after}) before the check started; "
                "nothing was checked or changed"
            )
        kind = write_in_flight(report)
        what = f"stopped by a second stop signal ({name}{after}) before the check finished"
        if kind is None:
            report.message = f"{what} (exit {code})"
            return what
        service = report.service
        report.action = "unverified"  # sent, never read back: a person must look
        report.message = f"{what}: the {kind} was sent to Cloud Run and not verified (exit {code})"
        return (
            f"{what}: the {kind} traffic write was sent and not verified, so traffic may or "
            f"may not have moved; look at the service: gcloud run services describe {service} "
            f"--region {report.region} --project {report.project}"
        )

    def _tag_left(self, tag: str) -> str:
        report = self.report
        asked = report.timeline.first("tag_requested")
        until = asked.detail.get("until") if asked is not None else None
        # its record says this check holds it until then: status removes it only after
        how = (
            f"remove it with `deploy-guard status --service {report.service} "
            f"--remove-stale-tags` once its hold ends at {until}, or at once with: "
            if until
            else "remove it: "
        )
        return (
            f"the temporary tag {tag} may still be on {report.service}; {how}"
            f"gcloud run services update-traffic {report.service} --remove-tags {tag} "
            f"--region {report.region} --project {report.project}"
        )


def _write_reports(report: CheckReport, report_path: str | None, summary_path: str | None) -> None:
    from deploy_guard.report.json import write_json
    from deploy_guard.report.markdown import write_markdown

    for path, write in ((report_path, write_json), (summary_path, write_markdown)):
        if not path:
            continue
        try:
            write(report, path)
        except OSError as exc:
            click.echo(f"error: could not write {path}: {exc.strerror}", err=True)
