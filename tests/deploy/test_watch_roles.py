"""``deploy/watch/roles.sh`` grants the watcher the least it needs, and nothing broad.

The script runs with bash against a recording ``gcloud`` stand-in on PATH (the seam is the
process boundary, where the real script calls the real CLI), which answers the two reads it
makes: a service's runtime service account and the project number.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from watch_deploy import REPO, WATCH

FAKE_GCLOUD = """\
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:3] == ["run", "services", "describe"]:
    sys.stdout.write({"chat-agent": "chat-runtime@acme-prod.iam.gserviceaccount.com\\n"}
                     .get(args[3], "") )
elif args[:2] == ["projects", "describe"]:
    sys.stdout.write("123456789\\n")
elif args[:3] == ["iam", "service-accounts", "describe"]:
    sys.exit(1)  # not there yet: the script creates it
"""


def run_roles(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n{FAKE_GCLOUD}")
    gcloud.chmod(0o755)
    log = tmp_path / "gcloud.jsonl"
    result = subprocess.run(
        ["bash", str(WATCH / "roles.sh")],
        env={
            "PATH": os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"]),
            "FAKE_GCLOUD_LOG": str(log),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def grants(calls: list[list[str]]) -> set[tuple[str, str, str]]:
    """(what, resource, role) of every add-iam-policy-binding call."""
    found = set()
    for call in calls:
        if "add-iam-policy-binding" in call:
            at = call.index("add-iam-policy-binding")
            what = " ".join(call[:at])
            found.add((what, call[at + 1], call[call.index("--role") + 1]))
    return found


def test_roles_sh_grants_the_watcher_the_least_it_needs(tmp_path: Path) -> None:
    result, calls = run_roles(
        tmp_path, PROJECT_ID="acme-prod", REGION="europe-west1", SERVICES="chat-agent search-api"
    )
    assert result.returncode == 0, result.stderr
    watcher = "serviceAccount:deploy-guard-watch@acme-prod.iam.gserviceaccount.com"
    assert calls[1][:4] == ["iam", "service-accounts", "create", "deploy-guard-watch"]
    for call in calls:
        if "add-iam-policy-binding" in call:
            assert call[call.index("--member") + 1] == watcher
    assert grants(calls) == {
        ("projects", "acme-prod", "roles/logging.viewer"),
        ("projects", "acme-prod", "roles/monitoring.viewer"),
        ("run services", "chat-agent", "roles/run.developer"),
        ("run services", "search-api", "roles/run.developer"),
        # each service's own runtime identity; none set means the default compute one
        ("iam service-accounts", "chat-runtime@acme-prod.iam.gserviceaccount.com",
         "roles/iam.serviceAccountUser"),
        ("iam service-accounts", "123456789-compute@developer.gserviceaccount.com",
         "roles/iam.serviceAccountUser"),
    }  # fmt: skip


def test_roles_sh_adds_invoker_deployer_and_starter_only_when_asked(tmp_path: Path) -> None:
    result, calls = run_roles(
        tmp_path,
        PROJECT_ID="acme-prod",
        REGION="europe-west1",
        SERVICES="chat-agent",
        PRIVATE="1",
        DEPLOYER="user:you@example.com",
        STARTER="serviceAccount:deploy-guard-build@acme-prod.iam.gserviceaccount.com",
        JOB="deploy-guard-watch-fleet",
    )
    assert result.returncode == 0, result.stderr
    extra = {
        ("run services", "chat-agent", "roles/run.invoker"),
        ("iam service-accounts", "deploy-guard-watch@acme-prod.iam.gserviceaccount.com",
         "roles/iam.serviceAccountUser"),
        ("run jobs", "deploy-guard-watch-fleet", "roles/run.invoker"),
    }  # fmt: skip
    assert extra <= grants(calls)


def test_roles_sh_refuses_to_guess_what_it_was_not_told(tmp_path: Path) -> None:
    result, calls = run_roles(tmp_path, PROJECT_ID="acme-prod", REGION="europe-west1")
    assert result.returncode != 0
    assert "SERVICES" in result.stderr
    assert calls == []


def test_roles_sh_grants_no_broad_role() -> None:
    # the script and the guard grants it sources (deploy/guard-roles.sh)
    text = (WATCH / "roles.sh").read_text(encoding="utf-8") + (
        WATCH.parent / "guard-roles.sh"
    ).read_text(encoding="utf-8")
    roles = set(re.findall(r"--role\s+(\S+)", text))
    assert roles
    assert not roles & {"roles/owner", "roles/editor", "roles/run.admin", "roles/viewer"}
    permissions = (REPO / "docs" / "permissions.md").read_text(encoding="utf-8")
    for role in roles:  # every grant is explained in the permissions guide
        assert role in permissions, role
    for script in (WATCH / "roles.sh", WATCH.parent / "guard-roles.sh"):
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
