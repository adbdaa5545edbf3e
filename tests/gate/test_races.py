"""The check when something happens at the worst moment: another deploy right after
the guard's own write, a signal while a write is in flight or during the clean-up.

In-process (the gate's Python API) against the emulator, so a test can choose the
moment: a signal is the cancellation the CLI turns SIGINT/SIGTERM into.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy_guard.errors import SupersededError
from deploy_guard.gcp.cloudrun import CloudRun
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.gcp.traffic import ServiceState
from deploy_guard.report.model import CheckReport
from gates import build_gate
from waiting import eventually

POLICIES = Path(__file__).parent / "policies"


def _events(report: CheckReport) -> list[str]:
    return [e.event for e in report.timeline.events]


class _DeployRightAfterOurWrite(CloudRun):
    """Cloud Run where another pipeline deploys the moment the guard's first write lands."""

    def __init__(self, chat: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chat = chat
        self.other: str = ""

    async def _update(self, service: Any, **kw: Any) -> ServiceState:
        written = await super()._update(service, **kw)
        if not self.other:
            self.other = await asyncio.to_thread(self.chat.candidate, {"OTHER": "deploy"}, tag=None)
        return written


@pytest.mark.fault(
    "traffic",
    "a deploy lands between the guard's write and its re-read",
    "superseded, exit 4; not adopted as the guard's state",
)
async def test_a_deploy_landing_right_after_the_guards_write_is_not_taken_for_its_own(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    base = chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, tag=None, percent=20)
    router = _DeployRightAfterOurWrite(
        chat, gcp_clients, emulator.project, emulator.region, calls=ApiCalls()
    )
    gate = build_gate(gcp_clients, emulator, cand, router=router)
    with pytest.raises(SupersededError):
        await gate.run()
    report = gate.report
    assert router.other, "the other deploy did not happen"
    # the temporary tag was the guard's write; the other deploy came right after it
    assert report.action == "superseded", report.message
    assert report.exit_code == 4
    assert "right after deploy-guard's own traffic change" in report.message
    assert "newer revision" in report.message
    assert "rollback_requested" not in _events(report)
    # the other pipeline's traffic stands: the guard wrote nothing after it
    assert chat.serving() == {base: 80, cand: 20}
    assert not any(t.startswith("dg-") for t in chat.tags())


@pytest.mark.fault(
    "signals",
    "a signal (cancellation) during the temporary-tag write",
    "the write lands, the tag is removed, exit 3",
)
async def test_a_signal_during_the_tag_write_lets_it_land_then_removes_the_tag(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)  # untagged: the guard adds a temporary tag
    emulator.faults.delay("UpdateService", 1.0)  # the write is in flight for a while
    gate = build_gate(gcp_clients, emulator, cand)
    task = asyncio.ensure_future(gate.run())
    await eventually(lambda: "tag_requested" in _events(gate.report), what="the tag write")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # no decision yet: the check is interrupted
        await task
    assert gate.report.exit_code == 3
    assert "tag_removed" in _events(gate.report)
    # two writes, both done: the tag, then its removal (a removal that ran before the
    # tag landed would find nothing to remove, and the tag would stay for good)
    assert gate.router.calls.get("run", "UpdateService") == 2
    # the write landed before the clean-up read the service, so the removal found it
    assert not any(t.startswith("dg-") for t in chat.tags())


@pytest.mark.fault(
    "signals", "a signal during the clean-up after a verdict", "verdict and exit code stand"
)
async def test_a_signal_during_the_clean_up_changes_neither_verdict_nor_exit_code(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    emulator.faults.delay("UpdateService", 1.0)  # the tag removal takes a while too
    emulator.faults.reset_counts()
    gate = build_gate(gcp_clients, emulator, cand)
    task = asyncio.ensure_future(gate.run())
    await eventually(lambda: "decision" in _events(gate.report), within=30, what="a verdict")
    # the second write (the first added the tag) is the removal: held in the emulator now
    await eventually(
        lambda: emulator.faults.count("UpdateService") >= 2, within=30, what="the tag removal"
    )
    task.cancel()  # the gate is removing its tag now
    report = await task  # no CancelledError: the decided check ends as decided
    assert report.verdict == "pass"
    assert report.exit_code == 0
    assert "signal_during_cleanup" in _events(report)
    assert "tag_removed" in _events(report)
    assert _events(report)[-1] == "check_finished"
    assert not any(t.startswith("dg-") for t in chat.tags())


@pytest.mark.fault(
    "traffic",
    "the temporary tag cannot be removed after a pass",
    "exit 0 (verdict stands), the outcome says so with the command to remove it",
)
async def test_a_tag_that_cannot_be_removed_is_reported_with_the_command_to_remove_it(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    gate = build_gate(gcp_clients, emulator, cand)
    task = asyncio.ensure_future(gate.run())
    await eventually(lambda: "tag_added" in _events(gate.report), what="the temporary tag")
    emulator.faults.fail("UpdateService", grpc.StatusCode.INTERNAL)  # its removal will fail
    report = await task
    assert report.verdict == "pass"
    assert report.exit_code == 0  # the verdict stands; the leftover is said loudly
    assert "tag_removal_failed" in _events(report)
    (tag,) = (t for t in chat.tags() if t.startswith("dg-"))
    hand = f"gcloud run services update-traffic chat --remove-tags {tag} --region"
    assert hand in report.message
    assert hand in report.error


class _DeployKeepingOurTag(CloudRun):
    """Another deploy right after the guard's tag write, keeping that tag in its spec."""

    def __init__(self, chat: Any, emulator: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chat, self.emulator = chat, emulator
        self.done = False

    async def _update(self, service: Any, **kw: Any) -> ServiceState:
        written = await super()._update(service, **kw)
        if not self.done:
            self.done = True

            def deploy() -> None:
                svc = self.chat.get()
                svc.template = self.chat.template({"OTHER": "deploy"})
                op = self.chat.clients.services().update_service(service=svc)
                op.result(timeout=60, polling=self.chat.polling)

            await asyncio.to_thread(deploy)
            self.emulator.faults.delay("UpdateService", 1.0)  # the tag removal will be slow
        return written


@pytest.mark.fault("signals", "a signal during the clean-up of a superseded check", "exit 4 stands")
async def test_a_signal_during_the_clean_up_of_a_superseded_check_keeps_exit_4(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate(tag=None)
    router = _DeployKeepingOurTag(
        chat, emulator, gcp_clients, emulator.project, emulator.region, calls=ApiCalls()
    )
    gate = build_gate(gcp_clients, emulator, cand, router=router)
    task = asyncio.ensure_future(gate.run())
    await eventually(lambda: gate.run_state.decided, within=30, what="the superseded outcome")
    task.cancel()  # the gate is removing its tag now
    with pytest.raises(SupersededError):  # the outcome, not the signal
        await task
    assert gate.report.action == "superseded"
    assert gate.report.exit_code == 4
    events = _events(gate.report)
    assert "signal_during_cleanup" in events
    assert "tag_removed" in events
    assert events[-1] == "check_finished"
    assert not any(t.startswith("dg-") for t in chat.tags())


@pytest.mark.fault(
    "logs",
    "the decision cancels a log poller as the probes finish",
    "the poller stops at once, no extra pass or settle wait",
)
async def test_a_poller_cancelled_as_the_probes_finish_stops_at_once() -> None:
    """The decision cancels the pollers just as the probes' end wakes them: they must stop.

    (``asyncio.wait_for`` on Python 3.11 returns normally here instead, and a poller
    would run one more pass, or sleep through --log-settle, while the decision waits.)
    """
    from deploy_guard.analysis.streams import _wait

    probes_done = asyncio.Event()
    poller = asyncio.ensure_future(_wait(probes_done, 10))
    await asyncio.sleep(0)  # the poller is waiting
    probes_done.set()  # the probes end ...
    poller.cancel()  # ... as the decision cancels the poller
    with pytest.raises(asyncio.CancelledError):
        await poller
