"""Cloud Logging's read quota: the emulator refuses as Google does; a guard never passes blind.

The quota's window is stepped with a clock of the test's own; the refusal is read through
the official client, as a guard reads it. Then a fleet's guard whose reads are all refused
(someone else used the project's quota) ends inconclusive, its traffic untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from google.api_core import exceptions

from deploy_guard.cli import cli
from deploy_guard.emulator.quota import ReadQuota, project_number, quota_message
from deploy_guard.exitcodes import ExitCode
from emulators import running_emulator
from fleets import Services, fleet_file


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_quota_is_a_sliding_minute_per_project() -> None:
    clock = Clock()
    quota = ReadQuota(3, clock=clock)
    assert [quota.take(["p"]) for _ in range(4)] == [None, None, None, "p"]
    assert quota.take(["q"]) is None  # another project has its own
    clock.now += 59.9
    assert quota.take(["p"]) == "p"  # refused calls are not charged; the window still full
    clock.now += 0.1
    assert quota.take(["p"]) is None  # the first call left the window
    assert quota.in_window("p") == 1
    assert (quota.admitted, quota.refused) == (5, 2)


def test_a_call_over_any_project_s_quota_is_refused_whole() -> None:
    quota = ReadQuota(1, clock=Clock())
    assert quota.take(["a"]) is None
    assert quota.take(["b", "a"]) == "a"
    assert quota.in_window("b") == 0


@pytest.mark.fault(
    "emulator",
    "ListLogEntries beyond the emulator's --logging-read-quota N/min in a project",
    "RESOURCE_EXHAUSTED in Cloud Logging's words, with ErrorInfo RATE_LIMIT_EXCEEDED and "
    "quota_limit ReadRequestsPerMinutePerProject",
)
def test_the_emulator_refuses_reads_beyond_the_quota_as_cloud_logging_does() -> None:
    with running_emulator(logging_read_quota=2) as emu:
        from deploy_guard.gcp.clients import Clients

        clients = Clients(host=emu.address)
        try:
            logging = clients.logging()
            request = {"resource_names": [f"projects/{emu.project}"], "filter": ""}
            for _ in range(2):
                list(logging.list_log_entries(request=request, retry=None))
            with pytest.raises(exceptions.ResourceExhausted) as refused:
                list(logging.list_log_entries(request=request, retry=None))
        finally:
            clients.close()
        assert emu.faults.count("ListLogEntries") == 3
    error = refused.value
    assert error.message == quota_message(emu.project)
    assert error.message.startswith(
        "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute' "
        "of service 'logging.googleapis.com' for consumer 'project_number:"
    )
    assert error.reason == "RATE_LIMIT_EXCEEDED"
    assert error.domain == "googleapis.com"
    assert error.metadata["quota_limit"] == "ReadRequestsPerMinutePerProject"
    assert error.metadata["quota_limit_value"] == "2"
    assert error.metadata["quota_metric"] == "logging.googleapis.com/read_requests"
    assert error.metadata["consumer"] == f"projects/{project_number(emu.project)}"


def test_gcloud_s_rest_reads_share_the_quota_with_grpc() -> None:
    """``gcloud logging read`` (REST ``entries:list``) spends the same minute's reads."""
    import httpx

    with running_emulator(logging_read_quota=2) as emu:
        from deploy_guard.gcp.clients import Clients

        clients = Clients(host=emu.address)
        try:
            request = {"resource_names": [f"projects/{emu.project}"], "filter": ""}
            list(clients.logging().list_log_entries(request=request, retry=None))
        finally:
            clients.close()
        body = {"resourceNames": [f"projects/{emu.project}"]}
        with httpx.Client(base_url=f"http://{emu.rest_address}", timeout=10) as front:
            assert front.post("/v2/entries:list", json=body).status_code == 200
            refused = front.post("/v2/entries:list", json=body)
            number = front.get(f"/v1/projects/{emu.project}").json()["projectNumber"]
    assert refused.status_code == 429
    assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert refused.json()["error"]["message"] == quota_message(emu.project)
    # one project, one number: the refusal names the consumer Resource Manager gives
    assert f"for consumer 'project_number:{number}'." in refused.json()["error"]["message"]


@pytest.mark.parametrize("value", ["lots", "0/min"])
def test_the_emulator_refuses_a_quota_that_is_not_one(value: str) -> None:
    result = CliRunner().invoke(cli, ["emulator", "--logging-read-quota", value])
    assert result.exit_code == ExitCode.USAGE
    assert "--logging-read-quota" in result.output


@pytest.mark.fault(
    "logs",
    "a fleet's guard finds Cloud Logging's read quota used up by others (every read "
    "RESOURCE_EXHAUSTED)",
    "it backs off to a later turn, tries once more, and the log rules stay missing evidence: "
    "inconclusive (exit 3), traffic unchanged",
)
def test_a_guard_whose_reads_are_refused_never_passes(tmp_path: Path, fast_polling: Any) -> None:
    from deploy_guard.gcp.clients import Clients

    with running_emulator(logging_read_quota=2) as emu:
        clients = Clients(host=emu.address)
        try:
            services = Services(emu, clients, fast_polling)
            ((_base, candidate),) = services.deploy_all([{}])
            logging = clients.logging()
            request = {"resource_names": [f"projects/{emu.project}"], "filter": ""}
            for _ in range(2):  # someone in the console reads the project's logs
                list(logging.list_log_entries(request=request, retry=None))
            # a quota the guard believes large: its turns come often, its back-off is short
            fleet = fleet_file(tmp_path / "fleet.yaml", ["svc-0"], quota="600/min")
            report = tmp_path / "report.json"
            env = {
                "DEPLOY_GUARD_EMULATOR_HOST": emu.address,
                "GOOGLE_CLOUD_PROJECT": emu.project,
                "CLOUDSDK_RUN_REGION": emu.region,
                "DEPLOY_GUARD_LOG_FORMAT": "json",
                "CLOUD_RUN_TASK_INDEX": "0",
                "CLOUD_RUN_TASK_COUNT": "1",
            }
            args = ["check", "--fleet", str(fleet), "--report", str(report)]
            args += ["--api-retry", "1s", "--log-interval", "0.1s"]
            result = CliRunner().invoke(cli, args, env=env)
            serving = services.serving("svc-0")
            refused = emu.emulator.read_quota.refused if emu.emulator.read_quota else 0
        finally:
            clients.close()
    doc = json.loads(report.read_text())
    assert result.exit_code == ExitCode.INCONCLUSIVE, result.output
    assert doc["verdict"] == "inconclusive"
    assert serving == {candidate: 100}
    rules = {r["rule"]: r for r in doc["rules"]}
    assert rules["chat-golden-path"]["status"] == "pass"
    for name in ("no-1011-in-logs", "no-tool-errors"):
        assert rules[name]["status"] != "pass"
        assert "RESOURCE_EXHAUSTED" in json.dumps(rules[name])
    assert refused >= 2  # the turn it read in, and the later one it backed off to
