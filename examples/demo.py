"""``make demo``: the 1011 story, caught and rolled back, then a good revision promoted.

1. starts the local emulator (``deploy-guard emulator --gcloud-env FILE``, a subprocess);
   where ``gcloud`` is installed, every deploy, traffic move and read of the service is
   the real ``gcloud`` (``gcloud run deploy --no-traffic --tag``, ``gcloud run services
   describe``, ``gcloud run services update-traffic``), pointed at the emulator by that
   file (docs/gcloud.md); elsewhere the official Python client makes the same calls, and
   the demo says which it uses;
2. deploys ``examples/chat_agent`` healthy as revision 1 with 100 % of the traffic;
3. deploys the broken variant (``CHAT_FAIL_1011_AFTER=7``: every chat session is
   closed with 1011 seven seconds in) as revision 2, with no traffic and a tag;
4. runs ``deploy-guard check`` on it, as a user or Cloud Build would: it fails on
   the first 1011, and traffic stays on revision 1;
5. deploys a healthy revision 3 and checks it with ``--promote``: traffic moves;
6. starts ``deploy-guard watch`` on the service, then deploys revision 4 straight to
   100 % with no check (``CHAT_BAD_AFTER``: healthy for a few seconds, then every new
   session dies with 1011): the watch follows the deploy, sees the 1011s and puts
   traffic back on revision 3, the last known good, by itself;
7. prints where the reports are (JSON, Markdown, and the HTML page with the picture of
   every session: ``demo-reports/1-broken-revision.html`` shows the five held sessions
   all closed with 1011 seven seconds in), and stops every process it started.

The shipped policy holds each session 60 s; to keep the demo under two
minutes it checks with a copy whose hold is :data:`DEMO_HOLD` (said on screen).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHAT_APP = ROOT / "examples" / "chat_agent" / "app.py"
POLICY = ROOT / "policies" / "chat-agent.yaml"
REPORTS = ROOT / "demo-reports"
SERVICE = "chat-agent"
DEMO_HOLD = "15s"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def start_emulator(gcloud_env: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start ``deploy-guard emulator`` and read its address from the first stdout line.

    With ``gcloud_env``, the emulator also writes there the variables that point gcloud
    at it (before that first line), and runs revisions from the repository's root.
    """
    args = [sys.executable, "-m", "deploy_guard", "emulator", "--port", "0"]
    if gcloud_env is not None:
        args += ["--gcloud-env", str(gcloud_env), "--workdir", str(ROOT)]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "DEPLOY_GUARD_LOG_LEVEL": "warning"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("DEPLOY_GUARD_EMULATOR_HOST="):
        proc.terminate()
        raise SystemExit(f"the emulator did not start (said {line!r})")
    return proc, line.split("=", 1)[1]


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the emulator then stops its revision processes), then make sure."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def demo_policy(hold: str = DEMO_HOLD, folder: Path = REPORTS) -> Path:
    """A copy of the shipped chat policy with a shorter hold (the file is data, not code)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    doc: Any = yaml.load(POLICY.read_text())
    for rule in doc["rules"]:
        ws = rule.get("websocket")
        if ws is not None and "hold" in ws:
            ws["hold"] = hold
    watch = doc.get("watch")
    if watch is not None:  # the watch's canary renews every few seconds, not every 30
        watch["canary"]["renew"] = "3s"
        watch["heartbeat"] = "10s"
    folder.mkdir(exist_ok=True)
    out = folder / "chat-agent-demo.yaml"
    with out.open("w") as fh:
        yaml.dump(doc, fh)
    return out


class Deployer:
    """Deploys revisions of the chat service through the official Cloud Run client."""

    def __init__(self, host: str) -> None:
        from google.api_core import retry
        from google.api_core.future import polling

        from deploy_guard.gcp.clients import Clients

        self.clients = Clients(host=host)
        self.parent = "projects/local-project/locations/us-central1"
        self.name = f"{self.parent}/services/{SERVICE}"
        self.polling = retry.Retry(
            predicate=polling.POLLING_PREDICATE, initial=0.05, maximum=0.5, timeout=60
        )
        #: The split the last deploy left ("rev 100%"), without another read.
        self.split = ""

    def template(self, env: dict[str, str]) -> Any:
        from google.cloud import run_v2

        container = run_v2.Container(
            image="local/chat-agent",
            command=[sys.executable, str(CHAT_APP)],
            env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()],
        )
        return run_v2.RevisionTemplate(containers=[container])

    def first(self) -> str:
        from google.cloud import run_v2

        op = self.clients.services().create_service(
            parent=self.parent,
            service=run_v2.Service(template=self.template({"DEMO_REVISION": "1"})),
            service_id=SERVICE,
        )
        done = op.result(timeout=60, polling=self.polling)
        self.split = self.split_of(done)
        return str(done.latest_ready_revision).rsplit("/", 1)[-1]

    def candidate(self, env: dict[str, str], tag: str, percent: int = 0) -> str:
        """A new revision with no traffic and a tag (``gcloud run deploy --no-traffic --tag``).

        ``percent`` > 0 deploys a canary instead: that share moves off the serving revision.
        """
        from google.cloud import run_v2

        kinds = run_v2.TrafficTargetAllocationType
        svc = self.clients.services().get_service(name=self.name)
        latest = str(svc.latest_ready_revision).rsplit("/", 1)[-1]
        svc.template = self.template(env)
        svc.traffic = [
            run_v2.TrafficTarget(  # what serves now, pinned by name (LATEST resolved)
                type_=kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION,
                revision=t.revision or latest,
                percent=t.percent,
            )
            for t in svc.traffic_statuses
            if t.percent
        ] + [
            run_v2.TrafficTarget(
                type_=kinds.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=percent, tag=tag
            )
        ]
        svc.traffic[0].percent -= percent
        op = self.clients.services().update_service(service=svc)
        done = op.result(timeout=60, polling=self.polling)
        self.split = self.split_of(done)
        return str(done.latest_created_revision).rsplit("/", 1)[-1]

    @staticmethod
    def split_of(svc: Any) -> str:
        latest = str(svc.latest_ready_revision).rsplit("/", 1)[-1]
        parts = [f"{t.revision or latest} {t.percent}%" for t in svc.traffic_statuses if t.percent]
        return ", ".join(parts)

    def traffic(self) -> str:
        """The split the service serves now, read from it."""
        return self.split_of(self.clients.services().get_service(name=self.name))

    def close(self) -> None:
        self.clients.close()


def shown(path: str | Path) -> str:
    """``path`` relative to the repository's root when inside it (the emulator's workdir)."""
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(ROOT))
    return str(path)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export NAME=value`` lines ``deploy-guard emulator --gcloud-env`` wrote, by name."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export":
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


class GcloudDeployer:
    """Deploys revisions with the real ``gcloud``, the commands users type (docs/gcloud.md).

    The same interface as :class:`Deployer`. Each command is printed before it runs (as a
    user types it: the ``--quiet --format json`` added to read gcloud's answer left out),
    and gcloud's own progress lines go to the terminal. ``gcloud`` runs with the
    variables of the emulator's ``--gcloud-env`` file, so the user's gcloud
    configuration is neither read nor written.
    """

    def __init__(self, gcloud: str, env_file: Path) -> None:
        self.gcloud = gcloud
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDSDK_")}
        self.env.update(read_env_file(env_file))
        self.image = 0
        self.split = ""

    def run(self, *args: str) -> Any:
        """``gcloud ARGS --format json``, printed first; the parsed answer."""
        print("$ gcloud " + shlex.join(args), flush=True)
        done = subprocess.run(
            [self.gcloud, *args, "--quiet", "--format", "json"],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"gcloud {args[0]} {args[1]} failed (exit {done.returncode})")
        return json.loads(done.stdout)

    @staticmethod
    def split_of(svc: Any) -> str:
        serving = [t for t in svc["status"]["traffic"] if t.get("percent")]
        return ", ".join(f"{t['revisionName']} {t['percent']}%" for t in serving)

    def deploy(self, env: dict[str, str], *flags: str) -> Any:
        """``gcloud run deploy``: a new image tag and these settings (replacing the old)."""
        self.image += 1
        settings = ",".join(f"{k}={v}" for k, v in env.items())
        args = ["run", "deploy", SERVICE, "--image", f"local/chat-agent:{self.image}"]
        return self.run(*args, "--set-env-vars", settings, *flags)

    def first(self) -> str:
        command = ("--command", shown(sys.executable), "--args", shown(CHAT_APP))
        svc = self.deploy({"DEMO_REVISION": "1"}, *command)
        self.split = self.split_of(svc)
        return str(svc["status"]["latestCreatedRevisionName"])

    def candidate(self, env: dict[str, str], tag: str, percent: int = 0) -> str:
        """``gcloud run deploy --no-traffic --tag TAG``; ``percent`` 100 (the only other
        share the demo uses) deploys, then moves all traffic to it (``update-traffic
        --to-latest``: a deploy leaves traffic pinned to a revision where it is)."""
        if percent not in (0, 100):
            raise ValueError("the gcloud path deploys with no traffic or with all of it")
        flags = ("--no-traffic",) if percent == 0 else ()
        svc = self.deploy(env, *flags, *(("--tag", tag) if tag else ()))
        name = str(svc["status"]["latestCreatedRevisionName"])
        self.split = self.split_of(svc)
        if percent == 100:  # its answer: the traffic table, a row per revision or LATEST
            rows = self.run("run", "services", "update-traffic", SERVICE, "--to-latest")
            served = [r for r in rows if r["statusPercent"] not in ("0", "-", "")]
            self.split = ", ".join(f"{r['revisionName']} {r['statusPercent']}%" for r in served)
        return name

    def traffic(self) -> str:
        """``gcloud run services describe``: the split the service serves now."""
        return self.split_of(self.run("run", "services", "describe", SERVICE))

    def close(self) -> None:
        pass


def check(
    host: str,
    revision: str,
    policy: Path,
    name: str,
    *extra: str,
    folder: Path = REPORTS,
    quiet: bool = False,
    command: str = "check",
) -> int:
    """Run ``deploy-guard check`` as a subprocess, the way users and Cloud Build run it.

    ``command="rollout"`` runs ``deploy-guard rollout`` the same way (the benchmark's).
    """
    args = [
        sys.executable,
        "-m",
        "deploy_guard",
        command,
        "--revision",
        revision,
        "--policy",
        str(policy),
        "--report",
        str(folder / f"{name}.json"),
        "--summary",
        str(folder / f"{name}.md"),
        *extra,
    ]
    env = {
        **os.environ,
        "DEPLOY_GUARD_EMULATOR_HOST": host,
        "GOOGLE_CLOUD_PROJECT": "local-project",
        "CLOUDSDK_RUN_REGION": "us-central1",
    }
    if not quiet:
        print("$ deploy-guard " + " ".join(args[3:]), flush=True)
    stderr = subprocess.DEVNULL if quiet else None
    return subprocess.run(args, env=env, check=False, stderr=stderr).returncode


def watch(host: str, policy: Path, name: str) -> subprocess.Popen[bytes]:
    """``deploy-guard watch`` in the background, as a Cloud Run job would run it."""
    args = [sys.executable, "-m", "deploy_guard", "watch", "--service", SERVICE]
    args += ["--policy", str(policy), "--for", "2m", "--service-interval", "1s"]
    args += ["--report", str(REPORTS / f"{name}.json"), "--summary", str(REPORTS / f"{name}.md")]
    args += ["--html", str(REPORTS / f"{name}.html")]
    env = {
        **os.environ,
        "DEPLOY_GUARD_EMULATOR_HOST": host,
        "GOOGLE_CLOUD_PROJECT": "local-project",
        "CLOUDSDK_RUN_REGION": "us-central1",
    }
    print("$ deploy-guard " + " ".join(args[3:]) + " &", flush=True)
    return subprocess.Popen(args, env=env)


def html(name: str) -> tuple[str, ...]:
    """The demo's checks also write the HTML report (and read logs every 2 s)."""
    return ("--log-interval", "2s", "--html", str(REPORTS / f"{name}.html"))


def watch_line(name: str) -> str:
    doc = json.loads((REPORTS / f"{name}.json").read_text())
    line = f"verdict={doc['verdict']} action={doc['action']} exit={doc['exit_code']}"
    for rollback in doc.get("watch", {}).get("rollbacks", []):
        took = rollback.get("first_bad_to_verified_s")
        if took is not None:
            line += f", {took:.2f} s from the first 1011 to traffic verified back"
    return line


def summary_line(name: str) -> str:
    doc = json.loads((REPORTS / f"{name}.json").read_text())
    timeline = {e["event"]: e["t"] for e in doc["timeline"]}
    first = timeline.get("first_failure_seen")
    when = f", first failure seen {first:.1f} s into the check" if first is not None else ""
    return f"verdict={doc['verdict']} action={doc['action']} exit={doc['exit_code']}{when}"


def main() -> int:
    started = time.monotonic()
    REPORTS.mkdir(exist_ok=True)
    say("Starting the local Cloud Run / Logging / Monitoring emulator")
    gcloud = shutil.which("gcloud")
    scratch = Path(tempfile.mkdtemp(prefix="deploy-guard-demo-"))
    env_file = scratch / "emulator.env" if gcloud else None
    emulator, host = start_emulator(env_file)
    print(f"DEPLOY_GUARD_EMULATOR_HOST={host}")
    try:
        deployer: Deployer | GcloudDeployer
        if gcloud is not None and env_file is not None:
            print(f"deploying with gcloud ({gcloud}), pointed at the emulator by {env_file}")
            deployer = GcloudDeployer(gcloud, env_file)
        else:
            print("gcloud is not installed: deploying with the Python Cloud Run client instead")
            deployer = Deployer(host)
        say("Deploying the chat agent, healthy, as revision 1 (100 % of traffic)")
        rev1 = deployer.first()
        print(f"{rev1}: traffic {deployer.split}")

        say("Deploying revision 2: closes every chat session with 1011 after 7 s")
        rev2 = deployer.candidate({"CHAT_FAIL_1011_AFTER": "7"}, tag="candidate")
        print(f"{rev2}: no traffic, tag 'candidate'; /health still answers 200")

        policy = demo_policy()
        say(f"Checking {rev2} with the chat policy (hold shortened to {DEMO_HOLD} for the demo)")
        code = check(host, rev2, policy, "1-broken-revision", *html("1-broken-revision"))
        print(f"exit code {code}: {summary_line('1-broken-revision')}")
        print(f"traffic now: {deployer.traffic()}  (still on {rev1})")

        say("Deploying revision 3: the fix (an orchestrator per request), healthy")
        rev3 = deployer.candidate({"DEMO_REVISION": "3"}, tag="fixed")
        say(f"Checking {rev3} with --promote")
        code = check(host, rev3, policy, "2-fixed-revision", "--promote", *html("2-fixed-revision"))
        print(f"exit code {code}: {summary_line('2-fixed-revision')}")

        say("Watching the service, then deploying revision 4 straight to 100 %, unchecked")
        watcher = watch(host, policy, "3-watch")
        rev4 = deployer.candidate({"CHAT_BAD_AFTER": "4"}, tag="", percent=100)
        print(f"{rev4}: traffic {deployer.split}; every new session dies with 1011 after 4 s")
        code = watcher.wait(timeout=180)
        print(f"exit code {code}: {watch_line('3-watch')}")
        print(f"traffic now: {deployer.traffic()}  (back on {rev3}, the last known good)")
        deployer.close()
    finally:
        say("Stopping the emulator and every revision process")
        stop(emulator)
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"Reports in {REPORTS.relative_to(ROOT)}/  ({time.monotonic() - started:.0f} s in all)")
    for path in sorted(REPORTS.iterdir()):
        print(f"  {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
