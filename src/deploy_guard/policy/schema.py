"""The JSON Schema of policy files, for editors (``deploy-guard policy schema``).

Generated from the pydantic models in validation mode, so it cannot drift
from what the loader accepts; two touch-ups make it describe the *file*
rather than the Python objects: durations' defaults are written as the file
would write them (``5s``, not ``5.0``), and the schema names its dialect.
The loader stays the authority: a few cross-field rules (a rule's block must
match its kind, names are unique) are only checked there.

Use it in VS Code (redhat.vscode-yaml) with a first line in the policy file::

    # yaml-language-server: $schema=./policy.schema.json
"""

from __future__ import annotations

from typing import Any

from deploy_guard.policy.model import Policy
from deploy_guard.policy.units import DURATION_PATTERN, format_duration

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _is_duration(schema: dict[str, Any]) -> bool:
    if schema.get("pattern") == DURATION_PATTERN:
        return True
    return any(
        isinstance(member, dict) and member.get("pattern") == DURATION_PATTERN
        for member in schema.get("anyOf", ())
    )


def _durations_as_written(node: Any) -> None:
    if isinstance(node, dict):
        default = node.get("default")
        numeric = isinstance(default, int | float) and not isinstance(default, bool)
        if isinstance(default, int | float) and numeric and _is_duration(node):
            node["default"] = format_duration(float(default))
        for value in node.values():
            _durations_as_written(value)
    elif isinstance(node, list):
        for item in node:
            _durations_as_written(item)


def policy_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one policy file."""
    schema = Policy.model_json_schema(mode="validation")
    _durations_as_written(schema)
    return {
        "$schema": DIALECT,
        **schema,
        "title": "deploy-guard policy",
        "description": "One deploy-guard policy: the services it covers, its rules and what "
        "to do with the verdict. Durations: 500ms, 7s, 2m. Ratios: 95% or 0.95.",
    }
