"""The one Cloud Logging filter per pass: every pattern in it, bounded and scoped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from deploy_guard.emulator.contracts import RevisionRef
from deploy_guard.gcp.errors import ApiCalls
from deploy_guard.gcp.logs import CloudLogging, build_filter, quote, rule_clause
from deploy_guard.judge import Judge
from deploy_guard.policy.model import Policy, Rule


def logs_rule(name: str, patterns: list[str], fragment: str | None = None) -> Rule:
    return Rule.model_validate(
        {"name": name, "kind": "logs", "logs": {"filter": fragment, "patterns": patterns}}
    )


def test_filter_scopes_bounds_and_ors_every_rule() -> None:
    flt = build_filter(
        service="chat",
        revisions=["chat-00002-abc"],
        since=datetime(2026, 11, 25, 18, 0, tzinfo=UTC),
        clauses=[
            rule_clause("severity>=ERROR", ["close code 1011", "orchestrator.*NoneType"]),
            rule_clause(None, ["Traceback"]),
        ],
    )
    assert flt.startswith('resource.type="cloud_run_revision" AND ')
    assert 'resource.labels.service_name="chat"' in flt
    assert 'resource.labels.revision_name="chat-00002-abc"' in flt
    assert 'timestamp>="2026-11-25T18:00:00.000000Z"' in flt
    assert 'textPayload=~"close code 1011" OR jsonPayload.message=~"close code 1011"' in flt
    assert '((severity>=ERROR) AND (textPayload=~"close code 1011"' in flt
    assert flt.count("Traceback") == 2


def test_quote_escapes() -> None:
    assert quote('a "b" \\d') == '"a \\"b\\" \\\\d"'


def test_baseline_revisions_join_the_scope() -> None:
    flt = build_filter(
        service="s", revisions=["r2", "r1"], since=datetime.now(UTC), clauses=["(x)"]
    )
    assert '(resource.labels.revision_name="r2" OR resource.labels.revision_name="r1")' in flt


def test_a_rule_without_clause_widens_the_query() -> None:
    flt = build_filter(service="s", revisions=["r"], since=datetime.now(UTC), clauses=["(x)", ""])
    assert "(x)" not in flt


async def test_rules_with_different_fragments_count_only_their_own_entries(
    emulator: Any, gcp_clients: Any
) -> None:
    """One query brings in both rules' entries; each rule counts only what its fragment selects."""
    ref = RevisionRef(emulator.project, emulator.region, "chat", "chat-00002-abc", "chat")
    now = datetime.now(UTC)
    lines = [
        {"severity": "ERROR", "message": "boom in api", "component": "api"},
        {"severity": "INFO", "message": "boom in db", "component": "db"},
        {"severity": "INFO", "message": "all fine", "component": "db"},
    ]
    for line in lines:
        emulator.logs.revision_output(ref, "stdout", json.dumps(line), now)
    calls = ApiCalls()
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision="chat-00002-abc",
        rules=[
            logs_rule("errors", ["boom"], "severity>=ERROR"),
            logs_rule("db", ["boom"], 'jsonPayload.component="db"'),
        ],
        since=now - timedelta(minutes=1),
        calls=calls,
    )
    got = {m.rule: m for m in await source.measure(complete=True)}
    assert calls.get("logging", "ListLogEntries") == 1
    assert got["errors"].matches == {"boom": 1}
    assert got["errors"].samples[0]["text"] == "boom in api"
    assert got["db"].matches == {"boom": 1}
    assert got["db"].samples[0]["text"] == "boom in db"


async def test_a_rule_without_patterns_is_judged_on_its_own_entries_only(
    emulator: Any, gcp_clients: Any
) -> None:
    """No CRITICAL line: the INFO lines another rule's filter brought in must not fail it."""
    ref = RevisionRef(emulator.project, emulator.region, "chat", "chat-00002-abc", "chat")
    now = datetime.now(UTC)
    for n in range(3):
        line = {"severity": "INFO", "message": f"slow request {n}"}
        emulator.logs.revision_output(ref, "stdout", json.dumps(line), now)
    rules = [
        logs_rule("no-critical", [], "severity>=CRITICAL"),
        logs_rule("slow", ["slow request"], "severity>=INFO"),
    ]
    policy = Policy.model_validate(
        {"version": 1, "name": "p", "services": ["chat"], "rules": [r.model_dump() for r in rules]}
    )
    source = CloudLogging(
        gcp_clients,
        project=emulator.project,
        service="chat",
        revision="chat-00002-abc",
        rules=policy.rules,
        since=now - timedelta(minutes=1),
    )
    judge = Judge(policy)
    results = {m.rule: judge.observe(m) for m in await source.measure(complete=True)}
    assert results["slow"].observed == 3
    assert results["no-critical"].status == "pass", results["no-critical"]
    assert results["no-critical"].observed == 0


def test_severity_names_from_enum_or_int() -> None:
    from deploy_guard.gcp.logs import severity_name

    assert severity_name(500) == "ERROR"
    assert severity_name(0) == "DEFAULT"
    assert severity_name(800) == "EMERGENCY"
