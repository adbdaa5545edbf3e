"""The exported JSON Schema is a valid draft 2020-12 schema that agrees with the loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from deploy_guard.errors import PolicyError
from deploy_guard.policy import parse_policy
from deploy_guard.policy.schema import policy_schema

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _yaml(text: str) -> Any:
    return YAML(typ="safe").load(text)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = policy_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_schema_accepts_the_shipped_policies(
    validator: jsonschema.Draft202012Validator, path: Path
) -> None:
    errors = [e.message for e in validator.iter_errors(_yaml(path.read_text("utf-8")))]
    assert errors == []


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nname: x\nservices: [s]\nrules: [{name: a, kind: grpc}]\n",
        "version: 1\nname: x\nservices: [s]\ncolour: red\nrules: [{name: a, kind: http}]\n",
        "version: 1\nname: x\nservices: [s]\nrules: [{name: a, kind: http, http: {timeout: 5}}]\n",
        "version: 1\nname: x\nservices: [s]\nrules:\n  - name: a\n    kind: websocket\n"
        "    websocket: {scenario: [{send: {txt: hi}}]}\n",
        "version: 1\nname: x\nservices: [s]\nrules: [{name: a, kind: http, http: "
        "{success_ratio: 95}}]\n",
    ],
)
def test_schema_and_loader_both_refuse(
    validator: jsonschema.Draft202012Validator, text: str
) -> None:
    assert list(validator.iter_errors(_yaml(text)))
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_durations_defaults_are_written_as_in_files() -> None:
    defs = policy_schema()["$defs"]
    assert defs["HttpSpec"]["properties"]["timeout"]["default"] == "5s"
    assert defs["WebSocketSpec"]["properties"]["ping_interval"]["default"] == "20s"
    assert policy_schema()["properties"]["timeout"]["default"] == "10m"


def test_send_steps_are_described_in_their_file_form() -> None:
    send = policy_schema()["$defs"]["SendStep"]
    assert send["required"] == ["send"]
    assert set(send["properties"]["send"]["properties"]) == {"text", "json"}


ROLLOUT = (
    "version: 1\nname: x\nservices: [s]\nrollout: %s\nrules: [{name: a, kind: logs, logs: {}}]\n"
)


def test_schema_and_loader_both_accept_a_rollout(
    validator: jsonschema.Draft202012Validator,
) -> None:
    text = ROLLOUT % "{steps: [{percent: 10, duration: 5m}, {percent: 50, duration: 10m}]}"
    assert list(validator.iter_errors(_yaml(text))) == []
    assert parse_policy(text).rollout is not None
    assert policy_schema()["$defs"]["RolloutSpec"]["properties"]["metric_lag"]["default"] == "3m"


@pytest.mark.parametrize(
    "rollout",
    [
        "{steps: [{percent: 100, duration: 5m}]}",
        "{steps: [{percent: 0, duration: 5m}]}",
        "{steps: [{percent: 10}]}",
        "{steps: [{percent: 10, duration: 300}]}",
        "{steps: []}",
        "{steps: [" + ", ".join(f"{{percent: {n}, duration: 1m}}" for n in range(1, 22)) + "]}",
        "{steps: [{percent: 10, duration: 5m}], lag: 3m}",
    ],
)
def test_schema_and_loader_both_refuse_a_rollout(
    validator: jsonschema.Draft202012Validator, rollout: str
) -> None:
    assert list(validator.iter_errors(_yaml(ROLLOUT % rollout)))
    with pytest.raises(PolicyError):
        parse_policy(ROLLOUT % rollout)


WATCH = "version: 1\nname: x\nservices: [s]\nwatch: %s\nrules:\n" + (
    "  - {name: chat, kind: websocket, websocket: {scenario: [{expect: [a], timeout: 2s}]}}\n"
)


@pytest.mark.parametrize(
    "watch",
    [
        "{window: 5m, probe_interval: 5m, sessions: 5, canary: {rule: chat, renew: 30s}, "
        "metric_interval: 1m, heartbeat: 1m}",
        "{probe_interval: off, canary: off}",
        "{probe_interval: false, canary: false}",
        "{probe_interval: 0, canary: true}",
        "{canary: {}}",
        "{}",
    ],
)
def test_schema_and_loader_both_accept_a_watch(
    validator: jsonschema.Draft202012Validator, watch: str
) -> None:
    assert list(validator.iter_errors(_yaml(WATCH % watch))) == []
    assert parse_policy(WATCH % watch).watch is not None
    watch_defs = policy_schema()["$defs"]["WatchSpec"]["properties"]
    assert watch_defs["probe_interval"]["default"] == "5m"
    assert watch_defs["window"]["default"] == "5m"


@pytest.mark.parametrize(
    "watch",
    [
        "{window: 300}",
        "{probe_interval: 5}",
        "{probe_interval: never}",
        "{sessions: 0}",
        "{canary: null}",
        "{canary: {rule: chat, every: 30s}}",
        "{canary: {renew: 30}}",
        "{heartbeat: soon}",
        "{colour: red}",
    ],
)
def test_schema_and_loader_both_refuse_a_watch(
    validator: jsonschema.Draft202012Validator, watch: str
) -> None:
    assert list(validator.iter_errors(_yaml(WATCH % watch)))
    with pytest.raises(PolicyError):
        parse_policy(WATCH % watch)
