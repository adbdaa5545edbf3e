"""Structured logging set-up (structlog).

On a terminal events render as readable, coloured lines on stderr. Anywhere
else (Cloud Build, CI, a pipe) every event is one JSON object per line in the
shape Cloud Logging understands: ``severity``, ``message``, ``time`` and the
event's own fields, so ``jsonPayload.rule="ws-golden-path"`` works as a filter.

Secrets never reach a log: :func:`redact` scrubs known secret-bearing keys and
query-string credentials from every event before rendering.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

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

#: Keys whose values are always secret, whatever they hold.
SECRET_KEYS = frozenset(
    {"authorization", "token", "id_token", "access_token", "password", "secret", "api_key"}
)
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:access_token|token|key|api_key|apikey|sig|signature|password|secret)=)[^&#\s]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
REDACTED = "[redacted]"


def redact_text(text: str) -> str:
    """Remove bearer tokens and query-string credentials from free text."""
    return _BEARER.sub(r"\1" + REDACTED, _QUERY_SECRET.sub(r"\1" + REDACTED, text))


def _redact_value(key: str, value: Any) -> Any:
    if key.lower() in SECRET_KEYS:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub secrets from every field of an event."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


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
