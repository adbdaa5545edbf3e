"""The one seam where Google API errors become deploy-guard errors.

Every call the guard makes to Cloud Run, Cloud Logging or Cloud Monitoring goes
through :func:`call`, which does two things:

- retries *transient* failures (UNAVAILABLE, DEADLINE_EXCEEDED,
  RESOURCE_EXHAUSTED) with google-api-core's own :class:`Retry`: exponential
  back-off with jitter, bounded in time, so a blip in the API does not decide a
  rollout;
- maps whatever is left into :mod:`deploy_guard.errors` with ``raise ... from``,
  with a message that names the cause *and* the fix (the role to grant, the
  API to enable), so nothing above this module has to know google.api_core.

The Google libraries are imported inside the functions: ``deploy-guard --help``
must not pay for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from deploy_guard.errors import (
    ApiError,
    ConfigError,
    GuardError,
    NotFoundError,
    PermissionError_,
    SupersededError,
)

T = TypeVar("T")

#: gRPC status names that a retry may cure.
TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})

#: The role that grants what each API needs; named in permission errors.
ROLES = {
    "run": "roles/run.developer",
    "logging": "roles/logging.viewer",
    "monitoring": "roles/monitoring.viewer",
}


class ApiCalls:
    """Counts the Cloud API calls a check makes, per API and method, for the report.

    Retries count too (each attempt is a call against the quota), which is why
    the count is taken in the retry's ``on_error`` as well as per call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}

    def add(self, api: str, method: str, n: int = 1) -> None:
        with self._lock:
            per_api = self._counts.setdefault(api, {})
            per_api[method] = per_api.get(method, 0) + n

    def get(self, api: str, method: str) -> int:
        with self._lock:
            return self._counts.get(api, {}).get(method, 0)

    def as_dict(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {api: dict(methods) for api, methods in sorted(self._counts.items())}


def status_name(exc: BaseException) -> str:
    """The gRPC status name of a Google API error (``"UNAVAILABLE"``), or ``""``."""
    code = getattr(exc, "grpc_status_code", None)
    if code is None:
        code_fn = getattr(exc, "code", None)
        if callable(code_fn):  # a raw grpc.RpcError
            try:
                code = code_fn()
            except Exception:  # pragma: no cover - defensive: odd RpcError subclasses
                code = None
    name = getattr(code, "name", None)
    return str(name) if name else ""


def is_transient(exc: BaseException) -> bool:
    """True for the errors worth retrying: the service is busy or briefly away."""
    return status_name(exc) in TRANSIENT_CODES


def transient_retry(
    *,
    deadline: float = 30.0,
    initial: float = 0.1,
    maximum: float = 4.0,
    multiplier: float = 2.0,
    on_error: Callable[[Exception], Any] | None = None,
) -> Any:
    """google-api-core's :class:`Retry` for transient errors, bounded by ``deadline`` seconds.

    Short first delays because a check is waiting on the answer; a bounded total
    because an API that stays down must become an ``error`` measurement, not a
    hang.
    """
    from google.api_core import retry as gretry

    return gretry.Retry(
        predicate=is_transient,
        initial=initial,
        maximum=maximum,
        multiplier=multiplier,
        timeout=deadline,
        on_error=on_error,
    )


def map_error(exc: BaseException, *, api: str, what: str, writing: bool = False) -> GuardError:
    """Translate one Google API error into the guard's exception tree.

    ``api`` is ``"run"``, ``"logging"`` or ``"monitoring"`` (it picks the role to
    name); ``what`` says what was being done ("reading service chat"). With
    ``writing=True`` an ABORTED or FAILED_PRECONDITION answer means the resource
    changed under us (a stale etag): :class:`SupersededError`.
    """
    from deploy_guard.log import redact_text

    last = getattr(exc, "cause", None)  # google.api_core RetryError: the retries ran out
    if type(exc).__name__ == "RetryError" and isinstance(last, BaseException):
        exc = last
    code = status_name(exc) or type(exc).__name__
    detail = redact_text(str(getattr(exc, "message", "") or exc))
    if code == "NOT_FOUND":
        return NotFoundError(f"{what}: not found ({detail})")
    if code == "PERMISSION_DENIED":
        role = ROLES.get(api, "the needed role")
        return PermissionError_(
            f"{what}: permission denied ({detail}); grant {role} to the credential in use"
        )
    if code == "UNAUTHENTICATED":
        return PermissionError_(
            f"{what}: not authenticated ({detail}); run `gcloud auth application-default "
            "login` or run with a service account"
        )
    if writing and code in {"ABORTED", "FAILED_PRECONDITION"}:
        return SupersededError(f"{what}: the service changed while we wrote ({detail})")
    if code == "INVALID_ARGUMENT":
        return ConfigError(f"{what}: rejected as invalid ({detail})")
    if code in TRANSIENT_CODES:
        from deploy_guard.gcp.clients import EMULATOR_HOST_ENV, emulator_host

        host = emulator_host()
        if host and code == "UNAVAILABLE" and "connect" in detail.lower():
            return ApiError(
                f"{what}: the emulator at {host} ({EMULATOR_HOST_ENV}) did not answer; is "
                "`deploy-guard emulator` running, and is that its address?"
            )
        return ApiError(f"{what}: Google answered {code} and kept doing so after retries")
    return ApiError(f"{what}: {code} ({detail})")


def map_credentials_error(exc: BaseException) -> GuardError | None:
    """google-auth's "no usable credentials" errors, as guard errors that say what to do.

    These come from building a client or signing a request, not from an API
    answer, so :func:`map_error` never sees them; without this a user who has
    not logged in would get an "internal error" and a traceback.
    """
    if not type(exc).__module__.startswith("google.auth"):
        return None
    from google.auth import exceptions as gauth

    from deploy_guard.log import redact_text

    if isinstance(exc, gauth.DefaultCredentialsError):
        return ConfigError(
            "no Google credentials found (Application Default Credentials). Run `gcloud auth "
            "application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service "
            "account key file, or run where a metadata server provides them (Cloud Build, "
            "Cloud Run, GCE). Against the local emulator: export "
            "DEPLOY_GUARD_EMULATOR_HOST=127.0.0.1:PORT"
        )
    if isinstance(exc, gauth.RefreshError):
        return PermissionError_(
            f"the Google credentials could not be refreshed ({redact_text(str(exc))}); run "
            "`gcloud auth application-default login` again, or check the service account key"
        )
    return None


def _is_google_error(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPIError):
        return True
    try:
        import grpc
    except ImportError:  # pragma: no cover - grpc is a dependency
        return False
    return isinstance(exc, grpc.RpcError)


def call(
    fn: Callable[..., T],
    *args: Any,
    api: str,
    what: str,
    writing: bool = False,
    retry: Any = None,
    deadline: float = 30.0,
    calls: ApiCalls | None = None,
    method: str = "",
    **kwargs: Any,
) -> T:
    """Call a GAPIC method with the transient retry; map its failures.

    ``retry=None`` uses :func:`transient_retry` bounded by ``deadline`` seconds
    in all; pass ``retry=False`` for calls
    that must not be repeated blindly (none of the guard's calls need that: its
    writes carry the etag they read, so a retry of one that landed is refused as
    stale, and :mod:`deploy_guard.gcp.cloudrun` recognises it as its own).
    """
    method = method or getattr(fn, "__name__", "call")

    def count_retry(_exc: Exception) -> None:
        if calls is not None:
            calls.add(api, method)

    policy = transient_retry(deadline=deadline, on_error=count_retry) if retry is None else retry
    if calls is not None:
        calls.add(api, method)
    try:
        if policy is False:
            return fn(*args, **kwargs)
        return fn(*args, retry=policy, **kwargs)
    except GuardError:
        raise
    except Exception as exc:
        if _is_google_error(exc):
            raise map_error(exc, api=api, what=what, writing=writing) from exc
        mapped = map_credentials_error(exc)
        if mapped is not None:
            raise mapped from exc
        raise


__all__ = [
    "ROLES",
    "TRANSIENT_CODES",
    "ApiCalls",
    "call",
    "is_transient",
    "map_credentials_error",
    "map_error",
    "status_name",
    "transient_retry",
]
