"""From ``notify:`` and ``--notify`` to a run's :class:`~deploy_guard.events.fanout.Notifiers`.

In two steps, so that a notifier that cannot work stops the run before it
touches anything (exit 2), yet no client is built for a run that ends early:

1. :func:`resolve`, when the command starts (with the policies, before any API
   call): merges the entries of the policies that apply and the ``--notify``
   flags, reads each secret from its environment variable, checks it (set, an
   https URL, a key long enough) and registers it with the redactor, so no
   output can show it from then on. Every problem is reported at once.
2. :func:`build`, when the run's clients exist: one notifier per target.

``--notify`` says one notifier in a line (``KIND:WHERE[:EVENTS]``, see
:func:`parse_flag`), for a run that should tell someone the policy does not.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from deploy_guard.errors import ConfigError
from deploy_guard.events.delivery import Bounds
from deploy_guard.events.fanout import Channel, Notifiers
from deploy_guard.log import register_secret, register_secret_url

#: The shortest HMAC key accepted: shorter ones can be guessed.
MIN_KEY = 16
FLAG_HINT = "write KIND:WHERE[:EVENTS], e.g. slack:SLACK_URL or webhook:HOOK_URL+HOOK_KEY:fail"
FLAG_SYNTAX = (
    "KIND:WHERE[:EVENTS]: slack:ENV, google_chat:ENV, webhook:ENV or webhook:ENV+SECRET_ENV "
    "(ENV holds the URL), pubsub:projects/P/topics/T, log (or log:EVENTS); EVENTS a "
    "comma-separated list "
    "(default: every event but pass and step), e.g. webhook:HOOK_URL+HOOK_KEY:fail,rollback"
)


@dataclass(frozen=True)
class Target:
    """One notifier, ready to build: its secrets read (and never shown by ``repr``)."""

    kind: str
    #: Names it in the report and the log: ``slack (SLACK_WEBHOOK_URL)``.
    name: str
    on: frozenset[str]
    url: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    topic: str = ""


def parse_flag(text: str) -> Any:
    """One ``--notify`` value as a :class:`~deploy_guard.policy.notify_spec.NotifySpec`.

    Raises ValueError with the words for the user (the spec's own checks included).
    """
    from pydantic import ValidationError

    from deploy_guard.policy.notify_spec import NotifySpec

    kind, _, rest = text.strip().partition(":")
    where, _, events = rest.partition(":")  # no WHERE holds a ":" (a topic neither)
    if kind == "log" and where and not events:  # log:fail,rollback: a log has no WHERE
        where, events = "", where
    fields: dict[str, Any] = {"kind": kind}
    if kind == "pubsub":
        fields["topic"] = where or None
    elif where:
        url_env, _, secret_env = where.partition("+")
        fields["url_env"] = url_env
        if secret_env:
            fields["secret_env"] = secret_env
    if events:
        fields["on"] = [e.strip() for e in events.split(",") if e.strip()]
    try:
        return NotifySpec(**fields)
    except ValidationError as exc:
        words = "; ".join(str(e.get("msg", "")) for e in exc.errors())
        raise ValueError(f"{words}; {FLAG_HINT}") from None


def _merged(specs: Iterable[Any]) -> list[Any]:
    """Entries naming the same notifier become one, hearing of every event either asked for."""
    merged: dict[tuple[str, ...], Any] = {}
    for spec in specs:
        known = merged.get(spec.key)
        if known is None:
            merged[spec.key] = spec
        else:
            on = [*known.on, *(k for k in spec.on if k not in known.on)]
            merged[spec.key] = known.model_copy(update={"on": on})
    return list(merged.values())


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_problem(url: str) -> str | None:
    """Why a webhook URL cannot be used (in words that do not repeat it), or None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not host:
        return "is not an https:// URL"
    if parts.scheme == "http" and not _loopback(host):
        return "is an http:// URL: it and the payload would cross the network in clear; use https"
    return None


def resolve(specs: Iterable[Any], env: Mapping[str, str] | None = None) -> tuple[Target, ...]:
    """The targets of ``specs`` with their secrets read from ``env``; ConfigError lists every
    problem (a variable not set, a URL that is not https, a key too short)."""
    env = os.environ if env is None else env
    problems: list[str] = []
    targets: list[Target] = []
    for spec in _merged(specs):
        url = secret = ""
        if spec.url_env:
            url = env.get(spec.url_env, "").strip()
            register_secret_url(url)
            if not url:
                problems.append(
                    f"{spec.where}: the environment variable {spec.url_env} is not set (it "
                    "holds the URL to post to)"
                )
            elif why := _url_problem(url):
                problems.append(f"{spec.where}: {spec.url_env} {why}")
        if spec.secret_env:
            secret = env.get(spec.secret_env, "")
            register_secret(secret)
            if not secret:
                problems.append(
                    f"{spec.where}: the environment variable {spec.secret_env} is not set (it "
                    "holds the key that signs the webhook's POSTs)"
                )
            elif len(secret) < MIN_KEY:
                problems.append(
                    f"{spec.where}: the key in {spec.secret_env} has {len(secret)} characters; "
                    f"a signing key needs at least {MIN_KEY} (e.g. `openssl rand -hex 32`)"
                )
        targets.append(
            Target(
                kind=spec.kind,
                name=spec.where,
                on=frozenset(spec.on),
                url=url,
                secret=secret,
                topic=spec.topic or "",
            )
        )
    if problems:
        raise ConfigError("cannot notify: " + "; ".join(problems))
    return tuple(targets)


def build(
    targets: Sequence[Target],
    *,
    clients: Any,
    project: str,
    report_url: str | None = None,
    bounds: Bounds | None = None,
) -> Notifiers:
    """One notifier per target, fanned out (an empty fan-out when there is none)."""
    if not targets:
        return Notifiers.none()
    from deploy_guard.events.google import LogNotifier, PubSubNotifier
    from deploy_guard.events.google_chat import GoogleChatNotifier
    from deploy_guard.events.slack import SlackNotifier
    from deploy_guard.events.webhook import WebhookNotifier

    bounds = bounds or Bounds()
    channels = []
    for t in targets:
        notifier: Any
        if t.kind == "slack":
            notifier = SlackNotifier(t.name, t.url, bounds=bounds, report_url=report_url)
        elif t.kind == "google_chat":
            notifier = GoogleChatNotifier(t.name, t.url, bounds=bounds, report_url=report_url)
        elif t.kind == "webhook":
            notifier = WebhookNotifier(
                t.name, t.url, bounds=bounds, secret=t.secret or None, report_url=report_url
            )
        elif t.kind == "pubsub":
            notifier = PubSubNotifier(t.topic, bounds=bounds, report_url=report_url)
        else:
            notifier = LogNotifier(clients, project, bounds=bounds, report_url=report_url)
        channels.append(Channel(notifier, t.on))
    return Notifiers(channels, bounds=bounds)
