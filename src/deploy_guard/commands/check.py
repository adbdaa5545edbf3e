"""``deploy-guard check``: judge a revision by policy; roll back on failure, promote on success.

This module holds the command's flags: the ones ``check`` and ``rollout`` share
(:func:`evidence_options`) and check's own. What runs after parsing, for both
commands, is :mod:`deploy_guard.commands.launch`'s: validating every policy
before any API call, running the gate under SIGINT/SIGTERM handling, writing the
reports (always, even after an error or a signal) and mapping the outcome to the
documented exit codes. The sequence itself lives in the gate.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from deploy_guard.commands import location_options
from deploy_guard.commands.fleet import fleet_option
from deploy_guard.commands.launch import launch
from deploy_guard.policy.units import parse_duration

#: ``launch`` is re-exported: code written before it moved to its own module imports it here.
__all__ = ["check", "evidence_options", "launch"]

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
Cloud Deploy (--cloud-deploy): the check as a canary phase's verify job.
  What to judge comes from the variables Cloud Deploy sets (CLOUD_RUN_SERVICE,
  CLOUD_RUN_REVISION, CLOUD_RUN_LOCATION, CLOUD_RUN_PROJECT, and the
  CLOUD_DEPLOY_* pipeline, target, release, rollout, phase and job run);
  --project, --region, --service and --revision given win. Cloud Deploy owns
  traffic: nothing is written (no rollback, promotion, tag or annotation).
  Probes go through the candidate's tag URL (the pipeline's canaryRevisionTags),
  else through the service URL at the phase's split (the report says what a
  pass then cannot prove). Exit 0 the phase passed; 1 it failed (Cloud
  Deploy's repair rule rolls back); 2 a variable missing or garbled; 3
  inconclusive, which Cloud Deploy, like every non-zero exit, counts as a
  failed verification. skaffold.yaml's verify: stanza runs it.

\b
Examples:
  deploy-guard check --revision chat-agent-00002-abc --region europe-west1 \\
      --policy policies/chat-agent.yaml --report report.json --summary summary.md
  deploy-guard check --revision chat-agent-00003-xyz --promote
  deploy-guard check --revision chat-agent-00002-abc --dry-run     # judge only
  deploy-guard check --cloud-deploy --policy /policies/chat-agent.yaml  # a verify job
  deploy-guard check --fleet fleet.yaml --service hello   # its entry, latest revision
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


#: ``--policy``, as every command that judges takes it.
policy_option = click.option(
    "--policy",
    "policy_paths",
    multiple=True,
    metavar="PATH",
    type=click.Path(),
    help="Policy file or folder (repeatable) [default: ./policies].",
)


def evidence_options(command: F) -> F:
    """The flags ``check`` and ``rollout`` share: where, which policies, reports, timing, auth."""
    decorators: list[Callable[[F], F]] = [
        click.option(
            "--service",
            metavar="NAME",
            help="Service name; derived from the revision name when omitted.",
        ),
        location_options,
        policy_option,
    ]
    for extra in _EXTRA_OPTIONS:
        decorators.append(extra)
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _report_options(command: F) -> F:
    command = click.option(
        "--html",
        "html_path",
        type=click.Path(),
        help="Write the HTML report here: one self-contained page with the verdict, the "
        "rules, traffic, the timeline and a picture of every probe session.",
    )(command)
    command = click.option(
        "--summary", "summary_path", type=click.Path(), help="Write a Markdown summary here."
    )(command)
    return click.option(
        "--report", "report_path", type=click.Path(), help="Write the JSON report here."
    )(command)


def _notify_flags(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[Any, ...]:
    from deploy_guard.events.setup import parse_flag

    specs = []
    for value in values:
        try:
            specs.append(parse_flag(value))
        except ValueError as exc:
            raise click.BadParameter(f"{value}: {exc}") from None
    return tuple(specs)


def _notify_options(command: F) -> F:
    command = click.option(
        "--report-url",
        metavar="URL",
        help="Where the report will be read (a bucket's URL): the notifications link to it.",
    )(command)
    return click.option(
        "--notify",
        multiple=True,
        callback=_notify_flags,
        metavar="KIND:WHERE[:EVENTS]",
        help="Also notify, for this run (repeatable): slack:ENV, google_chat:ENV, webhook:ENV "
        "or webhook:ENV+KEY_ENV (ENV holds the URL, KEY_ENV the signing key), "
        "pubsub:projects/P/topics/T, log; EVENTS: fail,rollback,... (docs/notifications.md).",
    )(command)


#: The flags a watch shares with check and rollout: reports, reads, the probes' token.
SHARED_OPTIONS: list[Callable[[Any], Any]] = [
    _report_options,
    _notify_options,
    click.option(
        "--serve",
        is_flag=False,
        flag_value="auto",
        default=None,
        metavar="[HOST:]PORT",
        help="Serve the report live while it runs: the HTML page (refreshing), /healthz and "
        "/status.json, read-only. The flag alone: 127.0.0.1:8377, or $PORT on Cloud Run.",
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

#: The bound on a one-shot analysis and its waits (a watch has none).
_TIMING_OPTIONS: list[Callable[[Any], Any]] = [
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
        "--log-settle",
        default="0s",
        callback=_duration,
        metavar="DURATION",
        show_default=True,
        help="Wait this long after the probes end before the last Cloud Logging pass, for "
        "entries still being ingested (Cloud Logging's delay is usually seconds, with no "
        "bound): 5s-10s catches most late lines, 30s or more nearly all.",
    ),
]
_EXTRA_OPTIONS = [SHARED_OPTIONS[0], *_TIMING_OPTIONS, *SHARED_OPTIONS[1:]]


@click.command(name="check", help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--revision",
    metavar="REV",
    help="Revision to judge: short name or full resource name (required unless a mode names "
    "it: --cloud-deploy, --from-audit-event, or --fleet, which judges the service's latest "
    "created revision).",
)
@click.option(
    "--cloud-deploy",
    is_flag=True,
    help="Run as a Cloud Deploy verify job: judge the canary phase named by the CLOUD_DEPLOY_* "
    "and CLOUD_RUN_* variables, never write traffic; the exit code is the verify result.",
)
@evidence_options
@fleet_option
@click.option("--promote", is_flag=True, help="On pass, send 100 % of traffic to the revision.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Judge and report; never move traffic. (A candidate without a tag URL still gets a "
    "temporary 0 % tag so the probes can reach it; it is removed afterwards.)",
)
@click.option(
    "--from-audit-event",
    "audit_source",
    metavar="FILE|-|env:NAME",
    help="Judge the revision a deploy created, read from Cloud Run's audit log entry "
    "(a LogEntry, a list of them, or the Eventarc CloudEvent) in FILE, stdin or an env var; "
    "skips (exit 0) what is no deploy to check (docs/audit-checks.md).",
)
@click.option(
    "--skip-principal",
    "skip_principals",
    multiple=True,
    metavar="EMAIL",
    help="With --from-audit-event: skip deploys by this principal (repeatable), e.g. a "
    "pipeline that runs its own check.",
)
def check(
    revision: str | None,
    promote: bool,
    dry_run: bool,
    cloud_deploy: bool,
    audit_source: str | None,
    skip_principals: tuple[str, ...],
    **flags: Any,
) -> None:
    from deploy_guard.runtime.options import CheckOptions

    if cloud_deploy and flags.get("fleet"):
        raise click.UsageError(
            "--cloud-deploy and --fleet both name the service: a verify job judges the one "
            "Cloud Deploy names; drop --fleet"
        )
    if skip_principals and audit_source is None:
        raise click.UsageError("--skip-principal goes with --from-audit-event")
    if audit_source is not None:
        if revision or cloud_deploy or flags.get("fleet"):
            raise click.UsageError(
                "--from-audit-event names the service and the revision: drop --revision, "
                "--cloud-deploy and --fleet"
            )
        _from_audit_event(audit_source, flags, skip_principals, promote=promote, dry_run=dry_run)
        return
    if cloud_deploy:
        from deploy_guard.commands.cloud_deploy import launch_verify

        launch_verify(revision, flags, promote=promote, dry_run=dry_run)
        return
    if not revision and not flags.get("fleet"):
        raise click.UsageError(
            "missing --revision: name the revision to judge (or run as a Cloud Deploy verify "
            "job with --cloud-deploy, which reads it from CLOUD_RUN_REVISION, as a fleet's "
            "guard with --fleet, which judges the service's latest revision, or from an audit "
            "log entry with --from-audit-event)"
        )
    launch(revision or "", flags, CheckOptions, promote=promote, dry_run=dry_run)


def _from_audit_event(
    source: str, flags: dict[str, Any], skip_principals: tuple[str, ...], **extra: Any
) -> None:
    """``--from-audit-event``: the flags given on the command line must agree with the event."""
    from deploy_guard.commands.audit_check import check_from_audit_event

    ctx = click.get_current_context()
    explicit = [
        name
        for name in ("project", "region", "service")
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    ]
    check_from_audit_event(
        source, flags, explicit=explicit, skip_principals=skip_principals, **extra
    )
