"""What ``check`` and ``rollout`` do once their flags are parsed: validate, run, report, exit.

:func:`launch` validates everything before any API call (flags, report paths,
every policy, project and region), then :func:`run` drives the command's gate
(:class:`deploy_guard.runtime.driver.Gate` or a subclass) on a fresh event loop
under SIGINT/SIGTERM handling. The reports are written whatever happens: after a
configuration error, after the gate, and on a second signal (by
:class:`~deploy_guard.commands.last_word.LastWord`). The process ends with the
outcome's documented exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from deploy_guard import signals
from deploy_guard.commands.last_word import LastWord, write_report_files
from deploy_guard.errors import ConfigError, GuardError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger, redact_text
from deploy_guard.report.model import CheckReport

log = get_logger("deploy_guard.check")


def launch(
    revision: str,
    flags: dict[str, Any],
    options_class: Any,
    *,
    gate_class: Any = None,
    command: str = "check",
    prepare: Callable[[CheckReport], None] | None = None,
    **extra: Any,
) -> None:
    """Validate everything, run the gate (``gate_class``), write the reports, exit.

    ``flags`` are :func:`~deploy_guard.commands.check.evidence_options`' values;
    ``extra`` the command's own fields of ``options_class`` (a
    :class:`~deploy_guard.runtime.options.CheckOptions`). ``prepare`` fills the
    report's mode-specific fields first, so even an early error's report has them.
    """
    from deploy_guard.probes.auth import TokenChoice
    from deploy_guard.probes.fdlimit import raise_fd_limit

    raise_fd_limit()  # as many sessions as the system allows; _check_fds says when too few
    report_path, summary_path = flags["report_path"], flags["summary_path"]
    html_path = flags.get("html_path")
    report = CheckReport(
        revision=revision,
        project=flags["project"] or "",
        region=flags["region"] or "",
        command=command,
    )
    report.audit_event = dict(flags.get("audit_event") or {})  # --from-audit-event
    if prepare is not None:
        prepare(report)
    last_word = LastWord(report, report_path, summary_path, html_path)
    signals.on_second_signal(last_word)  # a second signal still writes the reports
    log_budget = None
    try:
        if flags.get("fleet"):  # this guard's entry: service, policies, place, log budget
            from deploy_guard.commands.fleet import take_entry

            log_budget = take_entry(flags, report, command=command)
        service, project, region = flags["service"], flags["project"], flags["region"]
        token_env, token_file, timeout = flags["token_env"], flags["token_file"], flags["timeout"]
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
        if html_path and (why := _unwritable(html_path)):
            unwritable.append(f"cannot write the HTML report (--html) to {html_path}: {why}")
            html_path = last_word.html_path = None
        if unwritable:
            raise ConfigError("; ".join(unwritable))
        policies = _load(flags["policy_paths"])
        _check_timeout_fits(timeout, policies, service, revision)
        _check_fds(policies, service, revision, command)
        project, region = _need_project_region(project, region)
        notify = _notify_targets(policies, flags.get("notify", ()), service, revision)
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
            notify=notify,
            report_url=flags.get("report_url"),
            serve=_serve(flags.get("serve")),
            **extra,
        )
    except GuardError as exc:
        _fail_early(report, exc, report_path, summary_path, html_path)
        raise AssertionError("unreachable") from None
    if signals.pending():  # before anything touched the service
        report.error = f"interrupted by {signals.pending()} before the check started"
        click.echo(f"error: {report.error}; nothing was checked or changed", err=True)
        report.verdict, report.action = "inconclusive", "none"
        report.exit_code = int(ExitCode.INCONCLUSIVE)
        report.message = f"the {report.command} did not start"
        signals.settle(report.exit_code)
        write_report_files(report, report_path, summary_path, html_path)
        exit_fast(int(ExitCode.INCONCLUSIVE))
    code = run(
        policies,
        options,
        report,
        lambda: write_report_files(report, report_path, summary_path, html_path),
        last_word=last_word,
        gate_class=gate_class,
        log_budget=log_budget,
    )
    # again: the final API-call counts
    write_report_files(report, report_path, summary_path, html_path)
    exit_fast(code)


def _serve(value: str | None) -> str | None:
    """``--serve``'s value, its address checked now (exit 2 before any API call)."""
    if value is not None:
        from deploy_guard.runtime.status_page import serve_address

        serve_address(value)
    return value


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
    from deploy_guard.policy.pacing import pacing_problem
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
            block = rule.http if rule.http is not None else ws
            hold = ws.hold if ws is not None else 0.0
            paced = block is not None and pacing_problem(block, timeout, hold, bound="--timeout")
            if paced:
                raise ConfigError(f"rule {rule.name} (policy {policy.name}): {paced[1]}")


def _check_fds(policies: list[Any], service: str | None, revision: str, command: str) -> None:
    """Probes that would run out of file descriptors: exit 2 now, not EMFILE mid-check."""
    from deploy_guard.gcp.cloudrun import need_service
    from deploy_guard.probes.fdlimit import check_fds, command_rules

    with contextlib.suppress(ConfigError):  # no service to tell: count every policy's rules
        name = need_service(service, revision)
        policies = [p for p in policies if p.applies_to(name)]
    rules, extra = command_rules(policies, command)
    check_fds(rules, extra=extra, what=f"{command}'s probes")


def _notify_targets(
    policies: list[Any], flags: tuple[Any, ...], service: str | None, revision: str
) -> tuple[Any, ...]:
    """Who hears of the run: the ``notify:`` of the policies that apply and ``--notify``.

    Each secret is read (and registered with the redactor) now: a variable that
    is not set is exit 2 before any API call, not a silent run nobody hears of.
    """
    from deploy_guard.events.setup import resolve
    from deploy_guard.gcp.cloudrun import need_service

    with contextlib.suppress(ConfigError):  # no service to tell: the gate will say so
        name = need_service(service, revision)
        policies = [p for p in policies if p.applies_to(name)]
    return resolve([*(spec for p in policies for spec in p.notify), *flags])


def default_policy_paths() -> list[str]:
    """What ``--policy`` means when it is not given: ``./policies`` if it is a folder."""
    return ["policies"] if Path("policies").is_dir() else []


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
    report: CheckReport,
    exc: GuardError,
    report_path: str | None,
    summary_path: str | None,
    html_path: str | None = None,
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
    report.message = f"the {report.command} did not start"
    signals.settle(report.exit_code)
    write_report_files(report, report_path, summary_path, html_path)
    exit_fast(int(exc.exit_code))


def run(
    policies: list[Any],
    options: Any,
    report: CheckReport,
    write_reports: Callable[[], None] | None = None,
    *,
    last_word: LastWord | None = None,
    gate_class: Any = None,
    log_budget: Any = None,
) -> int:
    """Run the gate on a fresh event loop; SIGINT/SIGTERM cancel it (clean-up still runs).

    ``log_budget``: a fleet's guard keeps its Cloud Logging reads to it.
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
    if log_budget is not None:  # a fleet's guard reads Cloud Logging in its own slots
        from deploy_guard.analysis.budget import budgeted

        sources = budgeted(sources, log_budget)
    from deploy_guard.events.setup import build as build_notifiers

    notifier = build_notifiers(
        options.notify, clients=clients, project=options.project, report_url=options.report_url
    )
    gate = (gate_class or Gate)(
        policies, options, router, sources, report, progress=view, notifier=notifier
    )
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
