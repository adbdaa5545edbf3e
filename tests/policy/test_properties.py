"""Property tests: whatever the input, the loader ends in a Policy or clear problems.

Never another exception, never a problem without a position inside the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from deploy_guard.errors import PolicyError
from deploy_guard.policy import Policy, parse_policy

CHAT = (Path(__file__).resolve().parents[2] / "policies" / "chat-agent.yaml").read_text("utf-8")
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["7s", "95%", "sixty", "http", "websocket", "logs", "metric", "{user}", "/"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=10), inner, max_size=4),
    ),
    max_leaves=20,
)


def _dump(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe").dump(data, out)
    return out.getvalue()


def _check(text: str) -> None:
    lines = max(1, text.count("\n") + 1)
    error: PolicyError | None = None
    try:
        policy = parse_policy(text, "p.yaml")
    except PolicyError as exc:
        error = exc
    if error is None:
        assert isinstance(policy, Policy)
        return
    assert error.problems, "a PolicyError without problems"
    for problem in error.problems:
        assert problem.file == "p.yaml"
        assert 1 <= problem.line <= lines + 1, (problem, lines)
        assert problem.column >= 1
        assert problem.message
        assert str(problem).startswith(f"p.yaml:{problem.line}:{problem.column}: ")


@SETTINGS
@given(st.text(max_size=200))
def test_any_text(text: str) -> None:
    _check(text)


@SETTINGS
@given(values)
def test_any_yaml_document(data: Any) -> None:
    _check(_dump(data))


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            ["version", "name", "services", "rules", "timeout", "on_fail", "auth", "fail_fast"]
        ),
        values,
        max_size=6,
    )
)
def test_documents_with_policy_keys(data: dict[str, Any]) -> None:
    _check(_dump(data))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(doc: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    if not path:
        return value if how == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "replace":
        parent[last] = value
    elif how == "extra" and isinstance(parent[last], dict):
        parent[last]["unexpected_key"] = value
    elif how == "duplicate" and isinstance(parent, list):
        parent.append(parent[last])
    return doc


@SETTINGS
@given(st.data())
def test_mutated_chat_policy(data: st.DataObject) -> None:
    doc = YAML(typ="safe").load(CHAT)
    paths = _paths(doc)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths))
        how = data.draw(st.sampled_from(["delete", "replace", "extra", "duplicate"]))
        doc = _mutate(doc, path, how, data.draw(values))
    _check(_dump(doc))
    assert paths


@SETTINGS
@given(st.data())
def test_mutated_chat_policy_text(data: st.DataObject) -> None:
    text = CHAT
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        cut = data.draw(st.integers(min_value=0, max_value=8))
        insert = data.draw(
            st.sampled_from(["", ":", "-", "[", "{", "'", "\t", "\n", "  ", "&a", "*a", "!!"])
        )
        text = text[:at] + insert + text[at + cut :]
    _check(text)
