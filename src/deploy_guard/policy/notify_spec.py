"""The ``notify:`` list: who hears of what, and where each notifier's secret comes from.

Each entry is one notifier: its ``kind``, where it sends (``url_env`` names the
environment variable holding a webhook's URL, which is its credential and so
never written in a policy; ``topic`` a Pub/Sub topic), an optional
``secret_env`` (the webhook's HMAC-SHA256 key) and ``on:``, the events it
wants (see :mod:`deploy_guard.events.model`). Only the shape is checked here;
whether the variables are set is checked when a run starts, before any API
call (:mod:`deploy_guard.events.setup`), since ``policy validate`` runs where
the secrets are not.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from deploy_guard.events.model import DEFAULT_ON, EventKind
from deploy_guard.policy.base import _ENV_NAME, _err, _Model
from deploy_guard.policy.units import shown

NotifierKind = Literal["slack", "google_chat", "webhook", "pubsub", "log"]
NOTIFIER_KINDS: tuple[str, ...] = ("slack", "google_chat", "webhook", "pubsub", "log")
#: The kinds that POST to a URL read from ``url_env``.
URL_KINDS: tuple[str, ...] = ("slack", "google_chat", "webhook")
#: ``projects/PROJECT/topics/TOPIC``: a project ID (6-30 characters) and a topic name
#: (3-255: letters, digits and ``-_.~+%``, a letter first).
TOPIC = re.compile(
    r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][A-Za-z0-9_.~+%-]{2,254}$"
)
#: At most this many notifiers per policy (each is a request per event).
MAX_NOTIFIERS = 10


def _default_on() -> list[EventKind]:
    return list(DEFAULT_ON)


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise _err(
            "env_name",
            "this is not an environment variable name (letters, digits and _, not starting "
            "with a digit): name the variable that holds the URL or key, never the value "
            "itself (not repeated here: it may be a secret)",
        )
    return value


class NotifySpec(_Model):
    """One notifier of ``notify:``."""

    kind: NotifierKind
    #: The environment variable holding the webhook's URL (slack, google_chat, webhook).
    url_env: str | None = None
    #: The environment variable holding the HMAC-SHA256 key that signs a webhook's POSTs.
    secret_env: str | None = None
    #: The Pub/Sub topic (pubsub): ``projects/P/topics/T``.
    topic: str | None = None
    #: The events this notifier hears of.
    on: list[EventKind] = Field(default_factory=lambda: _default_on(), min_length=1)

    _check_env = field_validator("url_env", "secret_env")(_env_name)

    @field_validator("topic")
    @classmethod
    def _topic_shape(cls, value: str | None) -> str | None:
        if value is not None and not TOPIC.match(value):
            raise _err(
                "topic",
                f"{shown(value)} is not a Pub/Sub topic: write projects/PROJECT/topics/TOPIC "
                "(a project ID, and a name that starts with a letter)",
            )
        return value

    @field_validator("on")
    @classmethod
    def _once_each(cls, value: list[EventKind]) -> list[EventKind]:
        seen: set[str] = set()
        for index, kind in enumerate(value):
            if kind in seen:
                raise _err("duplicate", f"{kind} is listed twice", f"on[{index}]")
            seen.add(kind)
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> NotifySpec:
        kind = self.kind
        if kind in URL_KINDS and self.url_env is None:
            raise _err(
                "url_env",
                f"a {kind} notifier needs url_env: the environment variable that holds its "
                "URL (the URL is a secret: never write it in the policy)",
            )
        if kind not in URL_KINDS and self.url_env is not None:
            raise _err("url_env", f"a {kind} notifier has no URL: drop url_env", "url_env")
        if kind == "pubsub" and self.topic is None:
            raise _err("topic", "a pubsub notifier needs topic: projects/PROJECT/topics/TOPIC")
        if kind != "pubsub" and self.topic is not None:
            raise _err("topic", f"topic belongs to pubsub notifiers, not {kind}", "topic")
        if kind != "webhook" and self.secret_env is not None:
            raise _err(
                "secret_env",
                f"secret_env signs webhook notifiers; a {kind} notifier is not signed (its "
                "URL is its credential): drop secret_env",
                "secret_env",
            )
        return self

    @property
    def where(self) -> str:
        """What names it in the report and the log (never a secret): ``slack (SLACK_URL)``."""
        target = self.url_env or self.topic
        return f"{self.kind} ({target})" if target else self.kind

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Two entries with the same key are one notifier (their ``on:`` merged)."""
        return (self.kind, self.url_env or "", self.secret_env or "", self.topic or "")
