"""Structured logging: Cloud Logging JSON off a TTY, and no secret ever rendered."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from deploy_guard import log as guard_log

TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    yield
    structlog.reset_defaults()


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_events_have_cloud_logging_severity_and_message() -> None:
    out = io.StringIO()  # not a TTY: JSON is chosen automatically
    guard_log.configure(stream=out)
    guard_log.get_logger("gate").warning("rollback_requested", revision="chat-00002-abc")
    [event] = _json_lines(out)
    assert event["severity"] == "WARNING"
    assert event["message"] == "rollback_requested"
    assert event["revision"] == "chat-00002-abc"
    assert event["logger"] == "gate"
    assert "time" in event


def test_level_filter_drops_debug() -> None:
    out = io.StringIO()
    guard_log.configure(stream=out, level="info")
    guard_log.get_logger().debug("noise")
    guard_log.get_logger().info("signal")
    assert [e["message"] for e in _json_lines(out)] == ["signal"]


@pytest.mark.parametrize("as_json", [True, False])
def test_secrets_never_reach_the_rendered_output(as_json: bool) -> None:
    out = io.StringIO()
    guard_log.configure(stream=out, json=as_json)
    guard_log.get_logger().info(
        "probe_started",
        token=TOKEN,
        headers={"Authorization": f"Bearer {TOKEN}", "X-Ok": "visible"},
        url=f"https://svc.example/ws?user=1&access_token={TOKEN}",
        note=f"sent bearer {TOKEN}",
    )
    text = out.getvalue()
    assert TOKEN not in text
    assert "visible" in text
    assert "user=1" in text


def test_redact_text_keeps_the_rest_of_the_url() -> None:
    assert (
        guard_log.redact_text("wss://h/p?key=abc&x=1#f")
        == f"wss://h/p?key={guard_log.REDACTED}&x=1#f"
    )


def test_module_level_logger_follows_later_configuration() -> None:
    early = guard_log.get_logger("early")  # made before configure(), as at import time
    with structlog.testing.capture_logs() as captured:
        early.info("seen", n=1)
    assert captured == [{"event": "seen", "n": 1, "logger": "early", "log_level": "info"}]


@pytest.mark.parametrize("as_json", [True, False])
def test_a_logged_exception_shows_no_secret_and_no_local_variables(as_json: bool) -> None:
    out = io.StringIO()
    guard_log.configure(stream=out, json=as_json)

    def probe(id_token: str) -> None:  # id_token: a local a rich traceback would print
        raise ConnectionError(f"handshake failed for wss://svc/ws?access_token={id_token}")

    try:
        probe(TOKEN)
    except ConnectionError:
        guard_log.get_logger("probe").exception("probe_failed")
    text = out.getvalue()
    assert "ConnectionError" in text  # the traceback is there...
    assert "handshake failed" in text
    assert TOKEN not in text  # ...without the secret, in the message or in a local
