"""The executor's write for a command that is not a check: ``deploy-guard rollback``.

A rollback by hand moves traffic as a failed check does, so it writes the same
way: :meth:`Executor.write <deploy_guard.actions.executor.Executor.write>`
(against the service as read, annotations in the same UpdateService, done only
when a re-read shows it; a refused, failed or unverified write said the same
way, with the ``gcloud`` command to do it by hand). The executor records what
it does in a check's report; a command keeps no report, so :func:`executor_for`
gives it a throwaway one (the events still reach the log, with the same names a
check logs: ``rollback_requested``, ``rollback_verified``...), and
:func:`write_or_raise` turns the executor's :class:`ActionResult` back into the
error a command exits with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deploy_guard.actions.executor import Executor
from deploy_guard.errors import ActionError, SupersededError, UnverifiedError
from deploy_guard.gcp.traffic import Allocation, ServiceState
from deploy_guard.report.model import CheckReport
from deploy_guard.report.recorder import Recorder

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.gcp.cloudrun import CloudRun


def executor_for(
    router: CloudRun, state: ServiceState, *, project: str, region: str, command: str
) -> Executor:
    """An :class:`Executor` whose next write is made against ``state`` (as just read)."""
    report = CheckReport(revision="", project=project, region=region, service=state.short)
    recorder = Recorder(
        report,
        fields=lambda: {"service": state.short, "command": command},
        calls=lambda: {},
        changed=lambda _report: None,
    )
    executor = Executor(router, recorder, service=state.short, project=project, region=region)
    executor.expected = state
    return executor


async def write_or_raise(
    executor: Executor,
    spec: Sequence[Allocation],
    reason: str,
    *,
    annotations: dict[str, str],
) -> ServiceState:
    """Write ``spec`` (a rollback) with ``annotations``; the verified state, or raise.

    :class:`SupersededError` (someone changed the service: nothing overwritten),
    :class:`UnverifiedError` (sent, not read back) or :class:`ActionError` (the
    write failed: its message says how to do it by hand), all exit 4.
    """
    result = await executor.write(
        spec, reason, kind="rollback", done_action="rolled_back", annotations=annotations
    )
    if result.action == "rolled_back" and executor.expected is not None:
        return executor.expected
    if result.action == "superseded":
        raise SupersededError(result.message)
    if result.action == "unverified":
        raise UnverifiedError(result.message)
    raise ActionError(result.message)
