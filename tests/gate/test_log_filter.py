"""The one Cloud Logging filter per pass: every pattern in it, bounded and scoped."""

from __future__ import annotations

from datetime import UTC, datetime

from deploy_guard.gcp.logs import build_filter, fragment_allows, quote, rule_clause


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


def test_severity_fragments_are_checked_client_side() -> None:
    assert fragment_allows("severity>=ERROR", "CRITICAL")
    assert not fragment_allows("severity>=ERROR", "INFO")
    assert fragment_allows('severity="WARNING"', "WARNING")
    assert fragment_allows('jsonPayload.x="y"', "INFO")  # trusted to the server


def test_severity_names_from_enum_or_int() -> None:
    from deploy_guard.gcp.logs import severity_name

    assert severity_name(500) == "ERROR"
    assert severity_name(0) == "DEFAULT"
    assert severity_name(800) == "EMERGENCY"
