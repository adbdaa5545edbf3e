"""What Cloud Deploy tells a verify job, read from the environment: ``check --cloud-deploy``.

Cloud Deploy runs a canary phase's verify container with the phase described
in environment variables (Google's "Run hooks before and after deploying" page,
section "Available environment variables", which the verify page points to):
the pipeline, target, release, rollout, job run and phase as ``CLOUD_DEPLOY_*``,
and for Cloud Run targets the service, revision, region and URLs as
``CLOUD_RUN_*``. This module turns them into one :class:`CloudDeployPhase` and
the check's target (project, region, service, revision), all problems found at
once and named by variable: a verify job misconfigured is exit 2 before any API
call, never a guess.

Explicit flags win over the environment (``--project``, ``--region``,
``--service``, ``--revision`` given on the command line); a flag that
disagrees with a variable is said in a note. ``CLOUD_DEPLOY_PERCENTAGE_DEPLOY``
is documented for custom targets' render and deploy, not for verify jobs: when
it is absent the percentage is the candidate's share of what the service
serves, read later (:func:`with_serving`).

Pure: the environment is passed in as a mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from deploy_guard.errors import ConfigError

# The variables, as Google's documentation names them.
PROJECT_NUMBER = "CLOUD_DEPLOY_PROJECT"
PROJECT_ID = "CLOUD_DEPLOY_PROJECT_ID"
LOCATION = "CLOUD_DEPLOY_LOCATION"
PIPELINE = "CLOUD_DEPLOY_DELIVERY_PIPELINE"
TARGET = "CLOUD_DEPLOY_TARGET"
RELEASE = "CLOUD_DEPLOY_RELEASE"
ROLLOUT = "CLOUD_DEPLOY_ROLLOUT"
JOB_RUN = "CLOUD_DEPLOY_JOB_RUN"
PHASE = "CLOUD_DEPLOY_PHASE"
PERCENTAGE = "CLOUD_DEPLOY_PERCENTAGE_DEPLOY"
RUN_PROJECT = "CLOUD_RUN_PROJECT"
RUN_SERVICE = "CLOUD_RUN_SERVICE"
RUN_REVISION = "CLOUD_RUN_REVISION"
RUN_LOCATION = "CLOUD_RUN_LOCATION"
RUN_URLS = "CLOUD_RUN_SERVICE_URLS"
TARGET_TYPE = "TARGET_TYPE"

#: Set by Cloud Deploy for every verify job: without them this is not one.
REQUIRED = (PIPELINE, TARGET, RELEASE, ROLLOUT, PHASE, JOB_RUN, LOCATION, PROJECT_NUMBER)
#: The check's target: each is required unless its flag is given.
FOR_FLAG = {"service": RUN_SERVICE, "revision": RUN_REVISION, "region": RUN_LOCATION}

#: Cloud Deploy's ids (a custom canary's phaseId is documented as this; pipeline,
#: target, release and rollout ids follow the same form). A job run id is a UUID.
_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_JOB_RUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_NUMBER = re.compile(r"^[1-9][0-9]{0,19}$")
_PROJECT = re.compile(r"^([a-z][a-z0-9-]{4,28}[a-z0-9]|[1-9][0-9]{0,19})$")
_REGION = re.compile(r"^[a-z][a-z0-9-]{0,40}[a-z0-9]$")
#: Cloud Run service names: lower case, digits and hyphens, at most 49 characters.
_SERVICE = re.compile(r"^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$")
_REVISION = re.compile(
    r"^(projects/[^/\s]+/locations/[^/\s]+/services/[^/\s]+/revisions/)?"
    r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
)
_URL = re.compile(r"^https?://[^\s/?#,]+(/[^\s,]*)?$")


@dataclass(frozen=True)
class CloudDeployPhase:
    """The canary phase a verify job judges, as Cloud Deploy named it.

    ``percentage``: the candidate's share in this phase: Cloud Deploy's
    ``CLOUD_DEPLOY_PERCENTAGE_DEPLOY`` when set (``percentage_source`` says
    which), else what the service serves the candidate (None until read).
    ``probes``: how the probes reach the candidate (``tag`` URL, or the
    ``service_url`` at the phase's split), filled once known.
    """

    pipeline: str
    target: str
    release: str
    rollout: str
    phase: str
    job_run: str
    location: str
    project_number: str
    project_id: str = ""
    percentage: int | None = None
    percentage_source: str = ""
    #: ``CLOUD_RUN_SERVICE_URLS``: the URLs end users reach the service at.
    service_urls: tuple[str, ...] = ()
    serving: int | None = None
    probes: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The report's and the notifications' ``cloud_deploy`` block."""
        out: dict[str, Any] = {
            "pipeline": self.pipeline,
            "target": self.target,
            "release": self.release,
            "rollout": self.rollout,
            "phase": self.phase,
            "percentage": self.percentage,
            "job_run": self.job_run,
            "location": self.location,
            "project_number": self.project_number,
            "percentage_source": self.percentage_source,
            "serving": self.serving,
            "probes": self.probes,
        }
        return out

    def describe(self) -> str:
        """``phase canary-10 (10 %) of rollout r-1 (pipeline p, target t)``."""
        share = f" ({self.percentage} %)" if self.percentage is not None else ""
        return (
            f"phase {self.phase}{share} of rollout {self.rollout} (pipeline {self.pipeline}, "
            f"target {self.target}, release {self.release})"
        )


def with_serving(phase: CloudDeployPhase, serving: int) -> tuple[CloudDeployPhase, str | None]:
    """``phase`` with the candidate's served share; a note when Cloud Deploy said otherwise."""
    if phase.percentage is None:
        found = replace(phase, serving=serving, percentage=serving, percentage_source="traffic")
        return found, None
    note = None
    if phase.percentage != serving:
        note = (
            f"{PERCENTAGE} says {phase.percentage} % but the service serves the candidate "
            f"{serving} %: judged as served (Cloud Deploy may still be moving traffic, or "
            "someone changed the split)"
        )
    return replace(phase, serving=serving), note


@dataclass(frozen=True)
class Resolved:
    """The check's target from flags and environment, and what a person should know."""

    phase: CloudDeployPhase
    project: str
    region: str
    service: str
    revision: str
    notes: list[str] = field(default_factory=list)


def _value(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _garbled(name: str, value: str, why: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return f"{name}={shown!r} {why}"


def _urls(text: str, problems: list[str]) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    bad = [u for u in urls if not _URL.match(u)]
    if bad or (text and not urls):
        problems.append(_garbled(RUN_URLS, text, "is not a comma-separated list of http(s) URLs"))
        return ()
    return urls


def _phase(env: Mapping[str, str], problems: list[str]) -> CloudDeployPhase:
    values = {name: _value(env, name) for name in REQUIRED}
    checks = {
        PIPELINE: (_ID, "is not a Cloud Deploy id (lower case, digits, hyphens)"),
        TARGET: (_ID, "is not a Cloud Deploy id (lower case, digits, hyphens)"),
        RELEASE: (_ID, "is not a Cloud Deploy id (lower case, digits, hyphens)"),
        ROLLOUT: (_ID, "is not a Cloud Deploy id (lower case, digits, hyphens)"),
        PHASE: (_ID, "is not a Cloud Deploy phase id (lower case, digits, hyphens)"),
        JOB_RUN: (_JOB_RUN, "is not a job run id"),
        LOCATION: (_REGION, "is not a Google Cloud region"),
        PROJECT_NUMBER: (_NUMBER, "is not a project number (Cloud Deploy gives the number)"),
    }
    for name, (pattern, why) in checks.items():
        if values[name] and not pattern.match(values[name]):
            problems.append(_garbled(name, values[name], why))
    percentage, source = None, ""
    if text := _value(env, PERCENTAGE):
        if text.isdigit() and 0 <= int(text) <= 100:
            percentage, source = int(text), PERCENTAGE
        else:
            problems.append(_garbled(PERCENTAGE, text, "is not a percentage from 0 to 100"))
    project_id = _value(env, PROJECT_ID)
    if project_id and not _PROJECT.match(project_id):
        problems.append(_garbled(PROJECT_ID, project_id, "is not a project id"))
    return CloudDeployPhase(
        pipeline=values[PIPELINE],
        target=values[TARGET],
        release=values[RELEASE],
        rollout=values[ROLLOUT],
        phase=values[PHASE],
        job_run=values[JOB_RUN],
        location=values[LOCATION],
        project_number=values[PROJECT_NUMBER],
        project_id=project_id,
        percentage=percentage,
        percentage_source=source,
        service_urls=_urls(_value(env, RUN_URLS), problems),
    )


def resolve(
    env: Mapping[str, str],
    flags: Mapping[str, str | None],
    *,
    fallback_project: str | None = None,
) -> Resolved:
    """The phase and the check's target; every problem at once (:class:`ConfigError`, exit 2).

    ``flags``: ``project``, ``region``, ``service``, ``revision`` given on the
    command line (None: not given). ``fallback_project``: what the usual
    environment says (``GOOGLE_CLOUD_PROJECT``), used only when Cloud Deploy
    names no project id (its project number is the last resort: Cloud Run,
    Logging and Monitoring take either).
    """
    problems: list[str] = []
    kind = _value(env, TARGET_TYPE)
    if kind and kind != "RUN":
        raise ConfigError(
            f"{TARGET_TYPE}={kind}: deploy-guard judges Cloud Run targets (TARGET_TYPE=RUN); "
            "a GKE target's verify job needs another verifier"
        )
    missing = [name for name in REQUIRED if not _value(env, name)]
    missing += [v for f, v in FOR_FLAG.items() if not flags.get(f) and not _value(env, v)]
    phase = _phase(env, problems)
    notes: list[str] = []
    target: dict[str, str] = {}
    for flag, var in FOR_FLAG.items():
        given, named = flags.get(flag) or "", _value(env, var)
        target[flag] = given or named
        if given and named and given.rsplit("/", 1)[-1] != named.rsplit("/", 1)[-1]:
            notes.append(f"--{flag} {given} overrides {var}={named}")
    checks = {"service": (_SERVICE, "is not a Cloud Run service name")}
    checks["revision"] = (_REVISION, "is not a Cloud Run revision name")
    checks["region"] = (_REGION, "is not a Google Cloud region")
    for flag, (pattern, why) in checks.items():
        value = target[flag]
        if value and not flags.get(flag) and not pattern.match(value):
            problems.append(_garbled(FOR_FLAG[flag], value, why))
    run_project = _value(env, RUN_PROJECT)
    if run_project and not _PROJECT.match(run_project):
        problems.append(_garbled(RUN_PROJECT, run_project, "is not a project id or number"))
    project = (
        flags.get("project")
        or run_project
        or phase.project_id
        or fallback_project
        or phase.project_number
    )
    if flags.get("project") and run_project and flags["project"] != run_project:
        notes.append(f"--project {flags['project']} overrides {RUN_PROJECT}={run_project}")
    if missing or problems:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        parts += problems
        raise ConfigError(
            "--cloud-deploy reads the variables Cloud Deploy sets for a verify job: "
            + "; ".join(parts)
            + ". Run it as a Cloud Deploy verify container (skaffold.yaml's verify:); to judge "
            "a revision by hand, run check without --cloud-deploy (--revision, --region, "
            "--project; --dry-run moves no traffic)"
        )
    return Resolved(
        phase=phase,
        project=project or "",
        region=target["region"],
        service=target["service"],
        revision=target["revision"],
        notes=notes,
    )
