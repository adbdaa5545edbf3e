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
    assert "/ws?user=[redacted]&access_token=[redacted]" in text  # names stay, values go


def test_redact_text_keeps_the_rest_of_the_url() -> None:
    assert (
        guard_log.redact_text("wss://h/p?key=abc&x=1#f")
        == f"wss://h/p?key={guard_log.REDACTED}&x={guard_log.REDACTED}#f"
    )


@pytest.mark.fault("secrets", "query-string credentials in a printed URL", "every value redacted")
def test_every_query_value_is_redacted_unless_the_policy_marks_it_safe() -> None:
    url = (
        "https://svc.example/dl?X-Goog-Signature=5f2a9c&client_secret=cs-77&auth=a1"
        "&private_token=pt-9&page=2&empty="
    )
    said = guard_log.redact_text(f"could not fetch {url}: 403 (GET /dl?page=3&auth=zz)")
    for value in ("5f2a9c", "cs-77", "a1", "pt-9", "zz", "page=2", "page=3"):
        assert value not in said
    assert "X-Goog-Signature=[redacted]&client_secret=[redacted]&auth=[redacted]" in said
    assert "empty=" in said  # nothing to hide
    guard_log.allow_query_params(["page"])
    said = guard_log.redact_text(f"could not fetch {url}: 403 (GET /dl?page=3&auth=zz)")
    assert "page=2" in said
    assert "page=3" in said
    assert "auth=[redacted]" in said
    assert "https://u:[redacted]@h/" in guard_log.redact_text("https://u:pw-123@h/")


LONG = "ya29." + "Qm9yZGVyLWxpbmUtdG9rZW4tdmFsdWUtMDEyMzQ1Njc4OQ" * 7  # 327 characters


@pytest.mark.fault(
    "secrets", "a secret cut off, sliced, encoded or spaced", "every long-enough piece redacted"
)
@pytest.mark.parametrize(
    "piece",
    [
        pytest.param(LONG[:300], id="prefix-of-a-body-sample"),
        pytest.param(LONG[-40:], id="suffix"),
        pytest.param(LONG[150:162], id="12-character-slice"),
        pytest.param(LONG[150 : 150 + guard_log.MIN_SLICE], id="shortest-slice"),
        pytest.param(LONG, id="whole"),
    ],
)
def test_a_registered_secret_is_redacted_whole_or_in_pieces(piece: str) -> None:
    guard_log.register_secret(LONG)
    said = guard_log.redact_text(f"close 1011 (bad token {piece}) after 7.0 s")
    assert said == "close 1011 (bad token [redacted]) after 7.0 s"


@pytest.mark.fault("secrets", "a token with spaces, echoed URL-encoded", "redacted in every form")
def test_a_secret_with_spaces_is_redacted_raw_url_encoded_and_json_escaped() -> None:
    phrase = 'correct horse "battery" staple'
    guard_log.register_secret(phrase)
    for form in (
        phrase,
        "correct%20horse%20%22battery",
        "correct+horse+%22battery",
        '\\"battery\\" st',
    ):
        said = guard_log.redact_text(f"echo: {form} end")
        assert said.startswith("echo:"), form
        assert said.endswith("[redacted] end"), form
        assert "battery" not in said, form
    assert guard_log.redact_data({"k": [f"x {phrase}"]}) == {"k": ["x [redacted]"]}
    guard_log.register_secret("12345")  # too short to be told from ordinary text
    assert guard_log.redact_text("HTTP 12345") == "HTTP 12345"


@pytest.mark.fault("secrets", "a secret registered after configure()", "absent from JSON events")
def test_a_registered_secret_never_reaches_a_rendered_event() -> None:
    out = io.StringIO()
    guard_log.configure(stream=out, json=True)
    guard_log.register_secret(LONG)
    guard_log.get_logger("probe").warning(
        "probe_failed", detail=f"body {LONG[:300]}", sample={"recv": [LONG[7:19]]}
    )
    text = out.getvalue()
    assert LONG[:12] not in text
    assert LONG[7:19] not in text
    assert json.loads(text)["sample"] == {"recv": ["[redacted]"]}


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


@pytest.mark.fault("secrets", "a crash whose message holds a secret", "traceback shown redacted")
def test_an_uncaught_exception_is_printed_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    guard_log.redact_uncaught()
    guard_log.register_secret(LONG)
    try:
        raise RuntimeError(f"failed on https://h/x?sig=abc123 with {LONG[:40]} (Basic dTpwdw==)")
    except RuntimeError as exc:
        sys.excepthook(RuntimeError, exc, exc.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: failed on https://h/x?sig=[redacted] with [redacted]" in err
    assert LONG[:12] not in err
    assert "dTpwdw" not in err


def test_a_url_password_is_a_secret_wherever_it_is_echoed() -> None:
    guard_log.register_url_secrets("https://probe:s3cr3t-pa55word@h.example/")
    assert guard_log.redact_text("you are probe:s3cr3t-pa55word") == "you are probe:[redacted]"
