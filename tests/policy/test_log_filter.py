"""A ``logs`` rule's filter fragment is parsed at load time, never first at the API."""

from __future__ import annotations

import pytest

from deploy_guard.errors import PolicyError
from deploy_guard.policy import parse_policy

POLICY = """\
version: 1
name: logs-demo
services: [demo]
rules:
  - name: errors
    kind: logs
    logs:
      filter: {fragment}
      patterns: ['orchestrator.*NoneType']
"""


@pytest.mark.parametrize(
    "fragment",
    [
        "'severity>=ERROR'",
        "'severity>=ERROR AND NOT textPayload:\"healthz\"'",
        "'jsonPayload.message=~\"1011\" OR httpRequest.status>=500'",
        "'log_id(\"run.googleapis.com/stderr\")'",
    ],
)
def test_valid_fragments_load(fragment: str) -> None:
    policy = parse_policy(POLICY.format(fragment=fragment), file="p.yaml")
    spec = policy.rules[0].logs
    assert spec is not None
    assert spec.filter is not None


def test_unparseable_fragment_is_a_problem_at_the_filter_key() -> None:
    text = POLICY.format(fragment="'severity>=ERROR AND (textPayload:\"x\"'")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, file="p.yaml")
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.column) == ("p.yaml", 8, 15)
    assert problem.path == "rules[0].logs.filter"
    assert "syntax error at line 1, column 37" in problem.message
    assert "expected ')'" in problem.message


def test_unsupported_operator_is_refused_with_its_position() -> None:
    text = POLICY.format(fragment="'severity>>ERROR'")
    with pytest.raises(PolicyError) as info:
        parse_policy(text, file="p.yaml")
    [problem] = info.value.problems
    assert problem.path == "rules[0].logs.filter"
    assert "column 10" in problem.message
