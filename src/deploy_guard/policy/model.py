"""The policy model: what a policy file may say, as frozen pydantic models.

The field names are a contract shared with the probes, the log and metric
sources and the gate: add fields, never rename. After loading, durations are
float seconds and ratios float 0..1 (see :mod:`deploy_guard.policy.units`).

This module holds the document itself, :class:`Policy` and its :class:`Rule`
list, and gathers the kind-specific models from the modules that define them
(:mod:`~deploy_guard.policy.base` for the shared base model and field types,
:mod:`~deploy_guard.policy.probes`, :mod:`~deploy_guard.policy.websocket`,
:mod:`~deploy_guard.policy.evidence`, :mod:`~deploy_guard.policy.rollout_spec`,
:mod:`~deploy_guard.policy.watch_spec`): callers import every model from here,
whichever module defines it.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, PrivateAttr, model_validator
from pydantic_core import InitErrorDetails, ValidationError

from deploy_guard.policy.base import NonEmpty, PositiveDuration, _err, _Model
from deploy_guard.policy.evidence import (
    MAX_LOG_QUERY,
    BaselineRelative,
    LogsSpec,
    MetricSpec,
    _log_query_chars,
)
from deploy_guard.policy.notify_spec import MAX_NOTIFIERS, NotifySpec
from deploy_guard.policy.pacing import pacing_problem
from deploy_guard.policy.probes import (
    AuthSpec,
    Headers,
    HttpExpect,
    HttpSpec,
    RequestPath,
    SuccessRatio,
)
from deploy_guard.policy.rollout_spec import (
    DEFAULT_METRIC_LAG,
    MAX_METRIC_LAG,
    MAX_STEPS,
    RolloutSpec,
    RolloutStep,
)
from deploy_guard.policy.units import format_duration, shown
from deploy_guard.policy.watch_spec import DEFAULT_WATCH, CanarySpec, WatchSpec, watch_problems
from deploy_guard.policy.websocket import (
    MAX_HOLD,
    STEP_TAGS,
    TEMPLATE_FIELDS,
    CloseCodes,
    ExpectStep,
    Isolation,
    ScenarioStep,
    SendStep,
    WebSocketSpec,
)

__all__ = [
    "DEFAULT_METRIC_LAG",
    "KINDS",
    "MAX_HOLD",
    "MAX_LOG_QUERY",
    "MAX_METRIC_LAG",
    "MAX_STEPS",
    "NAME_PATTERN",
    "NOTHING_AT_STEPS",
    "PROBE_KINDS",
    "STEP_TAGS",
    "TEMPLATE_FIELDS",
    "AuthSpec",
    "BaselineRelative",
    "CanarySpec",
    "CloseCodes",
    "ExpectStep",
    "Headers",
    "HttpExpect",
    "HttpSpec",
    "Isolation",
    "Kind",
    "LogsSpec",
    "MetricSpec",
    "MissingData",
    "NonEmpty",
    "NotifySpec",
    "Policy",
    "PositiveDuration",
    "RequestPath",
    "RolloutSpec",
    "RolloutStep",
    "Rule",
    "ScenarioStep",
    "SendStep",
    "Severity",
    "SuccessRatio",
    "WatchSpec",
    "WebSocketSpec",
]

Kind = Literal["http", "websocket", "logs", "metric"]
Severity = Literal["fail", "warn"]
MissingData = Literal["fail", "inconclusive", "ignore"]

KINDS: tuple[str, ...] = ("http", "websocket", "logs", "metric")
#: Rules that send their own requests; the others read what the service logged and served.
PROBE_KINDS: tuple[str, ...] = ("http", "websocket")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
#: What a Cloud Run service name glob may hold: the name's own characters and fnmatch's.
_SERVICE_GLOB = re.compile(r"^[a-z0-9*?\[\]!-]+$")
#: A Cloud Run service name: a letter first, letters, digits and hyphens, 49 characters at most.
_SERVICE_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$")


# --------------------------------------------------------------------------- rule


class Rule(_Model):
    """One check. Exactly one of ``http``/``websocket``/``logs``/``metric`` is set: ``kind``'s."""

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    kind: Kind
    severity: Severity = "fail"
    #: Evaluated and reported, never decides the verdict.
    dry_run: bool = False
    #: What no data (or a source error) means for the verdict.
    missing_data: MissingData = "inconclusive"
    #: Failing passes tolerated for rules measured repeatedly (logs, metric).
    failure_limit: int = Field(default=0, ge=0)
    #: Evidence-source errors in a row before the rule is ``error``.
    consecutive_error_limit: int = Field(default=3, ge=1)
    #: ``deploy-guard rollout``: run this probe rule again at every traffic step
    #: (False: only before the first step, through the tag URL).
    every_step: bool = True
    http: HttpSpec | None = None
    websocket: WebSocketSpec | None = None
    logs: LogsSpec | None = None
    metric: MetricSpec | None = None

    @model_validator(mode="after")
    def _block_matches_kind(self) -> Rule:
        for other in KINDS:
            if other != self.kind and getattr(self, other) is not None:
                raise _err(
                    "block",
                    f'a "{other}:" block does not belong in a rule of kind {self.kind}',
                    other,
                )
        if getattr(self, self.kind) is None:
            raise _err("block", f'a rule of kind {self.kind} needs a "{self.kind}:" block')
        if self.failure_limit and self.kind in PROBE_KINDS:
            raise _err(
                "failure_limit",
                f"failure_limit counts failing passes of logs and metric rules; a {self.kind} "
                "rule runs once: tolerate failures with success_ratio instead",
                "failure_limit",
            )
        if not self.every_step and self.kind not in PROBE_KINDS:
            raise _err(
                "every_step",
                f"every_step belongs to http and websocket rules (a probe may run only before "
                f"the first step); logs and metric rules are judged at every step, on the "
                f"traffic the candidate serves: drop every_step from this {self.kind} rule",
                "every_step",
            )
        return self

    @property
    def at_every_step(self) -> bool:
        """True when ``deploy-guard rollout`` judges this rule in each traffic step."""
        return self.every_step or self.kind not in PROBE_KINDS

    @property
    def spec(self) -> HttpSpec | WebSocketSpec | LogsSpec | MetricSpec:
        """The kind's own block."""
        spec = getattr(self, self.kind)
        assert spec is not None
        return spec  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- policy


def _check_service(glob: str) -> str:
    """Cloud Run service names are lowercase letters, digits and hyphens; a glob adds * ? [ ] !."""
    if not _SERVICE_GLOB.match(glob):
        raise _err(
            "service",
            f"{shown(glob)} can never match a Cloud Run service name (lowercase letters, "
            "digits and -; globs may add * ? [ ] !)",
        )
    if not any(c in glob for c in "*?[") and not _SERVICE_NAME.match(glob):
        raise _err(
            "service",
            f"{shown(glob)} can never match a Cloud Run service name: a name starts with a "
            "letter, ends with a letter or digit and has at most 49 characters",
        )
    return glob


#: Why a rollout whose steps would gather no evidence is refused.
NOTHING_AT_STEPS = (
    "the rollout's steps would judge nothing: every rule is an http or websocket rule with "
    "every_step: false, and missing evidence is never a pass; let a probe rule run at every "
    "step (drop its every_step: false) or add a logs or metric rule"
)


class Policy(_Model):
    """One policy file: the services it covers, its rules and what to do with the verdict."""

    version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    description: str = ""
    _MULTILINE = frozenset({"description"})

    #: Service names (fnmatch globs) the policy applies to.
    services: list[Annotated[str, Field(min_length=1), AfterValidator(_check_service)]] = Field(
        min_length=1
    )
    on_fail: Literal["rollback", "none"] = "rollback"
    #: ``pass`` means: treat an inconclusive check as passed (then on_pass applies).
    on_inconclusive: Literal["hold", "rollback", "pass"] = "hold"
    on_pass: Literal["promote", "none"] = "none"
    #: Stop probing as soon as a fail-severity rule has failed.
    fail_fast: bool = True
    #: Bound on the whole check.
    timeout: PositiveDuration = 600.0
    #: Logs and metrics look back at most this far (and never before the rollout).
    evidence_window: PositiveDuration = 120.0
    auth: AuthSpec = Field(default_factory=AuthSpec)
    #: ``deploy-guard rollout``'s traffic steps (None: ``--steps`` must give them).
    rollout: RolloutSpec | None = None
    #: ``deploy-guard watch``'s window, probe rounds, canary and rhythm (None: the defaults).
    watch: WatchSpec | None = None
    #: Who hears of what the guard did (Slack, Google Chat, a webhook, Pub/Sub, a log entry).
    notify: list[NotifySpec] = Field(default_factory=list, max_length=MAX_NOTIFIERS)
    rules: list[Rule] = Field(min_length=1)

    _source: str | None = PrivateAttr(default=None)
    _name_at: tuple[int, int] = PrivateAttr(default=(1, 1))
    #: Where each value was written (line and column from 1), by document path; set by the
    #: loader so that warnings about a valid policy point at their place too.
    _positions: dict[tuple[str | int, ...], tuple[int, int]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _rules_coherent(self) -> Policy:
        seen: set[str] = set()
        query = 0
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise _err(
                    "duplicate",
                    f"rule name {shown(rule.name)} is used twice; names must be unique",
                    f"rules[{index}].name",
                )
            seen.add(rule.name)
            if rule.logs is not None:
                query += _log_query_chars(rule.logs)
                if query > MAX_LOG_QUERY:
                    raise _err(
                        "log_query",
                        f"the logs rules make a Cloud Logging query of about {query} characters; "
                        f"Logging refuses queries over 20,000 and the guard keeps "
                        f"{20_000 - MAX_LOG_QUERY} for the revision scope: use fewer or "
                        "shorter patterns and filters",
                        f"rules[{index}].logs",
                    )
            ws = rule.websocket
            if ws is not None and ws.hold + ws.connect_timeout > self.timeout:
                raise _err(
                    "timeout",
                    f"hold {format_duration(ws.hold)} cannot fit in the policy timeout "
                    f"{format_duration(self.timeout)}",
                    f"rules[{index}].websocket.hold",
                )
        if self.rollout is not None and not self.step_rules:
            raise _err("rollout", NOTHING_AT_STEPS, "rollout")
        return self

    @model_validator(mode="after")
    def _pacing_fits(self) -> Policy:
        """Every probe rule whose ramp or rate cannot work in ``timeout``, reported together."""
        found = []
        for index, rule in enumerate(self.rules):
            block = rule.http if rule.http is not None else rule.websocket
            hold = rule.websocket.hold if rule.websocket is not None else 0.0
            if block is not None and (problem := pacing_problem(block, self.timeout, hold)):
                loc = ("rules", index, rule.kind, problem[0])
                found.append(InitErrorDetails(type=_err("pacing", problem[1]), loc=loc, input=None))
        if found:
            raise ValidationError.from_exception_data(type(self).__name__, found)
        return self

    @model_validator(mode="after")
    def _watch_fits_rules(self) -> Policy:
        """Every way ``watch:`` does not fit the rules, reported together."""
        found = watch_problems(self.watching, self.rules, written=self.watch is not None)
        if found:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(type=_err("watch", message), loc=loc, input=None)
                    for loc, message in found
                ],
            )
        return self

    @property
    def watching(self) -> WatchSpec:
        """The ``watch:`` block, or the defaults when the policy has none."""
        return self.watch if self.watch is not None else DEFAULT_WATCH

    @property
    def step_rules(self) -> list[Rule]:
        """The rules ``deploy-guard rollout`` judges in each traffic step."""
        return [rule for rule in self.rules if rule.at_every_step]

    @property
    def source(self) -> str | None:
        """The file the policy was loaded from, if any."""
        return self._source

    @property
    def name_at(self) -> tuple[int, int]:
        """Line and column (from 1) of ``name`` in the source file, for messages."""
        return self._name_at

    def position(self, *loc: str | int) -> tuple[int, int]:
        """Line and column of the value at ``loc`` (else of its nearest written parent).

        ``(0, 0)`` when the policy was not loaded from a file: the whole document.
        """
        for end in range(len(loc), -1, -1):
            if loc[:end] in self._positions:
                return self._positions[loc[:end]]
        return (0, 0)

    def applies_to(self, service: str) -> bool:
        """True when a ``services`` glob matches the service name (case-sensitive)."""
        return any(fnmatch.fnmatchcase(service, pattern) for pattern in self.services)

    def rule(self, name: str) -> Rule:
        """The rule called ``name``; KeyError if there is none."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)
