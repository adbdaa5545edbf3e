"""Exit codes are part of the interface: pipelines branch on them."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a ``deploy-guard`` command's exit status means."""

    #: The candidate passed (and was promoted if asked).
    PASS = 0
    #: The candidate failed; traffic was rolled back or never shifted to it.
    FAIL = 1
    #: Bad usage or configuration (an invalid policy, an unknown revision).
    USAGE = 2
    #: The evidence was not enough to decide; nothing was changed unless the policy says so.
    INCONCLUSIVE = 3
    #: An action failed or was refused (for example a concurrent deploy); a human is needed.
    ACTION_FAILED = 4
