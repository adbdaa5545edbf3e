"""``deploy-guard check --from-audit-event SOURCE``: a check started by Cloud Run's audit log.

An Eventarc trigger on Cloud Run's Admin Activity entries starts a workflow
that runs a Cloud Run job with the event (``deploy/audit/``); the job runs this.
It reads the event (:func:`read_source`), picks the deploy it records and
decides from the entry alone whether to check it
(:func:`deploy_guard.gcp.audit.choose`), looks for the policies that cover the
service, reads the service to find the revision the deploy created
(:func:`deploy_guard.gcp.audit.after_reads`), and then runs the ordinary check
on it (:func:`deploy_guard.commands.launch.launch`): same waits for Ready,
probes, evidence, rollback and exit codes.

A skipped event is exit 0 with a one-line reason on stdout (``skipped: ...``)
and a report whose verdict is ``skipped``; an event the guard cannot read is
exit 2 naming what is missing. The event's project, region and service decide
where the check runs; a ``--project``, ``--region`` or ``--service`` given on
the command line must agree with them (exit 2), values from the environment
give way. Nothing of the event's bodies (the request, the response, headers)
is echoed: only names, the method and the principal reach the output.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterable
from typing import Any

import click

from deploy_guard.errors import ConfigError, GuardError
from deploy_guard.exitcodes import ExitCode
from deploy_guard.log import get_logger, redact_text
from deploy_guard.report.model import CheckReport

log = get_logger("deploy_guard.check")

#: A source that says where the JSON is: a file, ``-`` (stdin) or ``env:NAME``.
ENV_PREFIX = "env:"
#: Bigger than any audit entry (Cloud Logging's entries are at most 256 KB).
MAX_EVENT_BYTES = 4 * 1024 * 1024


def read_source(source: str) -> str:
    """The event's JSON text from a file, stdin (``-``) or an env var (``env:NAME``)."""
    if source.startswith(ENV_PREFIX):
        name = source[len(ENV_PREFIX) :]
        text = os.environ.get(name)
        if not name or text is None:
            raise ConfigError(
                f"--from-audit-event {source}: environment variable {name or '(none)'} is not "
                "set (the workflow in deploy/audit/ sets it on the job's execution)"
            )
    elif source == "-":
        text = sys.stdin.read(MAX_EVENT_BYTES + 1)
    else:
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read(MAX_EVENT_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"--from-audit-event: cannot read {source}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"--from-audit-event: {source} is not UTF-8 text") from None
    if len(text) > MAX_EVENT_BYTES:
        raise ConfigError(
            f"--from-audit-event {source}: more than {MAX_EVENT_BYTES // 1024 // 1024} MB, "
            "not an audit event"
        )
    if not text.strip():
        raise ConfigError(f"--from-audit-event {source}: empty, no audit event to read")
    return text


def check_from_audit_event(
    source: str,
    flags: dict[str, Any],
    *,
    explicit: Iterable[str] = (),
    skip_principals: Iterable[str] = (),
    **extra: Any,
) -> None:
    """Check the revision the audit event's deploy created, or skip it; exit either way.

    ``flags`` are check's options (``evidence_options``); ``explicit`` the names of
    those given on the command line (not from the environment); ``extra`` check's
    own (``promote``, ``dry_run``).
    """
    from deploy_guard.commands.launch import _fail_early, _load, launch
    from deploy_guard.gcp import audit
    from deploy_guard.runtime.options import CheckOptions

    paths = (flags["report_path"], flags["summary_path"], flags.get("html_path"))
    report = CheckReport(revision="", project="", region="", command="check")
    try:
        writes = audit.audit_writes(read_source(source))
        write, why = audit.choose(writes, skip_principals=skip_principals)
        if write is None and len(writes) == 1:  # the report says which entry was skipped
            report.project, report.region = writes[0].project, writes[0].region
            report.service, report.audit_event = writes[0].service, writes[0].summary()
        if write is not None:
            report.project, report.region = write.project, write.region
            report.service = write.service
            report.audit_event = write.summary()
            _agree(flags, write, set(explicit))
            policies = [p for p in _load(flags["policy_paths"]) if p.applies_to(write.service)]
            if not policies:
                why = (
                    f"no policy covers service {write.service} (add it, or a pattern, to a "
                    "policy's services: to check its deploys)"
                )
            else:
                revision, decision = _run(_resolve(write))
                report.revision = revision
                if not decision.check:
                    why = decision.reason
        if why:
            _skip(report, why, paths)
        assert write is not None
    except GuardError as exc:
        _fail_early(report, exc, *paths)
        raise AssertionError("unreachable") from None
    log.info(
        "audit_event_checked",
        revision=report.revision,
        service=write.service,
        method=write.method,
        principal=write.principal,
    )
    flags = {
        **flags,
        "project": write.project,
        "region": write.region,
        "service": write.service,
        "audit_event": {**write.summary(), "decision": "checked"},
    }
    launch(report.revision, flags, CheckOptions, **extra)


def _agree(flags: dict[str, Any], write: Any, explicit: set[str]) -> None:
    """A flag given on the command line must name what the event names."""
    for key in ("project", "region", "service"):
        given, found = flags.get(key), getattr(write, key)
        if key in explicit and given and given != found:
            raise ConfigError(
                f"--{key} {given} disagrees with the audit event, which is for {key} {found}: "
                f"drop --{key} (the event says where the deploy was)"
            )


async def _resolve(write: Any) -> tuple[str, Any]:
    """The revision the write created and whether to check it (the service read now)."""
    from deploy_guard.errors import NotFoundError
    from deploy_guard.gcp import audit
    from deploy_guard.gcp.cloudrun import open_service

    try:
        async with open_service(write.project, write.region, write.service) as (router, state):
            revisions = await router.list_revisions(write.service)
    except NotFoundError:  # deleted since the deploy: nothing is left to check
        gone = f"service {write.service} no longer exists (project {write.project}, region "
        return "", audit.Decision(False, gone + f"{write.region})")
    revision, decision = audit.after_reads(write, state, revisions)
    return (revision.short if revision is not None else ""), decision


def _run(main: Any) -> Any:
    """``asyncio.run``, google-auth's "not logged in" mapped to a GuardError."""
    from deploy_guard.gcp.errors import map_credentials_error

    try:
        return asyncio.run(main)
    except GuardError:
        raise
    except Exception as exc:
        mapped = map_credentials_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


def _skip(report: CheckReport, why: str, paths: tuple[str | None, ...]) -> None:
    """Exit 0 with the reason on stdout, and a report that says it was skipped."""
    from deploy_guard import signals
    from deploy_guard.commands.last_word import write_report_files
    from deploy_guard.commands.launch import exit_fast

    report.verdict, report.action = "skipped", "none"
    report.exit_code = int(ExitCode.PASS)
    report.message = why
    report.audit_event = {**report.audit_event, "decision": "skipped", "reason": why}
    log.info("audit_event_skipped", **report.audit_event)
    signals.settle(report.exit_code)
    write_report_files(report, *paths)
    click.echo(f"skipped: {redact_text(why)}")
    exit_fast(report.exit_code)


__all__ = ["ENV_PREFIX", "check_from_audit_event", "read_source"]
