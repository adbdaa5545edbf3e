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
import math
import re
import warnings
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
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
    shown,
)

Kind = Literal["http", "websocket", "logs", "metric"]
Severity = Literal["fail", "warn"]
MissingData = Literal["fail", "inconclusive", "ignore"]

KINDS: tuple[str, ...] = ("http", "websocket", "logs", "metric")
#: Rules that send their own requests; the others read what the service logged and served.
PROBE_KINDS: tuple[str, ...] = ("http", "websocket")
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
#: Placeholders a WebSocket template may use: user id, session id, session number.
TEMPLATE_FIELDS = frozenset({"user", "session", "n"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JSON_PATH = re.compile(r"^(\$\.?)?[A-Za-z0-9_-]+(\[\d+\])*(\.[A-Za-z0-9_-]+(\[\d+\])*)*$")
#: Python regex features that RE2 (Cloud Logging's ``=~``) does not have, by the
#: opcode of Python's own regex parser: the compiled pattern says what it uses.
_NOT_RE2 = {
    "ASSERT": "look-around or back-references",
    "ASSERT_NOT": "look-around or back-references",
    "GROUPREF": "look-around or back-references",
    "GROUPREF_EXISTS": "a conditional group (?(1)...)",
    "ATOMIC_GROUP": "an atomic group (?>...)",
    "POSSESSIVE_REPEAT": "a possessive quantifier (*+, ++, ?+)",
    "AT_END_STRING": "\\Z (write $ instead)",
}
#: An HTTP header name or WebSocket subprotocol (RFC 9110 ``token``).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: What a Cloud Run service name glob may hold: the name's own characters and fnmatch's.
_SERVICE_GLOB = re.compile(r"^[a-z0-9*?\[\]!-]+$")
#: The longest a WebSocket may stay open on Cloud Run: its request timeout is at most 60 minutes.
MAX_HOLD = 3600.0
#: A Cloud Run service name: a letter first, letters, digits and hyphens, 49 characters at most.
_SERVICE_NAME = re.compile(r"^[a-z](?:[a-z0-9-]{0,47}[a-z0-9])?$")
#: Fields the guard's own scope sets in every Logging query; a rule's fragment may not.
_SCOPE_FIELDS = frozenset(
    {
        "timestamp",
        "resource.type",
        "resource.labels.service_name",
        "resource.labels.revision_name",
    }
)
#: What a policy's logs rules may take of the one Cloud Logging query (20,000 characters at
#: most); the rest is room for the guard's scope: resource type, service, revisions, timestamp.
MAX_LOG_QUERY = 19_000


# pydantic warns that a field named "json" shadows BaseModel.json (a deprecated
# v1 method); the name is part of the policy language, so the warning is noise.
warnings.filterwarnings(
    "ignore", message=r'Field name "json" in ".*" shadows', category=UserWarning
)


def _text_problem(text: str, multiline: bool) -> str | None:
    """Why ``text`` cannot work in a policy, or None.

    A lone surrogate (``"\\ud83d"``, half of an escaped emoji) is not a
    character: it cannot be encoded as UTF-8, so a request, a log filter or a
    report that carried it would fail, silently far from its cause. Control
    characters (NUL, BEL, ESC, ...) corrupt headers, URLs, filters and
    terminals; only free text may hold tabs and line breaks.
    """
    for char in text:
        code = ord(char)
        if 0xD800 <= code <= 0xDFFF:
            return (
                f"{shown(text)} holds a lone surrogate (\\u{code:04x}), which is not a character: "
                "write the character itself or its full escape (\\U0001F600, not \\ud83d\\ude00)"
            )
        if char in "\t\n\r":
            if not multiline:
                return f"{shown(text)} holds a tab or line break, which cannot work here: remove it"
        elif code < 0x20 or 0x7F <= code <= 0x9F:
            return (
                f"{shown(text)} holds the control character U+{code:04X}, which cannot work "
                "here: remove it"
            )
    return None


def _text_problems(value: Any, at: tuple[str | int, ...], multiline: bool) -> None:
    """Walk free-form data (``json:`` bodies, maps, lists); raise at the first unusable value."""
    if isinstance(value, str):
        problem = _text_problem(value, multiline)
        if problem:
            raise _err("text", problem, at)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _err("not_finite", f"{value} is not a finite number", at)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := _text_problem(key, False)):
                raise _err("text", f"key {problem}", (*at, key))
            _text_problems(item, (*at, str(key)), multiline)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _text_problems(item, (*at, index), multiline)


class _Model(BaseModel):
    """Frozen, closed to unknown keys; ``expect``-style aliases also accept field names.

    Two checks hold for every field of every model, so no field can forget
    them: numbers are finite (``.nan`` and ``.inf`` are refused: a threshold of
    ``.inf`` passes anything, a NaN compares false with everything), and text
    holds only characters that can work (see :func:`_text_problem`); fields
    named in ``_MULTILINE`` are free text and may also hold tabs and line breaks.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, allow_inf_nan=False
    )

    #: Fields that hold free text (messages, bodies, descriptions), not names or URLs.
    _MULTILINE: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _usable_values(self) -> Any:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if not isinstance(value, BaseModel):
                _text_problems(value, (name,), name in self._MULTILINE)
        return self


def _err(
    kind: str, message: str, at: str | tuple[str | int, ...] | None = None
) -> PydanticCustomError:
    """A validation error whose message is shown as is; ``at`` narrows its position.

    ``at`` is a dotted path (``"send.text"``, ``"rules[2].name"``) or, when a
    part is a user-written key that may itself hold dots, a tuple of parts.
    """
    return PydanticCustomError(kind, message, {"at": at} if at else None)


def _positive(value: float) -> float:
    if value <= 0:
        raise _err("positive", f"{format_duration(value)} cannot work: give a duration above 0")
    return value


#: A duration that must be more than zero (a timeout, an interval, a window).
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def _check_templates(value: Any, at: tuple[str | int, ...]) -> None:
    """Refuse ``{placeholders}`` other than {user} {session} {n}, anywhere in a template."""
    if isinstance(value, str):
        for name in _PLACEHOLDER.findall(value):
            if name not in TEMPLATE_FIELDS:
                raise _err(
                    "template",
                    f"unknown placeholder {shown('{' + name + '}')} "
                    "(use {user}, {session} or {n})",
                    at,
                )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_templates(key, at)
            _check_templates(item, (*at, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_templates(item, (*at, index))


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Names are HTTP tokens, values ASCII; values may say ``${NAME}`` (read from the environment).

    A name with a space or a colon, or a value with a non-ASCII character, is
    refused by the HTTP client at send time: every request would fail.
    """
    for key, value in headers.items():
        if problem := _text_problem(value, False):  # before "not ASCII": it says more
            raise _err("text", problem, (str(key),))
        if not _TOKEN.match(key):
            raise _err(
                "header",
                f"{shown(key)} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)",
                (str(key),),
            )
        if not value.isascii():
            raise _err(
                "header",
                f"{shown(value)} is not ASCII, which HTTP header values must be "
                "(percent-encode or base64 other text)",
                (str(key),),
            )
        for name in _ENV_REF.findall(value):
            if not _ENV_NAME.match(name):
                raise _err(
                    "env_ref",
                    f"{shown('${' + name + '}')} is not an environment variable name",
                    (str(key),),
                )
    return headers


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise _err(
            "path", f'{shown(value)} must start with "/" (it is appended to the service URL)'
        )
    if value.startswith("//"):
        raise _err(
            "path",
            f"{shown(value)} starts with //, which a URL reads as a host name (the probe "
            "would drop it and request the rest): start with a single /",
        )
    if "#" in value:
        raise _err(
            "path",
            f"{shown(value)} has a #fragment, which is never sent to the server: drop it "
            "(or write %23 for a literal #)",
        )
    return value


def _final_status(value: int) -> int:
    if value < 200:
        raise _err(
            "status",
            f"{value} is an interim answer (1xx): an HTTP client never ends a request on it, "
            "so it can never match; use the final status (200-599)",
        )
    return value


def _no_zero_ratio(value: float) -> float:
    if value <= 0:
        raise _err(
            "ratio",
            "0% passes even when every attempt fails: give the share that must succeed "
            "(to only observe a rule, write dry_run: true)",
        )
    return value


#: A request path (``/health``), checked the same way for HTTP and WebSocket rules.
RequestPath = Annotated[str, AfterValidator(_check_path)]
#: Request headers whose values may reference the environment (``${NAME}``).
Headers = Annotated[dict[str, str], AfterValidator(_check_headers)]
#: The share of probes that must succeed: above 0 (0 % could never fail).
SuccessRatio = Annotated[Ratio, AfterValidator(_no_zero_ratio)]
#: Text that must not be empty (an empty value cannot mean anything).
NonEmpty = Annotated[str, Field(min_length=1)]


# --------------------------------------------------------------------------- auth


class AuthSpec(_Model):
    """How probes authenticate. The file names a *source*, never a secret value."""

    #: ``auto``: mint a Google ID token (audience: the service URL) when the
    #: credential can; ``none``: send no Authorization header.
    id_token: Literal["auto", "none"] = "auto"
    #: A custom audience for the ID token (Cloud Run custom audiences).
    audience: NonEmpty | None = None
    #: Name of an environment variable holding a bearer token (overrides id_token).
    token_env: str | None = None
    #: Path of a file holding a bearer token (overrides id_token).
    token_file: NonEmpty | None = None
    #: Query parameters whose values may be printed (``page``); every other
    #: query value is redacted from logs, reports and probe output.
    safe_query_params: list[NonEmpty] = Field(default_factory=list)

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise _err("env_name", f"{shown(value)} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> AuthSpec:
        if self.token_env and self.token_file:
            raise _err("auth", "give token_env or token_file, not both", "token_file")
        if self.audience is not None and (
            self.id_token == "none" or self.token_env or self.token_file
        ):
            raise _err(
                "auth",
                "audience is the audience of the ID token deploy-guard mints; with "
                "id_token: none, token_env or token_file no ID token is minted: drop audience",
                "audience",
            )
        return self


# --------------------------------------------------------------------------- http


class HttpExpect(_Model):
    """What a successful HTTP response looks like."""

    _MULTILINE = frozenset({"body_contains", "json"})

    status: list[Annotated[int, Field(ge=100, le=599), AfterValidator(_final_status)]] = Field(
        default_factory=lambda: [200], min_length=1
    )
    #: Empty would be found in every body: leave it out instead.
    body_contains: NonEmpty | None = None
    #: JSON path (``$.status``, ``status``, ``a.b[0].c``) -> the value expected there.
    json: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]
    max_latency: PositiveDuration | None = None

    @field_validator("json")
    @classmethod
    def _json_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path in value:
            if not isinstance(path, str) or not _JSON_PATH.match(path):
                raise _err(
                    "json_path",
                    f"{shown(str(path))} is not a JSON path (use $.status, status or a.b[0].c)",
                    (str(path),),
                )
        return value


class HttpSpec(_Model):
    """An ``http`` rule: send N requests, count the ones that meet ``expect``."""

    _MULTILINE = frozenset({"body", "json"})

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    path: RequestPath = "/"
    #: Values may reference the environment: ``"${API_KEY}"``.
    headers: Headers = Field(default_factory=dict)
    body: str | None = None
    json: Any = None
    timeout: PositiveDuration = 5.0
    requests: int = Field(default=10, ge=1, le=100_000)
    concurrency: int = Field(default=1, ge=1, le=1000)
    expect: HttpExpect = Field(default_factory=HttpExpect)
    success_ratio: SuccessRatio = 1.0

    @model_validator(mode="after")
    def _one_body(self) -> HttpSpec:
        if self.body is not None and self.json is not None:
            raise _err("body", "give body or json, not both", "json")
        if self.method == "HEAD":
            for key in ("body_contains", "json"):
                if getattr(self.expect, key):
                    raise _err(
                        "head",
                        f"a HEAD response has no body, so expect.{key} can never match: "
                        "use GET, or drop it",
                        f"expect.{key}",
                    )
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
    _MULTILINE = frozenset({"text", "json"})

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
                raise _err(
                    "extra_forbidden", f"unknown key {shown(str(key))} in a send step", (str(key),)
                )
        inner = data["send"]
        if not isinstance(inner, dict):
            raise _err("send", "send needs a mapping: {json: {...}} or {text: ...}", "send")
        for key in inner:
            if key not in ("text", "json"):
                raise _err(
                    "extra_forbidden",
                    f"unknown key {shown(str(key))} (use text or json)",
                    ("send", str(key)),
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
    timeout: PositiveDuration = 15.0
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

    _MULTILINE = frozenset({"query"})

    path: RequestPath = "/"
    #: Extra query-string parameters; values may use {user} {session} {n}.
    query: dict[str, str] = Field(default_factory=dict)
    headers: Headers = Field(default_factory=dict)
    #: RFC 6455 subprotocol names (HTTP tokens).
    subprotocols: list[Annotated[str, Field(pattern=_TOKEN.pattern)]] = Field(default_factory=list)
    connect_timeout: PositiveDuration = 5.0
    #: The JSON field of each received message that names the event.
    event_field: str = Field(default="type", min_length=1)
    scenario: list[ScenarioStep] = Field(default_factory=list)
    #: Keep the connection open this long after the scenario; a close during it fails.
    #: At most 60 minutes: Cloud Run ends every request, WebSockets included, by then.
    hold: Annotated[Duration, Field(le=MAX_HOLD)] = 0.0
    #: Send a ping this often (None: never); keeps proxies from closing idle sessions.
    ping_interval: PositiveDuration | None = 20.0
    close_codes: CloseCodes = Field(default_factory=CloseCodes)
    sessions: int = Field(default=1, ge=1, le=1_000_000)
    #: Concurrent users; user ids are ``user-1`` .. ``user-C``.
    concurrency: int = Field(default=1, ge=1, le=10_000)
    isolation: Isolation | None = None
    success_ratio: SuccessRatio = 1.0

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

    @property
    def longest_session(self) -> float:
        """Seconds a healthy session may last: every expect step's timeout, then the hold.

        Cloud Run cuts a WebSocket at the service's request timeout (300 s by
        default), so a session this long needs a longer one.
        """
        steps = sum(step.timeout for step in self.scenario if isinstance(step, ExpectStep))
        return float(steps + self.hold)


# --------------------------------------------------------------------------- logs


def _not_re2(node: Any) -> str | None:
    """The first feature of a parsed Python regex that RE2 lacks (see :data:`_NOT_RE2`)."""
    from re import _parser  # type: ignore[attr-defined]

    if isinstance(node, _parser.SubPattern):
        for op, arg in node:
            what = _NOT_RE2.get(str(op)) or _NOT_RE2.get(str(arg) if str(op) == "AT" else "")
            if what or (what := _not_re2(arg)):
                return what
    elif isinstance(node, tuple | list):
        for item in node:
            if what := _not_re2(item):
                return what
    return None


def _check_regex(pattern: str) -> str:
    """A pattern must compile, and use nothing RE2 (Cloud Logging's engine) lacks."""
    from re import _parser  # type: ignore[attr-defined]

    try:
        re.compile(pattern)
        what = _not_re2(_parser.parse(pattern))
    except re.error as exc:
        raise _err("regex", f"{shown(pattern)} is not a regular expression: {exc}") from None
    if what:
        raise _err(
            "regex", f"{shown(pattern)} uses {what}, which Cloud Logging (RE2) does not support"
        )
    return pattern


def _check_pattern(pattern: str) -> str:
    if not pattern:
        raise _err(
            "regex",
            "an empty pattern matches every entry: to count every entry the filter selects, "
            "leave patterns out",
        )
    return _check_regex(pattern)


def _check_log_filter(fragment: str | None) -> str | None:
    """A filter fragment must parse: the guard evaluates it on each entry it reads."""
    if fragment is None:
        return None
    from deploy_guard.logfilter import FilterError, parse

    try:
        parsed = parse(fragment)
    except FilterError as exc:
        raise _err(
            "log_filter",
            f"{shown(fragment)} is not a Cloud Logging filter deploy-guard can read: {exc.message}"
            " (docs/emulator.md lists the supported query language)",
        ) from None
    owned = sorted(parsed.fields & _SCOPE_FIELDS)
    if owned:
        raise _err(
            "log_filter",
            f"{owned[0]} is deploy-guard's to set: every query already keeps to the service, "
            "its candidate and baseline revisions and the time since the rollout, and a rule "
            f"that narrows them never sees what it should; drop the {owned[0]} term",
        )
    return fragment


class LogsSpec(_Model):
    """A ``logs`` rule: count pattern matches in the candidate revision's entries.

    With no ``patterns`` every entry the filter returns counts. With none of
    ``max_count``, ``max_rate`` and ``relative_to_baseline`` the limit is
    ``max_count: 0``.
    """

    _MULTILINE = frozenset({"filter", "patterns"})

    #: Cloud Logging filter fragment, ANDed with the revision scope and time bound.
    filter: Annotated[str | None, AfterValidator(_check_log_filter)] = None
    #: Regular expressions (RE2 syntax: Cloud Logging evaluates them).
    patterns: list[Annotated[str, AfterValidator(_check_pattern)]] = Field(default_factory=list)
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
            raise _err("duration", f"{shown(value)} is not a duration (use 800ms, 1.5s)") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _err("number", f"{shown(value)} is not a request count (use a number like 100)")
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
                    "quantity", f"{shown(value)} is not a number, a duration (50ms) or a percentage"
                ) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _err("quantity", f"{shown(value)} is not a number")
        if value < 0:
            raise _err(
                "quantity",
                f"{shown(value)} is negative: the rule would fail whenever the baseline is "
                "near zero (use factor below 1 to demand better than the baseline)",
            )
        return float(value)


class MetricSpec(_Model):
    """A ``metric`` rule: one Cloud Monitoring figure of the candidate revision."""

    type: Literal["error_rate", "latency", "request_count"]
    #: Latency only.
    percentile: Literal[50, 95, 99] | None = None
    window: PositiveDuration = 300.0
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
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _err(
                "min",
                f"min {self.min:g} is above max {self.max:g}: no request count can pass",
                "min",
            )
        if self.type == "error_rate" and self.max is not None and self.max >= 1:
            raise _err(
                "max",
                "an error rate of 100% passes even when every request fails: give the share "
                "of errors to tolerate (1%)",
                "max",
            )
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


# --------------------------------------------------------------------------- rollout


#: At most this many steps: each is a verified traffic write and a judged window.
MAX_STEPS = 20
#: Cloud Run's request metrics: "Sampled every 60 seconds. After sampling, data is not
#: visible for up to 180 seconds" (Cloud Monitoring's metric list; gcp-facts.md).
DEFAULT_METRIC_LAG = 180.0
#: A lag beyond an hour cannot be meant: no step could wait for its data.
MAX_METRIC_LAG = 3600.0


def _step_percent(value: Any) -> Any:
    """Before int parsing: ``true`` is not 1 %, and ``10%`` says how to write it."""
    if isinstance(value, bool):
        raise _err("percent", f"{shown(value)} is not a whole number")
    if isinstance(value, str) and value.strip().endswith("%"):
        raise _err(
            "percent",
            f"{shown(value)} is not a whole number: write the percent without % (10, not 10%)",
        )
    return value


def _percent_in_range(value: int) -> int:
    if value < 1:
        raise _err(
            "percent",
            f"{value}% gives the candidate no traffic to judge: a step's percent is 1 to 99",
        )
    if value > 99:
        raise _err(
            "percent",
            f"{value}% is not a step: after its last step the rollout sends 100% to the "
            "candidate itself; a step's percent is 1 to 99",
        )
    return value


def _lag_at_most_an_hour(value: float) -> float:
    if value > MAX_METRIC_LAG:
        raise _err(
            "metric_lag",
            f"{format_duration(value)} is longer than 1h: Cloud Monitoring shows a Cloud Run "
            "point at most 3m after sampling it, and no step could wait this long for its data "
            "(the default, 3m, matches Cloud Run)",
        )
    return value


class RolloutStep(_Model):
    """One traffic step of ``deploy-guard rollout``: the candidate's share and how long."""

    percent: Annotated[
        int,
        BeforeValidator(_step_percent),
        AfterValidator(_percent_in_range),
        Field(json_schema_extra={"minimum": 1, "maximum": 99}),
    ]
    duration: PositiveDuration


class RolloutSpec(_Model):
    """``rollout:``: the steps ``deploy-guard rollout`` walks before 100 %.

    Each step gives the candidate more traffic than the one before: a step that
    went back down would judge less traffic than was already judged.
    """

    steps: list[RolloutStep] = Field(min_length=1, max_length=MAX_STEPS)
    #: How old a Cloud Monitoring point must be to count in a step (complete data).
    metric_lag: Annotated[Duration, AfterValidator(_lag_at_most_an_hour)] = DEFAULT_METRIC_LAG

    @model_validator(mode="after")
    def _steps_go_up(self) -> RolloutSpec:
        for index in range(1, len(self.steps)):
            before, step = self.steps[index - 1].percent, self.steps[index].percent
            if step <= before:
                raise _err(
                    "steps_order",
                    f"step {index + 1} ({step}%) is not above step {index} ({before}%): each "
                    "step gives the candidate more traffic than the one before (10, 50, ...)",
                    f"steps[{index}].percent",
                )
        return self


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


def _log_query_chars(spec: LogsSpec) -> int:
    """About how much of the one Cloud Logging query a logs rule takes (quotes escaped)."""
    size = len(spec.filter or "") + 8
    for pattern in spec.patterns:
        literal = len(pattern) + pattern.count("\\") + pattern.count('"') + 2
        size += 2 * literal + len("textPayload=~ OR jsonPayload.message=~ OR ")
    return size


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
