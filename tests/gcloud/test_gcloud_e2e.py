"""The issue's story with the real gcloud: deploy, a tagged candidate, the guard, the rollback.

gcloud deploys and moves traffic through the emulator's v1 front; the guard
checks and rolls back over v2 gRPC; each side sees the other's writes, because
both are one state. One test, one emulator: gcloud takes a second or two per
command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.emulator.server import EmulatorThread
from deploy_guard.exitcodes import ExitCode
from deploy_guard.gcp.clients import Clients
from gcloud_runner import Gcloud

APP = "examples/chat_agent/app.py"  # relative: the emulator runs revisions from the root
#: One check rule: chat sessions held 3 s; the candidate closes them with 1011 after 1 s.
POLICY = """\
version: 1
name: chat-agent
services: ["chat-agent"]
on_fail: rollback
on_inconclusive: hold
fail_fast: true
timeout: 1m
rules:
  - name: chat-hold
    kind: websocket
    websocket:
      path: /ws/chat
      scenario:
        - send: {json: {type: message, user_id: "{user}", session_id: "{session}", text: "hi"}}
        - expect: [agent_started, agent_completed]
          timeout: 10s
      hold: 3s
      sessions: 2
      concurrency: 2
      success_ratio: 100%
"""


def split(svc: dict[str, Any]) -> dict[str, int]:
    """Percent of the service URL's traffic per revision, from ``status.traffic``."""
    out: dict[str, int] = {}
    for target in svc["status"]["traffic"]:
        if target.get("percent"):
            name = target["revisionName"]
            out[name] = out.get(name, 0) + target["percent"]
    return out


def tags(svc: dict[str, Any]) -> dict[str, str]:
    return {t["tag"]: t["revisionName"] for t in svc["status"]["traffic"] if t.get("tag")}


def test_gcloud_deploys_a_candidate_the_guard_rolls_back_and_gcloud_sees_it(
    gcloud: Gcloud,
    emulator: EmulatorThread,
    gcp_clients: Clients,
    gcloud_home: Path,
    tmp_path: Path,
) -> None:
    python = sys.executable
    describe = ("run", "services", "describe", "chat-agent")
    deploy = ("run", "deploy", "chat-agent", "--command", python, "--args", APP)
    gcloud(*deploy, "--image", "local/chat-agent:1")
    svc = gcloud.json(*describe)
    base = svc["status"]["latestReadyRevisionName"]
    assert svc["status"]["traffic"] == [
        {"latestRevision": True, "percent": 100, "revisionName": base}
    ]
    assert svc["status"]["observedGeneration"] == svc["metadata"]["generation"] == 1

    # the candidate: no traffic, a tag, and a setting that closes chats with 1011 after 1 s
    gcloud(
        *deploy,
        "--image",
        "local/chat-agent:2",
        "--update-env-vars",
        "CHAT_FAIL_1011_AFTER=1",
        "--no-traffic",
        "--tag",
        "candidate",
    )
    svc = gcloud.json(*describe)
    cand = svc["status"]["latestCreatedRevisionName"]
    assert cand != base
    assert svc["spec"]["template"]["metadata"]["name"] == cand  # gcloud names it for the tag
    assert svc["status"]["latestReadyRevisionName"] == cand
    assert [c["type"] for c in svc["status"]["conditions"]] == [
        "Ready",
        "ConfigurationsReady",
        "RoutesReady",
    ]
    assert all(c["status"] == "True" for c in svc["status"]["conditions"])
    assert split(svc) == {base: 100}
    assert tags(svc) == {"candidate": cand}
    tag_url = next(t["url"] for t in svc["status"]["traffic"] if t.get("tag"))
    container = svc["spec"]["template"]["spec"]["containers"][0]
    assert (container["command"], container["args"]) == ([python], [APP])
    assert {"name": "CHAT_FAIL_1011_AFTER", "value": "1"} in container["env"]
    # CMD ARGS runs as the revision, behind its tag URL; the guard reads it over v2
    assert httpx.get(tag_url + "/health", timeout=10).json()["revision"] == cand
    revision = gcp_clients.revisions().get_revision(
        name=f"{emulator.parent}/services/chat-agent/revisions/{cand}"
    )
    assert list(revision.containers[0].command) == [python]
    assert list(revision.containers[0].args) == [APP]

    gcloud(
        "run", "services", "update-traffic", "chat-agent", "--to-revisions", f"{base}=90,{cand}=10"
    )
    assert split(gcloud.json(*describe)) == {base: 90, cand: 10}

    policy = tmp_path / "chat.yaml"
    policy.write_text(POLICY)
    env = {
        "DEPLOY_GUARD_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "CLOUDSDK_RUN_REGION": emulator.region,
    }
    result = CliRunner().invoke(
        cli, ["check", "--revision", cand, "--policy", str(policy)], env=env
    )
    assert result.exit_code == ExitCode.FAIL, result.output
    assert "1011" in result.output
    # the guard's rollback, written over v2, is what gcloud now describes
    svc = gcloud.json(*describe)
    assert split(svc) == {base: 100}
    assert tags(svc) == {"candidate": cand}
    assert svc["status"]["observedGeneration"] == svc["metadata"]["generation"]

    gcloud("run", "services", "update-traffic", "chat-agent", "--to-tags", "candidate=10")
    served = gcp_clients.services().get_service(name=f"{emulator.parent}/services/chat-agent")
    assert {t.revision: t.percent for t in served.traffic_statuses if t.percent} == {
        base: 90,
        cand: 10,
    }
    gcloud("run", "services", "update-traffic", "chat-agent", "--to-latest")
    svc = gcloud.json(*describe)
    assert split(svc) == {cand: 100}
    assert {"latestRevision": True, "percent": 100} in svc["spec"]["traffic"]
    # traffic moves made no revision: gcloud sent the template back unchanged
    revisions = gcloud.json("run", "revisions", "list", "--service", "chat-agent")
    assert sorted(r["metadata"]["name"] for r in revisions) == sorted([base, cand])

    entries = gcloud.json(
        "logging", "read", f'resource.labels.revision_name="{cand}" AND severity>=ERROR'
    )
    messages = [e.get("jsonPayload", {}).get("message", "") for e in entries]
    assert any("close code 1011" in m for m in messages), messages
    assert all(e["resource"]["labels"]["revision_name"] == cand for e in entries)
    # gcloud ran with HOME pointing here: the user's configuration was never created
    assert not (gcloud_home / ".config").exists()
