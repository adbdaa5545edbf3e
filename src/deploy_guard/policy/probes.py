"""The ``http`` rule and what both probe kinds share: request path, headers, success ratio, auth.

A probe sends its own requests to the candidate, so what it may send is checked
here as an HTTP client would refuse it at send time: a header name with a space,
a non-ASCII header value or a path starting with ``//`` would fail every
request, far from its cause.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from deploy_guard.policy.base import (
    _ENV_NAME,
    _TOKEN,
    NonEmpty,
    PositiveDuration,
    _err,
    _Model,
    _text_problem,
)
from deploy_guard.policy.pacing import Rate
from deploy_guard.policy.units import Ratio, shown

_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_JSON_PATH = re.compile(r"^(\$\.?)?[A-Za-z0-9_-]+(\[\d+\])*(\.[A-Za-z0-9_-]+(\[\d+\])*)*$")


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
    #: Start at most this many requests a second, evenly spaced (None: as fast as
    #: ``concurrency`` allows); see :mod:`deploy_guard.policy.pacing`.
    rate: Rate | None = None
    #: Grow the concurrent workers linearly from 1 to ``concurrency`` over this time.
    ramp: PositiveDuration | None = None
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
