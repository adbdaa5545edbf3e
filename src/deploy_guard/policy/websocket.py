"""The ``websocket`` rule: sessions that run a scenario of sends and expected events.

A scenario step is ``send: {...}`` or ``expect: [...]`` in a file; pydantic
tells them apart by :func:`_step_tag`, whose tags (:data:`STEP_TAGS`) show in
error locations and are dropped from paths by the loader. Templates may use
only the placeholders in :data:`TEMPLATE_FIELDS`: an unknown one is refused at
load time rather than sent as literal text.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deploy_guard.policy.base import _TOKEN, PositiveDuration, _err, _Model
from deploy_guard.policy.pacing import Rate
from deploy_guard.policy.probes import Headers, RequestPath, SuccessRatio
from deploy_guard.policy.units import Duration, in_policy_file, shown

#: Placeholders a WebSocket template may use: user id, session id, session number.
TEMPLATE_FIELDS = frozenset({"user", "session", "n"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
#: The longest a WebSocket may stay open on Cloud Run: its request timeout is at most 60 minutes.
MAX_HOLD = 3600.0


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
        in_file = in_policy_file(info)
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
    #: Start at most this many sessions a second, evenly spaced (None: as fast as
    #: ``concurrency`` allows); see :mod:`deploy_guard.policy.pacing`.
    rate: Rate | None = None
    #: Grow the concurrent users linearly from 1 to ``concurrency`` over this time.
    ramp: PositiveDuration | None = None
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
