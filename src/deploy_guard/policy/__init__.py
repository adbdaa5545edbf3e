"""The policy language: model, loading with positions, validation, schema.

Importing this package costs pydantic and ruamel.yaml, never the Google
client libraries: ``deploy-guard policy validate`` stays fast.
"""

from deploy_guard.errors import PolicyError
from deploy_guard.policy.load import load_file, load_paths, parse_policy, policy_files
from deploy_guard.policy.model import (
    AuthSpec,
    BaselineRelative,
    CanarySpec,
    CloseCodes,
    ExpectStep,
    HttpExpect,
    HttpSpec,
    Isolation,
    LogsSpec,
    MetricSpec,
    Policy,
    RolloutSpec,
    RolloutStep,
    Rule,
    ScenarioStep,
    SendStep,
    WatchSpec,
    WebSocketSpec,
)
from deploy_guard.policy.problems import Problem

__all__ = [
    "AuthSpec",
    "BaselineRelative",
    "CanarySpec",
    "CloseCodes",
    "ExpectStep",
    "HttpExpect",
    "HttpSpec",
    "Isolation",
    "LogsSpec",
    "MetricSpec",
    "Policy",
    "PolicyError",
    "Problem",
    "RolloutSpec",
    "RolloutStep",
    "Rule",
    "ScenarioStep",
    "SendStep",
    "WatchSpec",
    "WebSocketSpec",
    "load_file",
    "load_paths",
    "parse_policy",
    "policy_files",
]
