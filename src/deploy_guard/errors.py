"""The exception tree of deploy-guard.

Every error the guard raises on purpose derives from :class:`GuardError`, and
carries the exit code the CLI maps it to. Library errors (gRPC, Google API,
websockets, httpx) are mapped into this tree at one seam per library, with
``raise ... from exc``, so messages can say the cause *and* the fix::

    GuardError
    ├── ConfigError              exit 2: bad flags, invalid policy, unknown revision
    │   └── PolicyError          a policy file failed to load or validate
    ├── ApiError                 a Google API call failed after retries
    │   ├── NotFoundError
    │   └── PermissionError_     the credential lacks a role
    ├── ActionError              exit 4: a traffic change failed or was refused
    │   ├── SupersededError      someone else changed the service during the check
    │   └── UnverifiedError      a traffic change was sent, but could not be read back
    └── EmulatorError            the local emulator refuses an API request (a gRPC status)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deploy_guard.exitcodes import ExitCode

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.problems import Problem


class GuardError(Exception):
    """Base class for errors that deploy-guard reports to its user."""

    exit_code: ExitCode = ExitCode.ACTION_FAILED


class ConfigError(GuardError):
    """The command line, a policy or the target named is wrong: fix the input."""

    exit_code = ExitCode.USAGE


class PolicyError(ConfigError):
    """A policy file failed to load or validate.

    ``problems`` lists every problem found (``deploy_guard.policy.Problem``:
    file, line, column, path, message), so a caller can print them all at once.
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems)


class ApiError(GuardError):
    """A Google Cloud API call failed (after retrying transient errors)."""

    exit_code = ExitCode.ACTION_FAILED


class NotFoundError(ApiError):
    """The service or revision named does not exist."""

    exit_code = ExitCode.USAGE


class PermissionError_(ApiError):  # trailing _: the builtin PermissionError stays usable
    """The credential in use lacks a permission; the message names the role."""


class ActionError(GuardError):
    """A traffic change failed or was refused; a human has to look."""

    exit_code = ExitCode.ACTION_FAILED


class SupersededError(ActionError):
    """The service changed under the guard (another deploy): it refused to write."""


class UnverifiedError(ActionError):
    """A traffic change was sent (and may have landed), but reading it back failed.

    ``last_state`` is the last state of the service the guard saw (a
    ``deploy_guard.gcp.traffic.ServiceState``, or None), so a report can say
    what was known instead of a stale split; a human has to check the rest.
    """

    def __init__(self, message: str, last_state: object = None) -> None:
        super().__init__(message)
        self.last_state = last_state


class EmulatorError(GuardError):
    """The local emulator refuses an API request, as the real API would.

    ``status`` is the gRPC status code's name (``"NOT_FOUND"``,
    ``"INVALID_ARGUMENT"``, ...): the emulator's gRPC layer turns the error into
    that status with this message, so the client sees the real API's behaviour.
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
