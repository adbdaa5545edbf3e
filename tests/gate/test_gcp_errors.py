"""The error seam: Google API errors become deploy-guard errors; transient ones are retried."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from deploy_guard.errors import (
    ApiError,
    ConfigError,
    NotFoundError,
    PermissionError_,
    SupersededError,
)
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.errors import ApiCalls, call, is_transient, map_error


def test_not_found_is_a_usage_error() -> None:
    err = map_error(gexc.NotFound("no service chat"), api="run", what="reading service chat")
    assert isinstance(err, NotFoundError)
    assert err.exit_code == ExitCode.USAGE
    assert "reading service chat" in str(err)


@pytest.mark.parametrize(
    ("api", "role"),
    [("run", "roles/run.developer"), ("logging", "roles/logging.viewer")],
)
def test_permission_denied_names_the_role(api: str, role: str) -> None:
    err = map_error(gexc.PermissionDenied("denied"), api=api, what="x")
    assert isinstance(err, PermissionError_)
    assert role in str(err)


def test_a_conflict_on_write_is_superseded_and_a_bad_request_is_config() -> None:
    assert isinstance(
        map_error(gexc.Aborted("etag"), api="run", what="w", writing=True), SupersededError
    )
    assert isinstance(
        map_error(gexc.FailedPrecondition("etag"), api="run", what="w", writing=True),
        SupersededError,
    )
    assert isinstance(map_error(gexc.InvalidArgument("bad"), api="run", what="w"), ConfigError)


def test_exhausted_retries_say_so() -> None:
    exhausted = gexc.RetryError("deadline", cause=gexc.ServiceUnavailable("down"))
    err = map_error(exhausted, api="logging", what="reading logs")
    assert isinstance(err, ApiError)
    assert "UNAVAILABLE" in str(err)
    assert "after retries" in str(err)


def test_secrets_in_messages_are_redacted() -> None:
    err = map_error(gexc.Unknown("GET /x?access_token=abc123 failed"), api="run", what="w")
    assert "abc123" not in str(err)


def test_transient_errors_are_retried_and_counted() -> None:
    attempts: list[int] = []

    def flaky(*, retry: object) -> str:
        # A real google-api-core Retry wraps this plain function, as it wraps a GAPIC method.
        def once() -> str:
            attempts.append(1)
            if len(attempts) < 3:
                raise gexc.ServiceUnavailable("try again")
            return "ok"

        return retry(once)()  # type: ignore[operator, no-any-return]

    calls = ApiCalls()
    assert call(flaky, api="run", what="x", calls=calls, method="GetService", deadline=5) == "ok"
    assert len(attempts) == 3
    assert calls.as_dict() == {"run": {"GetService": 3}}


def test_permanent_errors_are_not_retried() -> None:
    attempts: list[int] = []

    def broken(*, retry: object) -> None:
        def once() -> None:
            attempts.append(1)
            raise gexc.NotFound("gone")

        retry(once)()  # type: ignore[operator]

    with pytest.raises(NotFoundError):
        call(broken, api="run", what="x")
    assert len(attempts) == 1
    assert is_transient(gexc.DeadlineExceeded("slow"))
    assert is_transient(gexc.ResourceExhausted("quota"))
    assert not is_transient(gexc.NotFound("gone"))
