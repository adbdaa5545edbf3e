"""Where probes go: a base URL, extra headers, a token and the TLS choice.

A check points the probes at the candidate revision's tag URL; ``deploy-guard
probe`` points them at any URL. WebSocket URLs are derived from the same base
(``https`` -> ``wss``), so one target serves both kinds of rule.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from deploy_guard.errors import ConfigError
from deploy_guard.log import redact_text, register_secret, register_url_secrets
from deploy_guard.probes.auth import BearerToken, header_value_problem, url_origin

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import Rule

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WS_SCHEME = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``${NAME}`` with the environment variable's value ("" when unset).

    Only this one form is expanded: a policy file names a variable, it never
    holds a secret, and it never evaluates anything. What the environment
    supplies is a secret (an API key, as a rule): it is registered, so no
    output shows it, even when a server echoes it back.
    """
    env = os.environ if environ is None else environ

    def lookup(m: re.Match[str]) -> str:
        found = env.get(m.group(1), "")
        register_secret(found)
        problem = header_value_problem(found)
        if problem is not None:
            raise ConfigError(
                f"environment variable {m.group(1)} (named in a probe header) {problem}; "
                "its content is not shown"
            )
        return found

    return _ENV_REF.sub(lookup, value)


def check_env_headers(rules: Iterable[Rule]) -> None:
    """Expand every probe rule's ``${NAME}`` headers once, before anything is probed or changed.

    A value that cannot be sent is a :class:`ConfigError` (exit 2) now, not a
    failed request (whose library error would quote it) in the middle of a check.
    """
    for rule in rules:
        spec = rule.http or rule.websocket
        for key, value in (spec.headers if spec is not None else {}).items():
            try:
                expand_env(str(value))
            except ConfigError as exc:
                raise ConfigError(f"rule {rule.name}, header {key}: {exc}") from None


#: ``host`` or ``[ipv6]``, then an optional ``:port`` (after any ``user@``).
_HOST_PORT = re.compile(r"(?:\[[^\[\]]*\]|[^\[\]:]*)(?::[^:]*)?")


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a base URL to probe, or None when it will do.

    The words finish a sentence that starts with the URL: "has no host name",
    "has port '99999', not a number from 1 to 65535". Each case is one the
    libraries would otherwise reject mid-probe (a probe "error", or a traceback).
    """
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains a space or a control character"
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracket left open ("http://[::1") or no IPv6 address inside
        return "has a malformed IPv6 address (write it in brackets: http://[::1]:8080)"
    if parts.scheme not in _WS_SCHEME:
        if not parts.scheme:
            return "is not an http(s) URL: it has no scheme (start it with http:// or https://)"
        return (
            f"is not an http(s) URL: its scheme is {parts.scheme!r} "
            "(probes speak http, https, ws and wss)"
        )
    host_port = parts.netloc.rpartition("@")[2]
    if not _HOST_PORT.fullmatch(host_port):
        return "has a malformed host (an IPv6 address goes in brackets: http://[::1]:8080)"
    if not parts.hostname:
        return "has no host name"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return f"has port {host_port.rpartition(':')[2]!r}, not a number from 1 to 65535"
    return None


@dataclass(frozen=True)
class Target:
    """The base URL probes address, with headers sent on every request.

    ``token`` is attached as ``Authorization: Bearer ...`` by :meth:`headers_for`;
    it is a :class:`BearerToken`, whose repr never shows the value, and the
    headers are left out of this object's repr as well.
    """

    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    verify_tls: bool = True
    token: BearerToken | None = None

    def __post_init__(self) -> None:
        register_url_secrets(self.base_url)  # before any message can quote the URL
        problem = url_problem(self.base_url)
        if problem is not None:
            raise ConfigError(
                f"probe URL {self.base_url!r} {problem}; give one like "
                "https://candidate---chat-abc.a.run.app or http://127.0.0.1:8080"
            )

    def __repr__(self) -> str:
        # The base URL's query values may be credentials (a signed URL): shown redacted.
        return (
            f"Target(base_url={redact_text(self.base_url)!r}, verify_tls={self.verify_tls}, "
            f"token={self.token!r})"
        )

    def headers_for(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Target headers, then the rule's (``${ENV}`` expanded), then the token."""
        merged = dict(self.headers)
        for key, value in (extra or {}).items():
            merged[key] = expand_env(str(value))
        if self.token is not None and not any(k.lower() == "authorization" for k in merged):
            merged["Authorization"] = self.token.authorization()
        return merged

    def url(self, path: str, query: Mapping[str, str] | None = None, *, ws: bool = False) -> str:
        """Join ``path`` (and extra ``query`` params) onto the base URL.

        The base's own path is kept as a prefix, so a URL like
        ``http://host/prefix`` with path ``/ws/chat`` gives ``/prefix/ws/chat``.
        """
        base = urlsplit(self.base_url)
        sub = urlsplit(path)
        prefix = base.path.rstrip("/")
        joined = prefix + ("/" + sub.path.lstrip("/") if sub.path else "")
        params = parse_qsl(base.query, keep_blank_values=True)
        params += parse_qsl(sub.query, keep_blank_values=True)
        params += [(k, str(v)) for k, v in (query or {}).items()]
        scheme = (
            _WS_SCHEME[base.scheme]
            if ws
            else {"ws": "http", "wss": "https"}.get(base.scheme, base.scheme)
        )
        return urlunsplit((scheme, base.netloc, joined or "/", urlencode(params), ""))

    @property
    def audience(self) -> str:
        """The default ID-token audience: the base URL's origin (scheme and host)."""
        return url_origin(self.base_url)


def connect_failure(exc: BaseException) -> str:
    """Words for a failed connection: the cause, then what usually fixes it.

    Shared by the HTTP and WebSocket probes, which see the same three
    everyday causes through different libraries (the original error is found
    in the exception chain).
    """
    text = f"could not connect: {type(exc).__name__}: {exc}"
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cur):
            return text + (
                "; the server's TLS certificate is not trusted (a self-signed test server "
                "needs --insecure; a real service needs a valid certificate)"
            )
        if "WRONG_VERSION_NUMBER" in str(cur):
            return text + "; the server did not answer with TLS: should the URL be http://?"
        if isinstance(cur, ConnectionRefusedError):
            return text + "; nothing listens there: is the service running on that host and port?"
        if isinstance(cur, socket.gaierror):
            return text + "; the host name does not resolve: check the URL"
        cur = cur.__cause__ or cur.__context__
    return text


def auth_hint(status: int) -> str:
    """For 401/403 answers, the likely cause and the fix; "" for any other status."""
    if status not in (401, 403):
        return ""
    return (
        "; the service refused the credentials: a private service needs a token "
        "(--token-env, --token-file, or an ID token whose audience is the service URL: --audience)"
    )
