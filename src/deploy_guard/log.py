"""Structured logging set-up (structlog).

On a terminal events render as readable, coloured lines on stderr. Anywhere
else (Cloud Build, CI, a pipe) every event is one JSON object per line in the
shape Cloud Logging understands: ``severity``, ``message``, ``time`` and the
event's own fields, so ``jsonPayload.rule="ws-golden-path"`` works as a filter.

Secrets never reach any output. This module is the one place that knows what
a secret looks like, and every channel calls it at the point where output is
made: the structlog processor :func:`redact` (every event), the report's
serialisation (``CheckReport.to_dict``, which the JSON report, the Markdown
summary and the terminal view all read), and the probe and error text
(:func:`redact_text`). It scrubs:

- values registered with :func:`register_secret` when they enter the process
  (a bearer token when it is read, a header value expanded from ``${NAME}``),
  including any slice of :data:`MIN_SLICE` or more characters of one, so a
  token cut off by a body sample, or echoed in a close reason, is still caught;
- URLs that are credentials (a webhook's, :func:`register_secret_url`): whole,
  and their token-like pieces;
- every query-string value (``?page=[redacted]``) except for parameters a policy
  marks safe (:func:`allow_query_params`), and the password of ``user:pass@``;
- ``Bearer ...`` credentials and the values of secret-named keys (:data:`SECRET_KEYS`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, unquote_plus

# structlog is imported inside the functions below: importing it costs ~120 ms
# (its dev renderer pulls in rich), which `deploy-guard --help` should not pay.

_SEVERITY = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
}

#: Keys whose values are always secret, whatever they hold (compared lower-cased).
SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "token",
        "id_token",
        "access_token",
        "private_token",
        "password",
        "secret",
        "client_secret",
        "api_key",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "apikey",
    }
)
REDACTED = "[redacted]"
#: A run of this many characters of a registered secret is a leak of it: a
#: sample or a reason that cut the secret off still shows that much of it.
MIN_SLICE = 8
#: Values shorter than this are not registered: they would blank out ordinary
#: words and numbers everywhere (and a credential that short is guessable).
MIN_SECRET = 6

#: ``?name=value`` / ``&name=value``: every value is redacted unless ``name`` is safe.
_QUERY_VALUE = re.compile(r"(?<=[?&])([^=&#?\s\"'<>]+)=([^&#\s\"'<>]+)")
#: ``scheme://user:password@``: the password goes.
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
_BEARER = re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+")


@dataclass(frozen=True)
class _Known:
    """What is secret right now; replaced whole (never mutated) so readers need no lock."""

    values: frozenset[str] = frozenset()
    #: Every MIN_SLICE-character window of every long secret (and its encodings).
    grams: frozenset[str] = frozenset()
    #: Secrets (and encodings) shorter than MIN_SLICE, and secret URLs, longest first:
    #: matched whole.
    short: tuple[str, ...] = ()
    #: Query parameters whose values may be printed (the policy's ``auth.safe_query_params``).
    safe_params: frozenset[str] = frozenset()


_known = _Known()
_lock = threading.Lock()


def _encodings(value: str) -> set[str]:
    """The secret as it appears raw, URL-encoded and JSON-escaped (a server may echo any)."""
    return {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a secret in every output from now on (idempotent, thread-safe).

    Called once where a secret enters the process: a bearer token when it is
    read, a header value when ``${NAME}`` is expanded. Values shorter than
    :data:`MIN_SECRET` characters are ignored.
    """
    global _known
    if not value:
        return
    value = value.strip()
    if len(value) < MIN_SECRET or value in _known.values:
        return
    with _lock:
        known = _known
        grams = set(known.grams)
        short = set(known.short)
        for form in _encodings(value):
            if len(form) < MIN_SLICE:
                short.add(form)
            else:
                grams.update(form[i : i + MIN_SLICE] for i in range(len(form) - MIN_SLICE + 1))
        _known = _Known(
            values=known.values | {value},
            grams=frozenset(grams),
            short=tuple(sorted(short, key=len, reverse=True)),
            safe_params=known.safe_params,
        )


def register_url_secrets(url: str) -> None:
    """Register the query values of ``url`` (a signed URL's signature) that are not safe.

    A server may echo its query string back without the ``?`` that
    :func:`redact_text` recognises a query by; registered, the values are
    caught anywhere. The password of ``user:password@host`` is registered too.
    """
    from urllib.parse import parse_qsl, urlsplit

    try:
        query = urlsplit(url).query
    except ValueError:
        return
    safe = _known.safe_params
    with contextlib.suppress(ValueError):  # a bad port: the URL check says so later
        register_secret(urlsplit(url).password)
    for name, value in parse_qsl(query, keep_blank_values=False):
        if name not in safe:
            register_secret(value)


#: Where a secret URL's path splits into pieces (a piece, not the segment, may be a token).
_URL_PIECES = re.compile(r"[/\-_.~]+")


def _token_like(piece: str) -> bool:
    """A URL piece that looks like a credential: letters and digits only, 8 or more of
    them, with a digit, both cases, or 20 or more characters (``T0A1B2C3D``, Slack's
    24-character token); never a word such as ``services`` or ``deploy``."""
    if len(piece) < MIN_SLICE or not piece.isalnum():
        return False
    mixed = piece.lower() != piece and piece.upper() != piece
    return mixed or len(piece) >= 20 or any(c.isdigit() for c in piece)


def register_secret_url(url: str | None) -> None:
    """Treat a URL that is itself a credential (a webhook's) as a secret in every output.

    The whole URL goes wherever it appears, and so do its token-like pieces
    (:func:`_token_like`), its query values and its password, even cut apart.
    Not every slice of the URL: that would redact ``https://`` and
    ``/services/`` everywhere.
    """
    global _known
    if not url or not url.strip():
        return
    url = url.strip()
    from urllib.parse import urlsplit

    register_url_secrets(url)
    try:
        path = urlsplit(url).path
    except ValueError:
        path = url
    for piece in _URL_PIECES.split(path):
        if _token_like(piece):
            register_secret(piece)
    forms = _encodings(url)
    if "://" in url:
        forms |= _encodings(url.split("://", 1)[1])
    with _lock:
        known = _known
        short = set(known.short) | {form for form in forms if form}
        _known = _Known(
            values=known.values | {url},
            grams=known.grams,
            short=tuple(sorted(short, key=len, reverse=True)),
            safe_params=known.safe_params,
        )


def allow_query_params(names: Iterable[str]) -> None:
    """Let the values of these query parameters be printed (``?page=2``); all others are redacted.

    The policy's ``auth.safe_query_params``; names match exactly. Replaces the
    previous list.
    """
    global _known
    with _lock:
        k = _known
        _known = _Known(k.values, k.grams, k.short, frozenset(names))


def forget_secrets() -> None:
    """Forget every registered secret and safe parameter (tests start each case clean)."""
    global _known
    with _lock:
        _known = _Known()


def _scrub_known(text: str, known: _Known) -> str:
    """Replace each run of text made of registered-secret windows with :data:`REDACTED`."""
    for form in known.short:
        if form in text:
            text = text.replace(form, REDACTED)
    grams = known.grams
    k = MIN_SLICE
    if not grams or len(text) < k:
        return text
    out: list[str] = []
    last = start = 0
    end = -1
    for i in range(len(text) - k + 1):
        if text[i : i + k] in grams:
            if i > end:  # not touching the current run: close it, start another
                if end >= 0:
                    out += [text[last:start], REDACTED]
                    last = end
                start = i
            end = i + k
    if end < 0:
        return text
    out += [text[last:start], REDACTED, text[end:]]
    return "".join(out)


def redact_text(text: str) -> str:
    """``text`` with every known secret, query value and credential replaced by :data:`REDACTED`."""
    if not text:
        return text
    known = _known
    safe = known.safe_params
    text = _scrub_known(text, known)  # first: a known secret goes whole, whatever it holds

    def query_value(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if value == REDACTED or unquote_plus(name) in safe:
            return m.group(0)
        return f"{name}={REDACTED}"

    if "=" in text:
        text = _QUERY_VALUE.sub(query_value, text)
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    return _BEARER.sub(r"\1" + REDACTED, text)


def redact_data(value: Any, key: str = "") -> Any:
    """A copy of JSON-like ``value`` with secrets redacted at any depth.

    Values of :data:`SECRET_KEYS` go whole; strings (keys too) pass through
    :func:`redact_text`; other objects become their redacted ``str`` (their
    ``repr`` could hold a secret), except numbers, booleans and None.
    """
    if key.lower() in SECRET_KEYS:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {
            (redact_text(k) if isinstance(k, str) else k): redact_data(v, str(k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(v, key) for v in value]
    return redact_text(str(value))


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub secrets from every field of an event."""
    for key in list(event_dict):
        event_dict[key] = redact_data(event_dict[key], key)
    return event_dict


def _redacting_excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """Print an uncaught exception's traceback as Python does, secrets redacted."""
    import traceback

    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(redact_text(text))
    sys.stderr.flush()


def redact_uncaught() -> None:
    """Make a crash's traceback (the last output a process makes) go through redaction too."""
    sys.excepthook = _redacting_excepthook


def _cloud_logging_shape(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    level = str(event_dict.pop("level", method))
    event_dict["severity"] = _SEVERITY.get(level, "DEFAULT")
    event_dict["message"] = event_dict.pop("event", "")
    if "timestamp" in event_dict:
        event_dict["time"] = event_dict.pop("timestamp")
    return event_dict


def configure(
    *, json: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog once for the process.

    ``json=None`` picks by the stream: readable lines on a TTY, Cloud Logging
    JSON otherwise.
    """
    import structlog

    out = stream if stream is not None else sys.stderr
    as_json = (not out.isatty()) if json is None else json
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # A traceback becomes plain text before redaction, in both renderings:
        # an exception's message can hold a secret (a URL with a token), and
        # the console's rich tracebacks would print every local variable
        # (tokens, headers) after any redaction had run.
        structlog.processors.format_exc_info,
        redact,
    ]
    if as_json:
        processors += [_cloud_logging_shape, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> Any:
    """Return a structlog logger; ``name`` becomes the ``logger`` field.

    The logger is a lazy proxy: it picks up the configuration in force when it
    logs, not when it was made, so module-level loggers follow a later
    :func:`configure` (and ``structlog.testing.capture_logs``).
    """
    if name:
        return _NamedLogger(name)
    import structlog

    return structlog.get_logger()


class _NamedLogger:
    """A logger that binds ``logger=name`` at each call, against the current configuration."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import structlog

        return getattr(structlog.get_logger().bind(logger=self._name), attr)
