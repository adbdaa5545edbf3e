"""Targets (URL building, env headers) and tokens (sources, precedence, never shown)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from deploy_guard.errors import ConfigError
from deploy_guard.probes.auth import BearerToken, TokenChoice, resolve_token
from deploy_guard.probes.target import Target, expand_env, url_problem
from deploy_guard.probes.template import SessionIds

SECRET = "eyJhbGciOi.secret-token-value.sig"


def test_ws_urls_follow_the_scheme_and_keep_prefix_and_query() -> None:
    t = Target("https://chat-abc.a.run.app/prefix?x=1")
    assert t.url("/ws/chat", {"u": "user-1"}, ws=True) == (
        "wss://chat-abc.a.run.app/prefix/ws/chat?x=1&u=user-1"
    )
    assert Target("http://127.0.0.1:8080").url("/health") == "http://127.0.0.1:8080/health"
    assert Target("http://127.0.0.1:8080").url("/ws", ws=True) == "ws://127.0.0.1:8080/ws"
    assert t.audience == "https://chat-abc.a.run.app"


def test_a_non_http_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        Target("ftp://example")
    with pytest.raises(ConfigError):
        Target("127.0.0.1:8080")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1", "malformed IPv6 address"),
        ("http://[zz]:8080", "malformed IPv6 address"),
        ("http://::1:8080", "malformed host"),
        ("http://[::1]x", "malformed host"),
        ("http://127.0.0.1:99999", "has port '99999', not a number from 1 to 65535"),
        ("http://127.0.0.1:abc", "has port 'abc', not a number from 1 to 65535"),
        ("http://127.0.0.1:-1", "has port '-1'"),
        ("http://127.0.0.1:0", "has port '0'"),
        ("http://:8080", "has no host name"),
        ("http://", "has no host name"),
        ("https://chat .a.run.app", "contains a space"),
        ("ftp://example", "its scheme is 'ftp'"),
        ("127.0.0.1:8080", "it has no scheme"),
    ],
)
def test_a_malformed_url_is_a_config_error_that_says_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Target(url)
    assert words in str(info.value)
    assert str(info.value).startswith(f"probe URL {url!r} ")
    assert url_problem(url) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
        "https://user@chat-abc.a.run.app/prefix?x=1",
        "wss://chat-abc.a.run.app",
        "http://localhost:65535",
    ],
)
def test_well_formed_urls_are_accepted(url: str) -> None:
    assert url_problem(url) is None
    assert Target(url).base_url == url


def test_headers_expand_env_and_carry_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_T_A", "alpha")
    assert expand_env("x-${PROBE_T_A}-${PROBE_T_UNSET}") == "x-alpha-"
    t = Target("http://h", token=BearerToken(SECRET, "test"))
    headers = t.headers_for({"X-A": "${PROBE_T_A}"})
    assert headers == {"X-A": "alpha", "Authorization": f"Bearer {SECRET}"}
    assert SECRET not in repr(t)
    assert SECRET not in str(t)


def test_token_is_never_shown_and_is_scrubbed_from_echoes() -> None:
    token = BearerToken(f"  {SECRET}\n", "env X")
    assert SECRET not in repr(token)
    assert SECRET not in f"{token}"
    assert token.authorization() == f"Bearer {SECRET}"
    echoed = {"data": f"you sent {SECRET}", "nested": [SECRET]}
    assert SECRET not in repr(token.scrub(echoed))
    with pytest.raises(TypeError):
        pickle.dumps(token)
    with pytest.raises(ConfigError, match="empty"):
        BearerToken("  ", "file f")


def test_session_templates_are_plain_substitution() -> None:
    ids = SessionIds(user="user-2", session="s1", n=7)
    assert ids.render("{user}/{session}/{n}/{other}/{user.__class__}") == (
        "user-2/s1/7/{other}/{user.__class__}"
    )
    assert ids.render_json({"a": ["{n}", {"b": "{user}"}], "k": 1}) == {
        "a": ["7", {"b": "user-2"}],
        "k": 1,
    }


async def test_token_precedence_flags_then_policy_then_id_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROBE_T_FLAG", "from-flag")
    monkeypatch.setenv("PROBE_T_POLICY", "from-policy")
    file = tmp_path / "token"
    file.write_text("from-file\n")
    url = "https://svc.a.run.app"

    async def value(choice: TokenChoice, **policy: str) -> str | None:
        token = await resolve_token(choice, url=url, **policy)
        return None if token is None else token.authorization().removeprefix("Bearer ")

    assert await value(
        TokenChoice(token_env="PROBE_T_FLAG"), policy_token_env="PROBE_T_POLICY"
    ) == ("from-flag")
    assert await value(TokenChoice(token_file=str(file))) == "from-file"
    assert await value(TokenChoice(), policy_token_env="PROBE_T_POLICY") == "from-policy"
    assert await value(TokenChoice(), policy_token_file=str(file)) == "from-file"
    # no source, and no ID token wanted (or a plain-http URL): no token at all
    assert await value(TokenChoice(id_token=False)) is None
    assert await resolve_token(TokenChoice(), url="http://127.0.0.1:8080") is None
    assert await value(TokenChoice(), policy_id_token="none") is None


async def test_missing_token_sources_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PROBE_T_NOPE"):
        await resolve_token(TokenChoice(token_env="PROBE_T_NOPE"), url="http://h")
    with pytest.raises(ConfigError, match="cannot read"):
        await resolve_token(TokenChoice(token_file=str(tmp_path / "nope")), url="http://h")
