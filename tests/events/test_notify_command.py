"""``deploy-guard notify schema`` and ``notify test``: the published schema, a test message."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.events.payload import schema
from receivers import Receiver, dead_url


def test_notify_schema_prints_the_payload_schema() -> None:
    result = CliRunner().invoke(cli, ["notify", "schema"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == schema()


def test_notify_test_sends_one_event_to_each_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    with Receiver() as hook, Receiver() as slack:
        monkeypatch.setenv("HOOK_URL", hook.url)
        monkeypatch.setenv("SLACK_URL", slack.url)
        args = ["notify", "test", "--notify", "webhook:HOOK_URL:promote", "--notify"]
        result = CliRunner().invoke(cli, [*args, "slack:SLACK_URL", "--service", "chat"])
        assert result.exit_code == 0, result.output
        assert sorted(result.stdout.splitlines()) == [  # delivered concurrently
            "slack (SLACK_URL): delivered after 1 attempt(s)",
            "webhook (HOOK_URL): delivered after 1 attempt(s)",
        ]
        payload = hook.requests[0].json()
        assert (payload["kind"], payload["service"], payload["detail"]) == (
            "rollback",  # --event's default, whatever the notifier's on: says
            "chat",
            {"test": True},
        )
        assert slack.requests[0].json()["blocks"][0]["text"]["text"] == "\u23ea Rolled back: chat"


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        (None, 2, "the environment variable HOOK_URL is not set"),
        ("dead", 4, "webhook (HOOK_URL): failed after 3 attempt(s): could not connect"),
    ],
)
def test_notify_test_says_what_failed(
    monkeypatch: pytest.MonkeyPatch, url: str | None, code: int, words: str
) -> None:
    if url is not None:
        monkeypatch.setenv("HOOK_URL", dead_url())
    else:
        monkeypatch.delenv("HOOK_URL", raising=False)
    result = CliRunner().invoke(cli, ["notify", "test", "--notify", "webhook:HOOK_URL"])
    assert result.exit_code == code, result.output
    assert words in result.output
