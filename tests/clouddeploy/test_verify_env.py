"""``check --cloud-deploy`` without an emulator: the variables, the outcomes, the words.

What Cloud Deploy sets for a verify job (Google's "Run hooks before and after
deploying", section "Available environment variables") is read into one phase
and target, every problem named at once; flags typed on the command line win.
The verify strategy's outcome is the exit code Cloud Deploy reads. The phase
appears in every rendering of the report and in the notification payload.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.errors import ConfigError
from deploy_guard.events.message import message
from deploy_guard.events.model import Event
from deploy_guard.events.payload import build, schema
from deploy_guard.exitcodes import ExitCode
from deploy_guard.report.html import render_html
from deploy_guard.report.markdown import render_markdown
from deploy_guard.report.terminal import render, summary
from deploy_guard.runtime.cloud_deploy_env import CloudDeployPhase, resolve, with_serving
from deploy_guard.strategies.check import Analyse, Judged, Preflight
from deploy_guard.strategies.verify import VerifyStrategy
from report.samples import check_report

#: A verify job's environment for a Cloud Run target, as Cloud Deploy sets it.
ENV = {
    "CLOUD_DEPLOY_PROJECT": "123456789012",
    "CLOUD_DEPLOY_PROJECT_ID": "shop-prod",
    "CLOUD_DEPLOY_LOCATION": "europe-west1",
    "CLOUD_DEPLOY_DELIVERY_PIPELINE": "chat-agent",
    "CLOUD_DEPLOY_TARGET": "prod",
    "CLOUD_DEPLOY_RELEASE": "rel-042",
    "CLOUD_DEPLOY_ROLLOUT": "rel-042-to-prod-0001",
    "CLOUD_DEPLOY_JOB_RUN": "4c1f0e5a-6b1d-4f7e-9a53-0d9c2b7e8f10",
    "CLOUD_DEPLOY_PHASE": "canary-10",
    "CLOUD_RUN_PROJECT": "shop-prod",
    "CLOUD_RUN_LOCATION": "europe-west1",
    "CLOUD_RUN_SERVICE": "chat-agent",
    "CLOUD_RUN_REVISION": "chat-agent-00042-xyz",
    "CLOUD_RUN_SERVICE_URLS": "https://chat-agent-abc123-ew.a.run.app,https://chat.example.com",
    "TARGET_TYPE": "RUN",
}
NO_FLAGS: dict[str, str | None] = {}


def test_the_variables_make_the_phase_and_the_target() -> None:
    got = resolve(ENV, NO_FLAGS)
    assert (got.project, got.region, got.service, got.revision) == (
        "shop-prod",
        "europe-west1",
        "chat-agent",
        "chat-agent-00042-xyz",
    )
    assert got.notes == []
    phase = got.phase
    assert (phase.pipeline, phase.target, phase.phase) == ("chat-agent", "prod", "canary-10")
    assert phase.project_number == "123456789012"
    assert phase.service_urls == (
        "https://chat-agent-abc123-ew.a.run.app",
        "https://chat.example.com",
    )
    # verify jobs get no CLOUD_DEPLOY_PERCENTAGE_DEPLOY: the service's split says it
    assert phase.percentage is None
    served, note = with_serving(phase, 10)
    assert (served.percentage, served.serving, served.percentage_source, note) == (
        10,
        10,
        "traffic",
        None,
    )


def test_a_percentage_from_cloud_deploy_is_kept_and_a_different_split_is_said() -> None:
    phase = resolve({**ENV, "CLOUD_DEPLOY_PERCENTAGE_DEPLOY": "10"}, NO_FLAGS).phase
    assert (phase.percentage, phase.percentage_source) == (10, "CLOUD_DEPLOY_PERCENTAGE_DEPLOY")
    served, note = with_serving(phase, 50)
    assert served.percentage == 10
    assert served.serving == 50
    assert note is not None
    assert "10 %" in note
    assert "50 %" in note


def test_flags_typed_on_the_command_line_win_and_say_so() -> None:
    flags = {"service": "chat-agent", "revision": "chat-agent-00043-abc", "project": "other"}
    got = resolve(ENV, flags)
    assert got.revision == "chat-agent-00043-abc"
    assert got.project == "other"
    assert got.notes == [
        "--revision chat-agent-00043-abc overrides CLOUD_RUN_REVISION=chat-agent-00042-xyz",
        "--project other overrides CLOUD_RUN_PROJECT=shop-prod",
    ]


def test_the_project_falls_back_from_cloud_run_to_cloud_deploy_to_its_number() -> None:
    env = {k: v for k, v in ENV.items() if k not in ("CLOUD_RUN_PROJECT",)}
    assert resolve(env, NO_FLAGS).project == "shop-prod"
    env.pop("CLOUD_DEPLOY_PROJECT_ID")
    assert resolve(env, NO_FLAGS, fallback_project="gcloud-default").project == "gcloud-default"
    assert resolve(env, NO_FLAGS).project == "123456789012"


@pytest.mark.fault(
    "cli",
    "check --cloud-deploy run outside a verify job, or with variables missing",
    "exit 2 naming every missing variable; a flag stands in for its CLOUD_RUN_* variable",
)
def test_every_missing_variable_is_named_at_once() -> None:
    env = {k: v for k, v in ENV.items() if k not in ("CLOUD_DEPLOY_PHASE", "CLOUD_RUN_REVISION")}
    env["CLOUD_DEPLOY_ROLLOUT"] = "  "  # blank is missing
    with pytest.raises(ConfigError) as caught:
        resolve(env, NO_FLAGS)
    text = str(caught.value)
    assert "missing CLOUD_DEPLOY_ROLLOUT, CLOUD_DEPLOY_PHASE, CLOUD_RUN_REVISION" in text
    # flags cannot stand in for CLOUD_DEPLOY_*: the way out by hand is check without the mode
    assert "run check without --cloud-deploy" in text
    env["CLOUD_DEPLOY_PHASE"], env["CLOUD_DEPLOY_ROLLOUT"] = "canary-10", "r-1"
    assert resolve(env, {"revision": "chat-agent-00042-xyz"}).revision == "chat-agent-00042-xyz"


@pytest.mark.fault(
    "cli",
    "Cloud Deploy variables garbled (a project id for the number, 150 %, a URL list with spaces)",
    "exit 2 naming each variable and what is wrong with it, before any API call",
)
def test_garbled_variables_are_named_with_what_is_wrong() -> None:
    env = {
        **ENV,
        "CLOUD_DEPLOY_PROJECT": "shop-prod",
        "CLOUD_DEPLOY_PERCENTAGE_DEPLOY": "150",
        "CLOUD_RUN_SERVICE_URLS": "https://a.run.app, not a url",
        "CLOUD_RUN_SERVICE": "Chat_Agent",
        "CLOUD_DEPLOY_PHASE": "canary 10",
    }
    with pytest.raises(ConfigError) as caught:
        resolve(env, NO_FLAGS)
    text = str(caught.value)
    for name, why in [
        ("CLOUD_DEPLOY_PROJECT='shop-prod'", "is not a project number"),
        ("CLOUD_DEPLOY_PERCENTAGE_DEPLOY='150'", "is not a percentage"),
        ("CLOUD_RUN_SERVICE_URLS='https://a.run.app, not a url'", "is not a comma-separated"),
        ("CLOUD_RUN_SERVICE='Chat_Agent'", "is not a Cloud Run service name"),
        ("CLOUD_DEPLOY_PHASE='canary 10'", "is not a Cloud Deploy phase id"),
    ]:
        assert f"{name} {why}" in text, text
    assert "missing" not in text


def test_a_gke_target_is_refused() -> None:
    with pytest.raises(ConfigError, match="TARGET_TYPE=GKE"):
        resolve({**ENV, "TARGET_TYPE": "GKE"}, NO_FLAGS)


def run_check(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> Any:
    for name in [*ENV, "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_RUN_REGION"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEPLOY_GUARD_LOG_FORMAT", "json")
    return CliRunner().invoke(cli, ["check", *args], catch_exceptions=False)


def test_a_verify_job_with_a_variable_missing_exits_2_and_still_writes_its_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {k: v for k, v in ENV.items() if k != "CLOUD_DEPLOY_JOB_RUN"}
    report = tmp_path / "report.json"
    result = run_check(monkeypatch, env, "--cloud-deploy", "--report", str(report))
    assert result.exit_code == ExitCode.USAGE
    assert "missing CLOUD_DEPLOY_JOB_RUN" in result.output
    doc = json.loads(report.read_text())
    assert doc["verdict"] == "error"
    assert "CLOUD_DEPLOY_JOB_RUN" in doc["error"]


OVERRIDDEN = [
    "--region us-east1 overrides CLOUD_RUN_LOCATION=europe-west1",
    "--project typed overrides CLOUD_RUN_PROJECT=shop-prod",
]


@pytest.mark.parametrize(
    ("flags", "where", "notes"),
    [
        ((), ("shop-prod", "europe-west1"), []),  # CLOUD_RUN_* over GOOGLE_CLOUD_PROJECT & co.
        (("--project", "typed", "--region", "us-east1"), ("typed", "us-east1"), OVERRIDDEN),
    ],
)
def test_cloud_deploy_variables_beat_the_gcloud_ones_and_typed_flags_beat_both(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flags: tuple[str, ...],
    where: tuple[str, str],
    notes: list[str],
) -> None:
    """Stopped at the policy (none there): the report says what was resolved, phase included."""
    env = {**ENV, "GOOGLE_CLOUD_PROJECT": "gcloud-default", "CLOUDSDK_RUN_REGION": "asia-east1"}
    report = tmp_path / "report.json"
    missing = str(tmp_path / "no-such-policy.yaml")
    args = ("--cloud-deploy", "--policy", missing, "--report", str(report), *flags)
    result = run_check(monkeypatch, env, *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    doc = json.loads(report.read_text())
    assert (doc["project"], doc["region"]) == where
    assert (doc["service"], doc["revision"]) == ("chat-agent", "chat-agent-00042-xyz")
    assert doc["cloud_deploy"]["rollout"] == "rel-042-to-prod-0001"
    assert [n for n in doc["notes"] if "overrides" in n] == notes


def test_promote_has_no_meaning_when_cloud_deploy_owns_traffic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_check(monkeypatch, ENV, "--cloud-deploy", "--promote")
    assert result.exit_code == ExitCode.USAGE
    assert "Cloud Deploy owns the traffic" in result.output


def test_check_without_a_revision_or_a_mode_that_names_one_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_check(monkeypatch, {})
    assert result.exit_code == ExitCode.USAGE
    assert "missing --revision" in result.output
    assert "--cloud-deploy" in result.output


def test_help_teaches_the_mode_and_its_exit_codes() -> None:
    text = CliRunner().invoke(cli, ["check", "--help"]).output
    for words in ("--cloud-deploy", "CLOUD_RUN_REVISION", "canaryRevisionTags", "repair rule"):
        assert words in text, words
    flat = " ".join(text.split())
    assert "like every non-zero exit, counts as a failed verification" in flat


# -- the strategy --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("history", "code", "verdict", "words"),
    [
        ([Preflight(ready=True)], None, None, ""),
        ([Preflight(True), Judged("pass", "none", ("all rules passed",))], 0, "pass", "passed"),
        ([Preflight(True), Judged("warn", "none", ("p99 near",))], 0, "warn", "passed"),
        ([Preflight(True), Judged("fail", "rollback", ("1011",))], 1, "fail", "repair rule"),
        ([Preflight(True), Judged("inconclusive", "hold", ("no data",))], 3, "inconclusive", "3"),
        ([Preflight(ready=False, why="crashed")], 1, "fail", "crashed"),
        ([Preflight(ready=None, why="still starting")], 3, "inconclusive", "still starting"),
        ([Preflight(True, settled=False, why="reconciling")], 3, "inconclusive", "reconciling"),
    ],
)
def test_the_verify_strategy_ends_in_the_code_cloud_deploy_reads(
    history: list[Any], code: int | None, verdict: str | None, words: str
) -> None:
    move = VerifyStrategy(phase="canary-10").next(history)
    if code is None:
        assert isinstance(move, Analyse)
        return
    assert not isinstance(move, Analyse)
    assert (move.exit_code, move.verdict, move.action) == (code, verdict, "none")
    assert words in move.message
    assert "canary-10" in move.message


def test_on_inconclusive_pass_exits_0_because_cloud_deploy_fails_any_other_code() -> None:
    judged = [Preflight(True), Judged("inconclusive", "none", ("no data",))]
    move = VerifyStrategy(phase="stable", inconclusive_passes=True).next(judged)
    assert not isinstance(move, Analyse)
    assert move.exit_code == ExitCode.PASS
    assert move.verdict == "inconclusive"


# -- the phase in every rendering ---------------------------------------------------------
def verify_report() -> Any:
    report = check_report()
    phase = CloudDeployPhase(
        pipeline="chat-agent",
        target="prod",
        release="rel-042",
        rollout="rel-042-to-prod-0001",
        phase="canary-10",
        job_run="4c1f0e5a",
        location="europe-west1",
        project_number="123456789012",
        percentage=10,
        percentage_source="traffic",
        serving=10,
        probes="tag",
    )
    report.cloud_deploy = phase.as_dict()
    return report


LINE = "phase canary-10 at 10 % · rollout rel-042-to-prod-0001"


def test_the_phase_is_in_the_json_markdown_terminal_and_html() -> None:
    report = verify_report()
    doc = report.to_dict()
    assert doc["cloud_deploy"]["phase"] == "canary-10"
    assert doc["cloud_deploy"]["percentage"] == 10
    assert "cloud_deploy" not in check_report().to_dict()  # other runs keep their fields
    assert f"- **Cloud Deploy**: {LINE}" in render_markdown(report)
    assert LINE in summary(report).plain
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render(report))
    assert LINE in console.export_text()
    assert "Cloud Deploy phase canary-10 at 10 %" in render_html(doc)


def test_the_phase_rides_in_every_notification() -> None:
    doc = verify_report().to_dict()
    payload = build(Event("fail", "check", "chat", doc["revision"], outcome=True), doc)
    jsonschema.validate(payload, schema())
    assert payload["cloud_deploy"] == {
        "pipeline": "chat-agent",
        "target": "prod",
        "release": "rel-042",
        "rollout": "rel-042-to-prod-0001",
        "phase": "canary-10",
        "percentage": 10,
        "job_run": "4c1f0e5a",
    }
    assert LINE in dict(message(payload).facts)["Cloud Deploy"]
    other = build(Event("fail", "check", "chat", "r"), check_report().to_dict())
    assert other["cloud_deploy"] is None
