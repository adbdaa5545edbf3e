"""Bearer tokens for probing private services, held so they never leak.

A private Cloud Run service wants ``Authorization: Bearer <ID token>`` whose
audience is the service URL (not a tag URL: see :func:`choose_audience`). The
token comes from, in order of precedence:

1. a command-line flag naming an environment variable or a file;
2. the policy's ``auth.token_env`` / ``auth.token_file``;
3. google-auth's ``fetch_id_token`` (service account key, impersonation file or
   the metadata server) when ``auth.id_token`` is ``auto`` and the URL is https.

The value lives in :class:`BearerToken`, whose ``repr``/``str`` never show it,
so a token cannot reach a log line, a report or an exception message by being
formatted by accident; and it is registered with :func:`deploy_guard.log.register_secret`
when it is read, so a copy a server echoes back (whole or cut off) is redacted
from every output too. A token that is not one line of printable ASCII (what an
HTTP header can carry) is refused with a message that quotes none of it.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploy_guard.errors import ConfigError
from deploy_guard.log import get_logger, redact_data, register_secret

_log = get_logger("deploy_guard.probes.auth")

#: Bytes of a token file read at most: an ID token is about 1 KiB, and servers refuse
#: headers much over 8 KiB; more is the wrong file (and would only be held in memory).
MAX_TOKEN_FILE = 16 * 1024


def header_value_problem(value: str) -> str | None:
    """What makes ``value`` unusable as an HTTP header value, in words that quote none of it.

    A header value is one line of printable ASCII here (spaces allowed): a line
    break would split the request, and a control or non-ASCII character is
    refused by the HTTP libraries with an error that quotes the value.
    """
    for index, char in enumerate(value, start=1):
        if char in "\r\n":
            return f"has a line break at position {index} (a header value is one line)"
        if not " " <= char <= "~":
            kind = "a non-ASCII" if ord(char) > 127 else "a control"
            return f"has {kind} character at position {index}, which an HTTP header cannot carry"
    return None


class BearerToken:
    """A secret bearer token; only :meth:`authorization` reveals it."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, source: str) -> None:
        value = value.strip()
        if not value:
            raise ConfigError(f"the bearer token from {source} is empty")
        register_secret(value)  # before any check: even a refused token is never shown
        problem = header_value_problem(value)
        if problem is not None:
            raise ConfigError(
                f"the bearer token from {source} {problem}; its content is not shown (a token "
                "is one line of printable ASCII: a credentials JSON or a key file is not one)"
            )
        self._value = value
        #: Where it came from ("env TOKEN_VAR", "file /x", "google-auth"), for messages.
        self._source = source

    @property
    def source(self) -> str:
        return self._source

    def authorization(self) -> str:
        """The ``Authorization`` header value."""
        return f"Bearer {self._value}"

    def scrub(self, value: Any) -> Any:
        """``value`` (text, or JSON-like data) with every copy of the token redacted.

        For what a server echoes back: a transcript or a close reason may
        contain the token even though the guard never printed it. The token is
        registered as a secret, so this is :func:`deploy_guard.log.redact_data`
        (which also catches a slice of it, and every other known secret).
        """
        return redact_data(value)

    def __repr__(self) -> str:
        return f"BearerToken(<redacted>, from {self._source})"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # pickling would copy the secret somewhere unseen
        raise TypeError("BearerToken cannot be pickled")


@dataclass(frozen=True)
class TokenChoice:
    """What the user asked for: flags win over the policy's ``auth`` block."""

    token_env: str | None = None
    token_file: str | None = None
    id_token: bool = True  # False: --no-id-token
    #: --audience: the ID token's audience (a custom audience), overriding every default.
    audience: str | None = None


def token_from_env(name: str) -> BearerToken:
    value = os.environ.get(name)
    if value is None or not value.strip():
        raise ConfigError(
            f"environment variable {name} (named for the probe token) is not set or empty; "
            f"export {name}=<token>, or name another source (--token-env, --token-file)"
        )
    return BearerToken(value, f"env {name}")


def token_from_file(path: str) -> BearerToken:
    try:
        with Path(path).open("rb") as fh:
            raw = fh.read(MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the probe token file {path}: {exc.strerror}") from None
    if len(raw) > MAX_TOKEN_FILE:
        raise ConfigError(
            f"the probe token file {path} is larger than {MAX_TOKEN_FILE // 1024} KiB: a token "
            "is a few hundred characters; is it the right file?"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # its message would quote the offending byte
        raise ConfigError(
            f"the probe token file {path} is not UTF-8 text (a token is printable ASCII); "
            "its content is not shown"
        ) from None
    return BearerToken(text, f"file {path}")


def fetch_id_token(audience: str) -> BearerToken:
    """Mint a Google ID token for ``audience`` (blocking; run it in a thread).

    google-auth is imported here so that commands which never probe do not pay
    for it. User credentials (``gcloud auth application-default login``) cannot
    mint ID tokens; the error says what works instead.
    """
    import google.auth.exceptions
    from google.auth.transport.requests import Request
    from google.oauth2 import id_token

    try:
        value = id_token.fetch_id_token(Request(), audience)  # type: ignore[no-untyped-call]
    except google.auth.exceptions.GoogleAuthError as exc:
        raise ConfigError(
            f"could not mint an ID token for {audience}: {type(exc).__name__}. "
            "Use a service account (GOOGLE_APPLICATION_CREDENTIALS or the metadata server), "
            "or pass --token-env / --token-file, or --no-id-token for a public service"
        ) from None
    return BearerToken(str(value), "google-auth")


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (ws/wss read as http/https): a default audience."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def choose_audience(
    choice: TokenChoice,
    *,
    url: str,
    audience: str | None = None,
    policy_audience: str | None = None,
) -> str:
    """The audience an ID token is minted for, most specific first.

    1. ``--audience`` (``choice.audience``), then the policy's ``auth.audience``:
       a custom audience configured on the service;
    2. ``audience``: what the caller knows the service URL to be. The gate
       probes a revision through a *tag* URL (``https://candidate---chat-abc.a.run.app``)
       but Cloud Run checks the token against the *service* URL
       (``https://chat-abc.a.run.app``), so it passes that here;
    3. the origin of ``url`` (scheme and host, without path or query), which
       is right when ``url`` is the service URL itself.
    """
    return choice.audience or policy_audience or audience or url_origin(url)


def named_token(
    choice: TokenChoice,
    *,
    policy_token_env: str | None = None,
    policy_token_file: str | None = None,
) -> BearerToken | None:
    """The token a flag or the policy names (a variable or a file), flags first.

    None when none is named; :class:`ConfigError` when the one named cannot be read.
    """
    named = (
        (choice.token_env, token_from_env),
        (choice.token_file, token_from_file),
        (policy_token_env, token_from_env),
        (policy_token_file, token_from_file),
    )
    for name, read in named:
        if name:
            return read(name)
    return None


async def resolve_token(
    choice: TokenChoice,
    *,
    url: str,
    audience: str | None = None,
    policy_token_env: str | None = None,
    policy_token_file: str | None = None,
    policy_id_token: str = "auto",
    policy_audience: str | None = None,
) -> BearerToken | None:
    """Pick and load the token the probes send, or None for an open service.

    ``url`` is the URL the probes address (a tag URL in a check); ``audience``
    is the service URL an ID token must name when it differs from ``url``'s
    origin (see :func:`choose_audience`; a configured audience still wins).

    ``auto`` ID tokens are only attempted for https URLs: a local http server
    is never a private Cloud Run service, and asking the metadata server from a
    laptop costs seconds. If minting fails in ``auto`` mode the probes run
    without a token (a private service then answers 401/403, which the probe
    reports) and a warning says why.
    """
    named = named_token(
        choice, policy_token_env=policy_token_env, policy_token_file=policy_token_file
    )
    if named is not None:
        return named
    if not choice.id_token or policy_id_token != "auto" or not url.startswith("https://"):
        return None
    wanted = choose_audience(choice, url=url, audience=audience, policy_audience=policy_audience)
    try:
        return await asyncio.to_thread(fetch_id_token, wanted)
    except ConfigError as exc:
        _log.warning("id_token_unavailable", audience=wanted, reason=str(exc))
        return None
