"""The ID token a check mints is for the service URL, not the tag URL it probes.

Cloud Run rejects a token whose audience is a tag URL
(``https://candidate---chat-abc.a.run.app``): the audience must be the service
URL or a custom audience set on the service. The emulator serves plain http,
where no ID token is minted, so this drives the gate's token step directly and
records the audience at the seam where google-auth is called.
"""

from __future__ import annotations

import pytest

from deploy_guard.policy.model import AuthSpec
from deploy_guard.probes import auth as probe_auth
from deploy_guard.probes.auth import BearerToken, TokenChoice
from deploy_guard.runtime.session import probe_token

TAG_URL = "https://dg-1a2b3c4d---chat-abc123-uc.a.run.app"
SERVICE_URL = "https://chat-abc123-uc.a.run.app"


@pytest.fixture
def minted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    audiences: list[str] = []

    def fake_fetch(audience: str) -> BearerToken:
        audiences.append(audience)
        return BearerToken("token-value", "google-auth")

    monkeypatch.setattr(probe_auth, "fetch_id_token", fake_fetch)
    return audiences


async def test_the_service_url_is_the_audience_when_probing_a_tag_url(minted: list[str]) -> None:
    token = await probe_token(None, AuthSpec(), url=TAG_URL, service_uri=SERVICE_URL)
    assert token is not None
    assert minted == [SERVICE_URL]


async def test_a_policy_audience_wins_over_the_service_url(minted: list[str]) -> None:
    custom = AuthSpec(audience="https://chat.example.com")
    await probe_token(None, custom, url=TAG_URL, service_uri=SERVICE_URL)
    assert minted == ["https://chat.example.com"]


async def test_the_audience_flag_wins_over_the_policy(minted: list[str]) -> None:
    custom = AuthSpec(audience="https://chat.example.com")
    choice = TokenChoice(audience="https://flag.example.com")
    await probe_token(choice, custom, url=TAG_URL, service_uri=SERVICE_URL)
    assert minted == ["https://flag.example.com"]


async def test_no_id_token_for_a_plain_http_target(minted: list[str]) -> None:
    token = await probe_token(
        None, AuthSpec(), url="http://127.0.0.1:8080", service_uri="http://127.0.0.1:8081"
    )
    assert token is None
    assert minted == []
