"""Ten services, ten guard processes at once, one emulator with Cloud Logging's read quota on.

The fleet file maps every service to the chat policy; each guard is the real CLI, started
as a Cloud Run job starts its tasks (``CLOUD_RUN_TASK_INDEX`` 0..9, ``CLOUD_RUN_TASK_COUNT``
10) and checks its service's latest revision. Two candidates are broken, one so that the
probes see it (1011) and one so that only Cloud Logging does (error lines the log rule
counts, read in that guard's own slot). Exactly those two roll back; the eight others
pass with their traffic untouched; and the emulator's ListLogEntries calls stay within
the budget docs/fleets.md promises: half the quota a minute, one read per slot.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from deploy_guard.analysis.budget import LogBudget
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.clients import Clients
from emulators import running_emulator
from fleets import Services, fleet_file, guard_processes

SERVICES = 10
#: The quota the fleet file declares and the emulator enforces (Google's reported 120/min).
QUOTA = 120
BROKEN = {
    3: {"CHAT_FAIL_1011_AFTER": "0.05"},  # the probes see it: 1011 at once
    7: {"CHAT_ERROR_LOGS": "1"},  # only the logs see it: "tool call failed" lines
}
LIST = "ListLogEntries"


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory, fast_polling: Any) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("fleet")
    with running_emulator(logging_read_quota=QUOTA) as emu:
        clients = Clients(host=emu.address)
        try:
            services = Services(emu, clients, fast_polling)
            deployed = services.deploy_all([BROKEN.get(k, {}) for k in range(SERVICES)])
            fleet = fleet_file(
                folder / "fleet.yaml", [f"svc-{k}" for k in range(SERVICES)], quota=f"{QUOTA}/min"
            )
            emu.faults.reset_counts()
            guards = guard_processes(emu, fleet, folder, SERVICES, "--log-settle", "0s")
            serving = [services.serving(f"svc-{k}") for k in range(SERVICES)]
            quota = emu.emulator.read_quota
            assert quota is not None
            return {
                "deployed": deployed,
                "guards": guards,
                "serving": serving,
                "calls": emu.faults.count(LIST),
                "refused": quota.refused,
            }
        finally:
            clients.close()


def test_exactly_the_two_broken_services_roll_back(fleet_run: dict[str, Any]) -> None:
    for guard in fleet_run["guards"]:
        base, candidate = fleet_run["deployed"][guard.index]
        report = guard.report
        assert report["service"] == f"svc-{guard.index}", guard.stderr[-2000:]
        assert report["revision"] == candidate  # no --revision: the latest created one
        if guard.index in BROKEN:
            assert guard.code == ExitCode.FAIL, guard.stderr[-2000:]
            assert report["action"] == "rolled_back"
            assert fleet_run["serving"][guard.index] == {base: 100}
        else:
            assert guard.code == ExitCode.PASS, guard.stderr[-2000:]
            assert report["verdict"] == "pass"
            assert fleet_run["serving"][guard.index] == {candidate: 100}


def test_the_log_only_failure_was_found_by_a_log_pass(fleet_run: dict[str, Any]) -> None:
    guard = fleet_run["guards"][7]
    rules = {r["rule"]: r for r in guard.report["rules"]}
    assert rules["no-tool-errors"]["status"] == "fail", rules
    assert rules["chat-golden-path"]["status"] == "pass", rules


@pytest.mark.fault(
    "logs",
    "ten guards of a fleet started at once against one project's Cloud Logging read quota",
    "each reads only in its own slot: at most half the quota a minute, no read refused, "
    "never two reads in one slot",
)
def test_log_reads_stay_within_the_documented_budget(fleet_run: dict[str, Any]) -> None:
    guards = fleet_run["guards"]
    budget = LogBudget(quota=QUOTA, guards=SERVICES, index=0)
    assert fleet_run["calls"] > 0
    assert fleet_run["refused"] == 0  # nobody was refused: the budget left room
    # every call is a guard's, counted in its report as well
    per_guard = [g.report["api_calls"].get("logging", {}).get(LIST, 0) for g in guards]
    assert sum(per_guard) == fleet_run["calls"]
    # each read in a slot of the reader's own: no two reads ever shared a slot
    slots = {
        g.index: [e["slot"] for e in g.events if e.get("message") == "log_read_turn"]
        for g in guards
    }
    taken = [s for found in slots.values() for s in found]
    assert len(taken) == len(set(taken)) == fleet_run["calls"]
    # however long the run took (a busy machine): no minute of slots holds more reads than
    # the budget allows
    minute = round(60 / budget.slot)
    assert max(sum(s <= t < s + minute for t in taken) for s in taken) <= budget.per_minute
    for index, found in slots.items():
        assert all(s % SERVICES == index for s in found), (index, found)
        # one turn (SERVICES slots) at least between two reads of one guard
        assert all(b - a >= SERVICES for a, b in itertools.pairwise(found))
