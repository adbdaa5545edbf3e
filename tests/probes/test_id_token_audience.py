"""The audience of minted ID tokens: the service URL, not the tag URL a check probes.

Cloud Run accepts an ID token only when its audience is the *service* URL (or
a custom audience). A check probes the candidate through a tag URL, so the
audience must be passable separately; without one it is the probed URL's
origin, never the URL with its path.

No Google class is faked here: google-auth really mints the token from a
service account key whose ``token_uri`` points at a local server on port 0,
which reads the ``target_audience`` claim from the signed assertion it gets.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy_guard.probes.auth import TokenChoice, choose_audience, resolve_token, url_origin

Serve = Callable[[web.Application], Awaitable[str]]

TAG_URL = "https://candidate---chat-abc-ew.a.run.app/some/path?x=1"
SERVICE_URL = "https://chat-abc-ew.a.run.app"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(jwt: str) -> dict[str, object]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_choose_audience_most_specific_first() -> None:
    plain = TokenChoice()
    assert url_origin(TAG_URL) == "https://candidate---chat-abc-ew.a.run.app"
    assert url_origin("wss://h:8443/ws") == "https://h:8443"
    assert choose_audience(plain, url=TAG_URL) == "https://candidate---chat-abc-ew.a.run.app"
    assert choose_audience(plain, url=TAG_URL, audience=SERVICE_URL) == SERVICE_URL
    custom = "https://chat.example.com"
    assert choose_audience(plain, url=TAG_URL, audience=SERVICE_URL, policy_audience=custom) == (
        custom
    )
    flag = TokenChoice(audience="https://flag.example.com")
    assert choose_audience(flag, url=TAG_URL, audience=SERVICE_URL, policy_audience=custom) == (
        "https://flag.example.com"
    )


@pytest.fixture
async def token_server(
    aiohttp_server: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """A local OAuth token endpoint and a service account key that points at it.

    Returns the list of ``target_audience`` claims of the assertions it received.
    """
    audiences: list[str] = []

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        audiences.append(str(_claims(str(form["assertion"]))["target_audience"]))
        header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"aud": audiences[-1], "exp": int(time.time()) + 3600}).encode())
        return web.json_response({"id_token": f"{header}.{body}.{_b64(b'sig')}"})

    app = web.Application()
    app.router.add_post("/token", token)
    base = await aiohttp_server(app)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "prober@test-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{base}/token",
    }
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(info))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    return audiences


async def test_minted_token_names_the_service_url_given_by_the_caller(
    token_server: list[str],
) -> None:
    token = await resolve_token(TokenChoice(), url=TAG_URL, audience=SERVICE_URL)
    assert token is not None
    assert token.source == "google-auth"
    assert token_server == [SERVICE_URL]
    assert _claims(token.authorization().removeprefix("Bearer "))["aud"] == SERVICE_URL


async def test_without_an_audience_the_origin_of_the_url_is_used(
    token_server: list[str],
) -> None:
    # the original call form (url= only) keeps working, and no longer sends path or query
    token = await resolve_token(TokenChoice(), url=TAG_URL)
    assert token is not None
    assert token_server == ["https://candidate---chat-abc-ew.a.run.app"]


async def test_a_configured_audience_wins_over_the_service_url(token_server: list[str]) -> None:
    custom = "https://chat.example.com"
    await resolve_token(TokenChoice(), url=TAG_URL, audience=SERVICE_URL, policy_audience=custom)
    await resolve_token(
        TokenChoice(audience="https://flag.example.com"),
        url=TAG_URL,
        audience=SERVICE_URL,
        policy_audience=custom,
    )
    assert token_server == [custom, "https://flag.example.com"]


async def test_no_token_is_minted_for_plain_http_or_when_refused(token_server: list[str]) -> None:
    assert await resolve_token(TokenChoice(), url="http://127.0.0.1:8080") is None
    assert await resolve_token(TokenChoice(id_token=False), url=TAG_URL) is None
    assert await resolve_token(TokenChoice(), url=TAG_URL, policy_id_token="none") is None
    assert token_server == []
