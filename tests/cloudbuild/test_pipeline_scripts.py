"""The shell logic of the pipeline's steps, run with bash.

The ``deploy`` step decides between ``--no-traffic`` (an existing service) and a plain
first deploy (no service yet). Getting that wrong sends 100 % of users to an unchecked
revision, so the decision is tested here with the step's own script. ``gcloud`` is a
small stand-in program on PATH that answers from a table and records every call: the
seam is the process boundary, where the real pipeline calls the real CLI.

The ``guard`` step runs ``deploy-guard check --promote`` or ``deploy-guard rollout`` as
``_GUARD_MODE`` says, keeps its exit code for the ``verdict`` step, and passes a
cancelled build's SIGTERM on to it; a recording ``deploy-guard`` stands in at the same
boundary (the real one runs in ``test_pipeline_e2e.py``). The ``bake`` step runs
``deploy-guard watch --for _WATCH_FOR`` after a guard that passed, the same way.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

FAKE_GCLOUD = """\
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
answers = json.loads(os.environ.get("FAKE_GCLOUD_ANSWERS", "{}"))
for prefix, answer in answers.items():
    if args[: len(prefix.split())] == prefix.split():
        sys.stdout.write(answer.get("out", ""))
        sys.stderr.write(answer.get("err", ""))
        sys.exit(answer.get("rc", 0))
"""


class Steps:
    """Runs pipeline steps with a recording ``gcloud`` and a temporary /workspace."""

    def __init__(self, pipeline: Any, tmp_path: Path) -> None:
        self.pipeline = pipeline
        self.workspace = tmp_path / "workspace"
        self.workspace.mkdir()
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        gcloud = bin_dir / "gcloud"
        gcloud.write_text(f"#!{sys.executable}\n{FAKE_GCLOUD}")
        gcloud.chmod(0o755)
        self.log = tmp_path / "gcloud.jsonl"
        self.env = {
            "PATH": os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]),
            "FAKE_GCLOUD_LOG": str(self.log),
        }
        self.values = pipeline.values(PROJECT_ID="acme", BUILD_ID="b-7")

    def run(self, step_id: str, answers: dict[str, dict[str, Any]], **values: str) -> Any:
        env = dict(self.env, FAKE_GCLOUD_ANSWERS=json.dumps(answers))
        chosen = dict(self.values, **values)
        return self.pipeline.run_step(step_id, chosen, self.workspace, env, timeout=30)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def deploys(self) -> list[list[str]]:
        return [c for c in self.calls() if c[:2] == ["run", "deploy"]]


@pytest.fixture
def steps(pipeline: Any, tmp_path: Path) -> Steps:
    return Steps(pipeline, tmp_path)


LIST = "run services list"


# --- deploy ------------------------------------------------------------------------


def test_an_existing_service_gets_a_revision_with_no_traffic(steps: Steps) -> None:
    result = steps.run("deploy", {LIST: {"out": "other\nchat-agent\n"}})
    assert result.returncode == 0, result.stderr
    (deploy,) = steps.deploys()
    assert deploy[2] == "chat-agent"
    assert "--no-traffic" in deploy
    assert deploy[deploy.index("--tag") + 1] == "candidate"
    assert deploy[deploy.index("--image") + 1] == (
        "europe-west1-docker.pkg.dev/acme/cloud-run/chat-agent:b-7"
    )
    assert deploy[deploy.index("--region") + 1] == "europe-west1"
    assert "--service-account" not in deploy  # _RUNTIME_SA empty: keep the service's own


def test_the_first_deploy_creates_the_service_with_traffic(steps: Steps) -> None:
    # A service whose name merely contains ours is not ours (grep -x, not a substring).
    result = steps.run("deploy", {LIST: {"out": "chat-agent-v2\nmy-chat-agent\n"}})
    assert result.returncode == 0, result.stderr
    (deploy,) = steps.deploys()
    assert "--no-traffic" not in deploy
    assert "--tag" in deploy
    assert "first deploy" in result.stdout


def test_a_failed_service_listing_stops_the_build_before_any_deploy(steps: Steps) -> None:
    answers = {LIST: {"rc": 1, "err": "PERMISSION_DENIED: run.services.list"}}
    result = steps.run("deploy", answers)
    assert result.returncode != 0
    assert steps.deploys() == [], "deployed although it could not tell whether to use traffic"


def test_a_failed_deploy_fails_the_step(steps: Steps) -> None:
    answers = {LIST: {"out": "chat-agent\n"}, "run deploy": {"rc": 1}}
    assert steps.run("deploy", answers).returncode != 0


def test_a_runtime_service_account_is_passed_when_given(steps: Steps) -> None:
    sa = "chat-runtime@acme.iam.gserviceaccount.com"
    # The step reads it from its env, which Cloud Build fills from _RUNTIME_SA.
    result = steps.run("deploy", {LIST: {"out": "chat-agent\n"}}, _RUNTIME_SA=sa)
    assert result.returncode == 0, result.stderr
    (deploy,) = steps.deploys()
    assert deploy[deploy.index("--service-account") + 1] == sa


def test_the_step_env_carries_the_runtime_service_account(pipeline: Any) -> None:
    assert pipeline.step("deploy")["env"] == ["RUNTIME_SA=${_RUNTIME_SA}"]


# --- read-revision -------------------------------------------------------------------


def test_the_revision_name_is_written_for_the_check(steps: Steps) -> None:
    describe = {"run services describe": {"out": "chat-agent-00007-abc\n"}}
    result = steps.run("read-revision", describe)
    assert result.returncode == 0, result.stderr
    assert (steps.workspace / "revision").read_text().strip() == "chat-agent-00007-abc"
    (call,) = steps.calls()
    assert call[call.index("--format") + 1] == "value(status.latestCreatedRevisionName)"
    # The guard's image runs as a non-root user: its output folder must be writable by all.
    mode = (steps.workspace / "deploy-guard").stat().st_mode
    assert mode & stat.S_IWOTH


def test_no_revision_name_fails_the_step(steps: Steps) -> None:
    result = steps.run("read-revision", {"run services describe": {"out": ""}})
    assert result.returncode != 0
    assert "no revision name" in result.stderr


# --- keep-report and verdict ---------------------------------------------------------


def test_a_check_that_never_finished_fails_the_build_with_4(steps: Steps) -> None:
    (steps.workspace / "deploy-guard").mkdir()
    (steps.workspace / "deploy-guard" / "report.json").write_text("{}")
    keep = steps.run("keep-report", {})
    assert keep.returncode == 0, keep.stderr
    # Whatever exists is kept (here only the report), even without an exit code.
    (upload,) = steps.calls()
    assert upload[:2] == ["storage", "cp"]
    assert [Path(p).name for p in upload[2:-1]] == ["report.json"]
    assert upload[-1] == "gs://acme-deploy-guard/deploy-guard/chat-agent/b-7/"
    verdict = steps.run("verdict", {})
    assert verdict.returncode == 4


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4])
def test_the_verdict_is_the_guards_exit_code(steps: Steps, code: int) -> None:
    (steps.workspace / "deploy-guard").mkdir()
    (steps.workspace / "deploy-guard" / "exit-code").write_text(f"{code}\n")
    assert steps.run("keep-report", {}).returncode == 0
    assert steps.run("verdict", {}).returncode == code
    uploaded = [c for c in steps.calls() if c[:2] == ["storage", "cp"]]
    assert not uploaded, "no files exist: nothing to upload, and no failure because of it"


# --- guard: check or rollout ---------------------------------------------------------

#: Stands in for the guard's own CLI at the same process boundary: records its words,
#: says it started, exits with FAKE_GUARD_CODE; on SIGTERM it notes it and exits 3 (what
#: deploy-guard does after putting traffic back).
FAKE_GUARD = """\
import json, os, signal, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_GUARD_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
def stop(signum, frame):
    open(os.environ["FAKE_GUARD_LOG"] + ".signal", "w").write(str(signum))
    sys.exit(3)
signal.signal(signal.SIGTERM, stop)
if os.environ.get("FAKE_GUARD_HOLD"):
    open(os.environ["FAKE_GUARD_LOG"] + ".started", "w").write("")
    time.sleep(60)
sys.exit(int(os.environ.get("FAKE_GUARD_CODE", "0")))
"""


class Guard:
    """Runs the ``guard`` step with a recording ``deploy-guard`` on PATH."""

    def __init__(self, steps: Steps, tmp_path: Path) -> None:
        self.steps = steps
        guard = tmp_path / "bin" / "deploy-guard"
        guard.write_text(f"#!{sys.executable}\n{FAKE_GUARD}")
        guard.chmod(0o755)
        self.log = tmp_path / "guard.jsonl"
        (steps.workspace / "revision").write_text("chat-agent-00007-abc\n")

    def env(self, **extra: str) -> dict[str, str]:
        return dict(self.steps.env, FAKE_GUARD_LOG=str(self.log), **extra)

    def values(self, **values: str) -> dict[str, str]:
        return dict(self.steps.values, **values)

    def run(self, code: int = 0, step: str = "guard", **values: str) -> Any:
        env = self.env(FAKE_GUARD_CODE=str(code))
        pipeline, workspace = self.steps.pipeline, self.steps.workspace
        return pipeline.run_step(step, self.values(**values), workspace, env, timeout=30)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def exit_code(self) -> str:
        return (self.steps.workspace / "deploy-guard" / "exit-code").read_text().strip()

    def guarded(self, code: int) -> None:
        """What the guard step leaves for the bake: its exit code."""
        folder = self.steps.workspace / "deploy-guard"
        folder.mkdir(exist_ok=True)
        (folder / "exit-code").write_text(f"{code}\n")


@pytest.fixture
def guard(steps: Steps, tmp_path: Path) -> Guard:
    return Guard(steps, tmp_path)


def _flag(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


@pytest.mark.parametrize("code", [0, 1, 3, 4])
def test_the_check_mode_runs_check_promote_and_keeps_its_code(guard: Guard, code: int) -> None:
    result = guard.run(code)
    assert result.returncode == 0, result.stderr  # the step itself never fails the build
    (call,) = guard.calls()
    assert call[0] == "check"
    assert "--promote" in call
    assert _flag(call, "--revision") == "chat-agent-00007-abc"
    assert guard.exit_code() == str(code)


@pytest.mark.parametrize("code", [0, 1, 3, 4])
def test_the_rollout_mode_runs_rollout_with_the_policys_steps(guard: Guard, code: int) -> None:
    result = guard.run(code, _GUARD_MODE="rollout")
    assert result.returncode == 0, result.stderr
    (call,) = guard.calls()
    assert call[0] == "rollout"
    assert _flag(call, "--revision") == "chat-agent-00007-abc"
    assert _flag(call, "--service") == "chat-agent"
    assert _flag(call, "--project") == "acme"
    assert _flag(call, "--policy") == "policies/chat-agent.yaml"
    assert "--steps" not in call  # _ROLLOUT_STEPS empty: the policy's rollout.steps
    assert "--promote" not in call
    assert _flag(call, "--timeout") == "10m"
    assert _flag(call, "--log-settle") == "5s"
    assert guard.exit_code() == str(code)


def test_rollout_steps_are_passed_as_one_word(guard: Guard) -> None:
    result = guard.run(_GUARD_MODE="rollout", _ROLLOUT_STEPS="10:2m,50:5m")
    assert result.returncode == 0, result.stderr
    (call,) = guard.calls()
    assert _flag(call, "--steps") == "10:2m,50:5m"


def test_steps_from_a_trigger_cannot_inject_shell(guard: Guard, tmp_path: Path) -> None:
    hostile = "10:2m; touch PWNED $(touch PWNED2)"
    assert guard.run(_GUARD_MODE="rollout", _ROLLOUT_STEPS=hostile).returncode == 0
    (call,) = guard.calls()
    assert _flag(call, "--steps") == hostile  # one word, never run
    assert not list(tmp_path.rglob("PWNED*"))


def test_an_unknown_mode_is_a_usage_error_and_runs_nothing(guard: Guard) -> None:
    result = guard.run(_GUARD_MODE="canary")
    assert result.returncode == 0
    assert guard.calls() == []
    assert guard.exit_code() == "2"
    assert "_GUARD_MODE is 'canary'; use check or rollout" in result.stderr


@pytest.mark.fault(
    "signals",
    "SIGTERM to the Cloud Build pipeline's guard step (a cancelled build)",
    "passed on to deploy-guard, which cleans up; its own exit code is kept, not bash's 143",
)
@pytest.mark.parametrize("mode", ["check", "rollout"])
def test_a_cancelled_build_stops_the_guard_cleanly_and_keeps_its_code(
    guard: Guard, mode: str
) -> None:
    """SIGTERM to the step's bash reaches deploy-guard, whose own exit code is kept."""
    from waiting import wait_until

    env = guard.env(FAKE_GUARD_HOLD="1")
    values = guard.values(_GUARD_MODE=mode)
    proc = guard.steps.pipeline.start_step("guard", values, guard.steps.workspace, env)
    try:
        started = Path(str(guard.log) + ".started")
        wait_until(lambda: started.exists() or proc.poll() is not None, within=30)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert Path(str(guard.log) + ".signal").read_text() == str(int(signal.SIGTERM))
    assert guard.exit_code() == "3"  # deploy-guard's code, not bash's 143


# --- bake: deploy-guard watch after a passing guard ------------------------------------


def test_no_bake_unless_watch_for_is_set(guard: Guard) -> None:
    guard.guarded(0)
    result = guard.run(step="bake")  # _WATCH_FOR defaults to empty
    assert result.returncode == 0, result.stderr
    assert guard.calls() == []
    assert guard.exit_code() == "0"  # the guard's verdict stands
    assert "no bake" in result.stdout


@pytest.mark.parametrize("code", ["1", "3", "4", None])
def test_no_bake_after_a_guard_that_did_not_pass(guard: Guard, code: str | None) -> None:
    if code is not None:
        guard.guarded(int(code))
    result = guard.run(step="bake", _WATCH_FOR="30m")
    assert result.returncode == 0, result.stderr
    assert guard.calls() == [], "baked a revision the guard did not pass"
    if code is not None:
        assert guard.exit_code() == code  # the guard's code is the build's
    else:  # the guard never finished: the verdict's 4 still applies
        assert not (guard.steps.workspace / "deploy-guard" / "exit-code").exists()


@pytest.mark.parametrize("code", [0, 1, 3, 4])
def test_the_bake_watches_for_watch_for_and_its_code_is_the_builds(guard: Guard, code: int) -> None:
    guard.guarded(0)
    result = guard.run(code, step="bake", _WATCH_FOR="30m")
    assert result.returncode == 0, result.stderr  # the step itself never fails the build
    (call,) = guard.calls()
    assert call[0] == "watch"
    assert _flag(call, "--service") == "chat-agent"
    assert _flag(call, "--region") == "europe-west1"
    assert _flag(call, "--project") == "acme"
    assert _flag(call, "--policy") == "policies/chat-agent.yaml"
    assert _flag(call, "--for") == "30m"
    assert _flag(call, "--report") == str(
        guard.steps.workspace / "deploy-guard" / "watch-report.json"
    )
    assert _flag(call, "--summary") == str(
        guard.steps.workspace / "deploy-guard" / "watch-summary.md"
    )
    assert "--revision" not in call  # it watches whatever serves the service
    assert guard.exit_code() == str(code)
    assert guard.steps.run("verdict", {}).returncode == code


def test_watch_for_from_a_trigger_cannot_inject_shell(guard: Guard, tmp_path: Path) -> None:
    guard.guarded(0)
    hostile = "30m; touch PWNED $(touch PWNED2)"
    assert guard.run(step="bake", _WATCH_FOR=hostile).returncode == 0
    (call,) = guard.calls()
    assert _flag(call, "--for") == hostile  # one word, for deploy-guard to refuse (exit 2)
    assert not list(tmp_path.rglob("PWNED*"))


def test_the_bakes_report_is_kept_whatever_its_outcome(guard: Guard) -> None:
    """A passing build's ``artifacts`` hold the guard's files only; keep-report adds the
    bake's, and on a fail the guard's too."""
    folder = guard.steps.workspace / "deploy-guard"
    guard.guarded(0)
    for name in ("report.json", "summary.md", "watch-report.json", "watch-summary.md"):
        (folder / name).write_text("{}")
    assert guard.steps.run("keep-report", {}).returncode == 0
    (upload,) = guard.steps.calls()
    assert [Path(p).name for p in upload[2:-1]] == ["watch-report.json", "watch-summary.md"]
    (folder / "exit-code").write_text("1\n")  # the bake rolled back
    assert guard.steps.run("keep-report", {}).returncode == 0
    upload = guard.steps.calls()[-1]
    assert [Path(p).name for p in upload[2:-1]] == [
        "report.json", "summary.md", "watch-report.json", "watch-summary.md",
    ]  # fmt: skip
    assert upload[-1] == "gs://acme-deploy-guard/deploy-guard/chat-agent/b-7/"


@pytest.mark.fault(
    "signals",
    "SIGTERM to the Cloud Build pipeline's bake step (a cancelled build during a watch)",
    "passed on to deploy-guard watch, which stops with its report; its exit code is kept",
)
def test_a_cancelled_build_stops_the_bake_cleanly_and_keeps_its_code(guard: Guard) -> None:
    from waiting import wait_until

    guard.guarded(0)
    env = guard.env(FAKE_GUARD_HOLD="1")
    values = guard.values(_WATCH_FOR="30m")
    proc = guard.steps.pipeline.start_step("bake", values, guard.steps.workspace, env)
    try:
        started = Path(str(guard.log) + ".started")
        wait_until(lambda: started.exists() or proc.poll() is not None, within=30)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert Path(str(guard.log) + ".signal").read_text() == str(int(signal.SIGTERM))
    assert guard.exit_code() == "3"  # watch stopped before --for elapsed, not bash's 143
