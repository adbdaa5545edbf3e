"""Targets (URL building, env headers) and tokens (sources, precedence, never shown)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from deploy_guard.errors import ConfigError
from deploy_guard.log import redact_text
from deploy_guard.probes.auth import (
    BearerToken,
    TokenChoice,
    resolve_token,
    token_from_env,
    token_from_file,
)
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


BAD_TOKEN_FILES = [
    pytest.param(
        b"tok-line-one-abcdef\ntok-line-two-ghijkl\n",
        "line break at position 20",
        id="several-lines",
    ),
    pytest.param(
        b'{"type": "service_account",\n "private_key": "-----BEGIN"}', "line break", id="a-key-file"
    ),
    pytest.param(b"tok-abc\x07def-ghijkl", "a control character at position 8", id="control"),
    pytest.param("tok-abc-d\u00e9f-ghijkl".encode(), "a non-ASCII character", id="non-ascii"),
    pytest.param(b"tok-abc-d\xff\xfef-ghijkl", "is not UTF-8 text", id="not-utf8"),
    pytest.param(b"A" * (17 * 1024), "larger than 16 KiB", id="too-large"),
]


def _pieces(raw: bytes) -> set[str]:
    """Every 6-character piece of the file's text: none may be quoted."""
    text = raw.decode("utf-8", errors="replace")
    return {text[i : i + 6] for i in range(len(text) - 5)} - {"A" * 6}


@pytest.mark.fault("secrets", "token file: several lines or illegal bytes", "exit 2, quotes none")
@pytest.mark.parametrize(("raw", "words"), BAD_TOKEN_FILES)
def test_a_token_file_that_is_not_one_header_value_is_refused_unquoted(
    tmp_path: Path, raw: bytes, words: str
) -> None:
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    file = tmp_path / "token"
    file.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        token_from_file(str(file))
    message = str(info.value)
    assert words in message
    assert str(file) in message  # it says which file...
    assert not any(piece in message for piece in _pieces(raw))  # ...never what is in it
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nname: p\nservices: [x]\nrules:\n"
        "  - name: health\n    kind: http\n    http: {path: /health}\n"
    )
    args = ["probe", "--policy", str(policy), "--url", "http://127.0.0.1:9", "--token-file"]
    result = CliRunner().invoke(cli, [*args, str(file)])
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not any(piece in result.output for piece in _pieces(raw))


@pytest.mark.fault("secrets", "an env token with a newline", "exit 2, quotes none")
def test_an_env_token_with_a_newline_is_refused_unquoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBE_T_TWO_LINES", "first-secret-line\r\nsecond-secret-line")
    with pytest.raises(ConfigError) as info:
        token_from_env("PROBE_T_TWO_LINES")
    assert "env PROBE_T_TWO_LINES has a line break" in str(info.value)
    assert "secret-line" not in str(info.value)


@pytest.mark.fault("secrets", "a ${NAME} header value echoed back", "redacted like a token")
def test_header_values_from_the_environment_are_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "AIzaSyD-api-key-from-the-environment-0123"
    monkeypatch.setenv("PROBE_T_API_KEY", key)
    assert redact_text(f"echo {key}") == f"echo {key}"  # nothing known yet...
    headers = Target("http://h").headers_for({"X-Api-Key": "${PROBE_T_API_KEY}"})
    assert headers["X-Api-Key"] == key  # ...sent as it is...
    assert redact_text(f"your key was {key[:20]}") == "your key was [redacted]"  # ...never shown


@pytest.mark.fault("secrets", "a ${NAME} header value with a line break", "exit 2, quotes none")
def test_a_header_value_from_the_environment_that_cannot_be_sent_is_refused_before_probing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    monkeypatch.setenv("PROBE_T_BAD_KEY", "key-part-one\r\nX-Injected: key-part-two")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\nname: p\nservices: [x]\nrules:\n"
        "  - name: health\n    kind: http\n"
        "    http: {path: /health, headers: {X-Api-Key: '${PROBE_T_BAD_KEY}'}}\n"
    )
    args = ["probe", "--policy", str(policy), "--url", "http://127.0.0.1:9"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert (
        "rule health, header X-Api-Key: environment variable PROBE_T_BAD_KEY (named in a probe "
        "header) has a line break at position 13"
    ) in result.output
    assert "key-part" not in result.output
    assert "Injected" not in result.output
    assert "probing" not in result.output  # refused before anything was sent


@pytest.mark.fault("secrets", "a signed probe URL", "query values hidden in repr and echoes")
def test_the_base_urls_query_values_are_secrets() -> None:
    signature = "b1946ac92492d2347c6235b4d2611184"
    target = Target(f"https://h.example/p?X-Goog-Signature={signature}&page=2")
    assert signature not in repr(target)
    # a server echoing its query string raw (no "?") is still caught
    assert signature[:16] not in redact_text(f"got X-Goog-Signature={signature[:16]}")
    assert target.url("/x").endswith(f"?X-Goog-Signature={signature}&page=2")  # sent unchanged
