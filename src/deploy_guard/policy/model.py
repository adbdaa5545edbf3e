"""The policy model: what a policy file may say, as frozen pydantic models.

The field names are a contract shared with the probes, the log and metric
sources and the gate: add fields, never rename. After loading, durations are
float seconds and ratios float 0..1 (see :mod:`deploy_guard.policy.units`).

Every model forbids unknown keys: a typo (``sucess_ratio``) is an error at load
time, never a silently ignored setting. Validators raise
:class:`~pydantic_core.PydanticCustomError` with messages that say what is
allowed; a ``ctx={"at": "send.text"}`` refines where in the document the
problem sits, which :mod:`deploy_guard.policy.load` turns into line and column.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from deploy_guard.policy.units import (
    DURATION_PATTERN,
    PERCENT_PATTERN,
    Duration,
    Ratio,
    format_duration,
    parse_duration,
    parse_ratio,
)

Kind = Literal["http", "websocket", "logs", "metric"]
Severity = Literal["fail", "warn"]
MissingData = Literal["fail", "inconclusive", "ignore"]

KINDS: tuple[str, ...] = ("http", "websocket", "logs", "metric")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
#: Placeholders a WebSocket template may use: user id, session id, session number.
TEMPLATE_FIELDS = frozenset({"user", "session", "n"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JSON_PATH = re.compile(r"^(\$\.?)?[A-Za-z0-9_-]+(\[\d+\])*(\.[A-Za-z0-9_-]+(\[\d+\])*)*$")
#: Python regex features that RE2 (Cloud Logging's ``=~``) does not have.
_NOT_RE2 = re.compile(r"\(\?=|\(\?!|\(\?<=|\(\?<!|\\[1-9]")


# pydantic warns that a field named "json" shadows BaseModel.json (a deprecated
# v1 method); the name is part of the policy language, so the warning is noise.
warnings.filterwarnings(
    "ignore", message=r'Field name "json" in ".*" shadows', category=UserWarning
)


class _Model(BaseModel):
    """Frozen, closed to unknown keys; ``expect``-style aliases also accept field names."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True)


def _err(
    kind: str, message: str, at: str | tuple[str | int, ...] | None = None
) -> PydanticCustomError:
    """A validation error whose message is shown as is; ``at`` narrows its position.

    ``at`` is a dotted path (``"send.text"``, ``"rules[2].name"``) or, when a
    part is a user-written key that may itself hold dots, a tuple of parts.
    """
    return PydanticCustomError(kind, message, {"at": at} if at else None)


def _check_templates(value: Any, at: tuple[str | int, ...]) -> None:
    """Refuse ``{placeholders}`` other than {user} {session} {n}, anywhere in a template."""
    if isinstance(value, str):
        for name in _PLACEHOLDER.findall(value):
            if name not in TEMPLATE_FIELDS:
                raise _err(
                    "template",
                    f'unknown placeholder "{{{name}}}" (use {{user}}, {{session}} or {{n}})',
                    at,
                )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_templates(key, at)
            _check_templates(item, (*at, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_templates(item, (*at, index))


def _check_env_refs(headers: dict[str, str]) -> dict[str, str]:
    """Header values may say ``${NAME}``: the probe reads NAME from the environment."""
    for key, value in headers.items():
        for name in _ENV_REF.findall(value):
            if not _ENV_NAME.match(name):
                raise _err(
                    "env_ref", f'"${{{name}}}" is not an environment variable name', (str(key),)
                )
    return headers


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise _err("path", f'"{value}" must start with "/" (it is appended to the service URL)')
    return value


#: A request path (``/health``), checked the same way for HTTP and WebSocket rules.
RequestPath = Annotated[str, AfterValidator(_check_path)]
#: Request headers whose values may reference the environment (``${NAME}``).
Headers = Annotated[dict[str, str], AfterValidator(_check_env_refs)]


# --------------------------------------------------------------------------- auth


class AuthSpec(_Model):
    """How probes authenticate. The file names a *source*, never a secret value."""

    #: ``auto``: mint a Google ID token (audience: the service URL) when the
    #: credential can; ``none``: send no Authorization header.
    id_token: Literal["auto", "none"] = "auto"
    #: A custom audience for the ID token (Cloud Run custom audiences).
    audience: str | None = None
    #: Name of an environment variable holding a bearer token (overrides id_token).
    token_env: str | None = None
    #: Path of a file holding a bearer token (overrides id_token).
    token_file: str | None = None

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise _err("env_name", f'"{value}" is not an environment variable name')
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> AuthSpec:
        if self.token_env and self.token_file:
            raise _err("auth", "give token_env or token_file, not both", "token_file")
        return self


# --------------------------------------------------------------------------- http


class HttpExpect(_Model):
    """What a successful HTTP response looks like."""

    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    body_contains: str | None = None
    #: JSON path (``$.status``, ``status``, ``a.b[0].c``) -> the value expected there.
    json: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]
    max_latency: Duration | None = None

    @field_validator("json")
    @classmethod
    def _json_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            if not isinstance(path, str) or not _JSON_PATH.match(path):
                raise _err(
                    "json_path",
                    f'"{path}" is not a JSON path (use $.status, status or a.b[0].c)',
                    (str(path),),
                )
        return value


class HttpSpec(_Model):
    """An ``http`` rule: send N requests, count the ones that meet ``expect``."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    path: RequestPath = "/"
    #: Values may reference the environment: ``"${API_KEY}"``.
    headers: Headers = Field(default_factory=dict)
    body: str | None = None
    json: Any = None
    timeout: Duration = 5.0
    requests: int = Field(default=10, ge=1, le=100_000)
    concurrency: int = Field(default=1, ge=1, le=1000)
    expect: HttpExpect = Field(default_factory=HttpExpect)
    success_ratio: Ratio = 1.0

    @model_validator(mode="after")
    def _one_body(self) -> HttpSpec:
        if self.body is not None and self.json is not None:
            raise _err("body", "give body or json, not both", "json")
        return self


# --------------------------------------------------------------------------- websocket


def _send_step_schema(schema: dict[str, Any]) -> None:
    """Describe the file form ``send: {json: ...}``, not the Python fields."""
    schema.clear()
    schema.update(
        {
            "title": "SendStep",
            "type": "object",
            "properties": {
                "send": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string"},
                        "json": {"description": "a JSON message; strings may use {user}"},
                    },
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,
                }
            },
            "required": ["send"],
            "additionalProperties": False,
        }
    )


class SendStep(_Model):
    """Send one message: ``send: {json: {...}}`` or ``send: {text: "..."}`` in a file.

    Strings may use the placeholders {user}, {session} and {n}; see
    :func:`deploy_guard.policy.templates.render`.
    """

    model_config = ConfigDict(json_schema_extra=_send_step_schema)

    text: str | None = None
    json: Any = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any, info: ValidationInfo) -> Any:
        # In a file the step is {"send": {...}}; from Python it is SendStep(text=..., json=...).
        in_file = bool(info.context and info.context.get("strict_units"))
        if isinstance(data, dict) and "send" not in data and in_file:
            raise _err("send", "a send step is written send: {json: {...}} or send: {text: ...}")
        if not isinstance(data, dict) or "send" not in data:
            return data
        for key in data:
            if key != "send":
                raise _err("extra_forbidden", f'unknown key "{key}" in a send step', (str(key),))
        inner = data["send"]
        if not isinstance(inner, dict):
            raise _err("send", "send needs a mapping: {json: {...}} or {text: ...}", "send")
        for key in inner:
            if key not in ("text", "json"):
                raise _err(
                    "extra_forbidden", f'unknown key "{key}" (use text or json)', ("send", str(key))
                )
        if ("text" in inner) == ("json" in inner):
            raise _err("send", "send needs exactly one of text or json", "send")
        if "text" in inner and not isinstance(inner["text"], str):
            raise _err("send", "text must be a string", "send.text")
        _check_templates(inner.get("text"), ("send", "text"))
        _check_templates(inner.get("json"), ("send", "json"))
        return dict(inner)

    @model_validator(mode="after")
    def _exactly_one(self) -> SendStep:
        if (self.text is None) == (self.json is None):
            raise _err("send", "send needs exactly one of text or json")
        return self


class ExpectStep(_Model):
    """Wait for events, in order, each within ``timeout``. In a file: ``expect: [a, b]``."""

    events: list[Annotated[str, Field(min_length=1)]] = Field(
        validation_alias=AliasChoices("expect", "events"), min_length=1
    )
    timeout: Duration = 15.0
    #: Other events may be interleaved between the expected ones.
    allow_extra: bool = True


def _step_tag(value: Any) -> str | None:
    if isinstance(value, SendStep):
        return "SendStep"
    if isinstance(value, ExpectStep):
        return "ExpectStep"
    if isinstance(value, dict):
        if "send" in value or "text" in value or "json" in value:
            return "SendStep"
        if "expect" in value or "events" in value:
            return "ExpectStep"
    return None


#: Tags pydantic puts in error locations; the loader drops them from paths.
STEP_TAGS = frozenset({"SendStep", "ExpectStep"})

ScenarioStep = Annotated[
    Annotated[SendStep, Tag("SendStep")] | Annotated[ExpectStep, Tag("ExpectStep")],
    Discriminator(
        _step_tag,
        custom_error_type="scenario_step",
        custom_error_message="a scenario step is send: {json: ...}, send: {text: ...} "
        "or expect: [event, ...]",
    ),
]


class CloseCodes(_Model):
    """Which WebSocket close codes fail a session and which end it cleanly."""

    fail: list[Annotated[int, Field(ge=1000, le=4999)]] = Field(
        default_factory=lambda: [1011, 1006]
    )
    clean: list[Annotated[int, Field(ge=1000, le=4999)]] = Field(
        default_factory=lambda: [1000, 1001]
    )

    @model_validator(mode="after")
    def _disjoint(self) -> CloseCodes:
        both = sorted(set(self.fail) & set(self.clean))
        if both:
            raise _err("close_codes", f"{both} cannot be both fail and clean", "clean")
        return self


class Isolation(_Model):
    """Every received event that has ``field`` must carry the sending user's id."""

    field: str = Field(default="user_id", min_length=1)


class WebSocketSpec(_Model):
    """A ``websocket`` rule: run ``sessions`` scenario cycles, ``concurrency`` at a time."""

    path: RequestPath = "/"
    #: Extra query-string parameters; values may use {user} {session} {n}.
    query: dict[str, str] = Field(default_factory=dict)
    headers: Headers = Field(default_factory=dict)
    subprotocols: list[str] = Field(default_factory=list)
    connect_timeout: Duration = 5.0
    #: The JSON field of each received message that names the event.
    event_field: str = Field(default="type", min_length=1)
    scenario: list[ScenarioStep] = Field(default_factory=list)
    #: Keep the connection open this long after the scenario; a close during it fails.
    hold: Duration = 0.0
    #: Send a ping this often (None: never); keeps proxies from closing idle sessions.
    ping_interval: Duration | None = 20.0
    close_codes: CloseCodes = Field(default_factory=CloseCodes)
    sessions: int = Field(default=1, ge=1, le=1_000_000)
    #: Concurrent users; user ids are ``user-1`` .. ``user-C``.
    concurrency: int = Field(default=1, ge=1, le=10_000)
    isolation: Isolation | None = None
    success_ratio: Ratio = 1.0

    @field_validator("query")
    @classmethod
    def _query_templates(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            _check_templates(item, (str(key),))
        return value

    @model_validator(mode="after")
    def _users_fit_sessions(self) -> WebSocketSpec:
        if self.concurrency > self.sessions:
            raise _err(
                "concurrency",
                f"concurrency {self.concurrency} is more than sessions {self.sessions}: "
                "each concurrent user needs at least one session",
                "concurrency",
            )
        return self


# --------------------------------------------------------------------------- logs


def _check_regex(pattern: str) -> str:
    """A pattern must compile, and use nothing RE2 (Cloud Logging's engine) lacks."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _err("regex", f'"{pattern}" is not a regular expression: {exc}') from None
    if _NOT_RE2.search(pattern):
        raise _err(
            "regex",
            f'"{pattern}" uses look-around or back-references, which Cloud Logging (RE2) '
            "does not support",
        )
    return pattern


def _check_log_filter(fragment: str | None) -> str | None:
    """A filter fragment must parse: the guard evaluates it on each entry it reads."""
    if fragment is None:
        return None
    from deploy_guard.logfilter import FilterError, parse

    try:
        parse(fragment)
    except FilterError as exc:
        raise _err(
            "log_filter",
            f"{fragment!r} is not a Cloud Logging filter deploy-guard can read: {exc.message}"
            " (docs/emulator.md lists the supported query language)",
        ) from None
    return fragment


class LogsSpec(_Model):
    """A ``logs`` rule: count pattern matches in the candidate revision's entries.

    With no ``patterns`` every entry the filter returns counts. With none of
    ``max_count``, ``max_rate`` and ``relative_to_baseline`` the limit is
    ``max_count: 0``.
    """

    #: Cloud Logging filter fragment, ANDed with the revision scope and time bound.
    filter: Annotated[str | None, AfterValidator(_check_log_filter)] = None
    #: Regular expressions (RE2 syntax: Cloud Logging evaluates them).
    patterns: list[Annotated[str, AfterValidator(_check_regex)]] = Field(default_factory=list)
    max_count: int | None = Field(default=None, ge=0)
    #: Matches per minute.
    max_rate: float | None = Field(default=None, ge=0)
    #: The candidate's match rate may be at most this times the baseline's.
    relative_to_baseline: float | None = Field(default=None, gt=0)

    @property
    def limit_count(self) -> int | None:
        """The count limit in force (0 when no limit is written at all)."""
        if self.max_count is None and self.max_rate is None and self.relative_to_baseline is None:
            return 0
        return self.max_count


# --------------------------------------------------------------------------- metric


def _quantity(value: Any, metric: str | None, strict: bool) -> float:
    """A threshold in the metric's own unit: ratio, duration or request count."""
    if metric == "error_rate":
        try:
            return parse_ratio(value)
        except ValueError as exc:
            raise _err("ratio", f"{exc}; error_rate is a share of requests") from None
    if metric == "latency":
        try:
            return parse_duration(value, strict=strict)
        except ValueError:
            raise _err("duration", f"{_show(value)} is not a duration (use 800ms, 1.5s)") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _err("number", f"{_show(value)} is not a request count (use a number like 100)")
    return float(value)


_QUANTITY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": f"{DURATION_PATTERN}|{PERCENT_PATTERN}"},
        {"type": "null"},
    ],
    "description": "in the metric's unit: a percentage (1%) for error_rate, a duration "
    "(800ms) for latency, a number for request_count",
}


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


class BaselineRelative(_Model):
    """``value <= baseline * factor + plus``; ``plus`` is in the metric's unit."""

    factor: float = Field(default=1.0, gt=0)
    #: A number, a duration (``50ms``) or a percentage (``1%``), matching the metric.
    plus: Annotated[float, WithJsonSchema(_QUANTITY_SCHEMA)] = 0.0

    @field_validator("plus", mode="before")
    @classmethod
    def _plus(cls, value: Any) -> float:
        if isinstance(value, str):
            text = value.strip()
            try:
                return parse_ratio(text) if text.endswith("%") else parse_duration(text)
            except ValueError:
                raise _err(
                    "quantity", f'"{value}" is not a number, a duration (50ms) or a percentage'
                ) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _err("quantity", f"{_show(value)} is not a number")
        return float(value)


class MetricSpec(_Model):
    """A ``metric`` rule: one Cloud Monitoring figure of the candidate revision."""

    type: Literal["error_rate", "latency", "request_count"]
    #: Latency only.
    percentile: Literal[50, 95, 99] | None = None
    window: Duration = 300.0
    #: Fewer requests than this in the window: the rule has no data.
    min_requests: int = Field(default=20, ge=0)
    #: Absolute ceiling: error_rate ratio, latency seconds, request_count number.
    max: Annotated[float | None, WithJsonSchema(_QUANTITY_SCHEMA)] = None
    #: request_count only: a floor.
    min: Annotated[float | None, WithJsonSchema(_QUANTITY_SCHEMA)] = None
    baseline: BaselineRelative | None = None

    @field_validator("max", "min", mode="before")
    @classmethod
    def _in_unit(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        strict = bool(info.context and info.context.get("strict_units"))
        return _quantity(value, info.data.get("type"), strict)

    @model_validator(mode="after")
    def _coherent(self) -> MetricSpec:
        if self.max is None and self.min is None and self.baseline is None:
            raise _err("threshold", "give max, min or baseline: the rule needs a threshold")
        if self.percentile is not None and self.type != "latency":
            raise _err("percentile", "percentile applies to latency only", "percentile")
        if self.min is not None and self.type != "request_count":
            raise _err("min", "min applies to request_count only (a traffic floor)", "min")
        return self

    @property
    def effective_percentile(self) -> int:
        """The latency percentile in force (99 unless written)."""
        return self.percentile if self.percentile is not None else 99


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
        return self

    @property
    def spec(self) -> HttpSpec | WebSocketSpec | LogsSpec | MetricSpec:
        """The kind's own block."""
        spec = getattr(self, self.kind)
        assert spec is not None
        return spec  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- policy


class Policy(_Model):
    """One policy file: the services it covers, its rules and what to do with the verdict."""

    version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    description: str = ""
    #: Service names (fnmatch globs) the policy applies to.
    services: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    on_fail: Literal["rollback", "none"] = "rollback"
    #: ``pass`` means: treat an inconclusive check as passed (then on_pass applies).
    on_inconclusive: Literal["hold", "rollback", "pass"] = "hold"
    on_pass: Literal["promote", "none"] = "none"
    #: Stop probing as soon as a fail-severity rule has failed.
    fail_fast: bool = True
    #: Bound on the whole check.
    timeout: Duration = 600.0
    #: Logs and metrics look back at most this far (and never before the rollout).
    evidence_window: Duration = 120.0
    auth: AuthSpec = Field(default_factory=AuthSpec)
    rules: list[Rule] = Field(min_length=1)

    _source: str | None = PrivateAttr(default=None)
    _name_at: tuple[int, int] = PrivateAttr(default=(1, 1))

    @model_validator(mode="after")
    def _rules_coherent(self) -> Policy:
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise _err(
                    "duplicate",
                    f'rule name "{rule.name}" is used twice; names must be unique',
                    f"rules[{index}].name",
                )
            seen.add(rule.name)
            ws = rule.websocket
            if ws is not None and ws.hold + ws.connect_timeout > self.timeout:
                raise _err(
                    "timeout",
                    f"hold {format_duration(ws.hold)} cannot fit in the policy timeout "
                    f"{format_duration(self.timeout)}",
                    f"rules[{index}].websocket.hold",
                )
        return self

    @property
    def source(self) -> str | None:
        """The file the policy was loaded from, if any."""
        return self._source

    @property
    def name_at(self) -> tuple[int, int]:
        """Line and column (from 1) of ``name`` in the source file, for messages."""
        return self._name_at

    def applies_to(self, service: str) -> bool:
        """True when a ``services`` glob matches the service name (case-sensitive)."""
        return any(fnmatch.fnmatchcase(service, pattern) for pattern in self.services)

    def rule(self, name: str) -> Rule:
        """The rule called ``name``; KeyError if there is none."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)
