"""The Logging filter subset: parsing, evaluation, error positions, and fuzzing."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy_guard.logfilter import FilterError, parse

ENTRY: dict[str, Any] = {
    "logName": "projects/proj/logs/run.googleapis.com%2Fstderr",
    "resource": {
        "type": "cloud_run_revision",
        "labels": {"revision_name": "chat-00002-bbb", "service_name": "chat"},
    },
    "severity": "ERROR",
    "timestamp": "2026-11-25T12:00:00.250000Z",
    "insertId": "abc123",
    "labels": {"k8s-pod/app": "chat", "run": "r1"},
    "jsonPayload": {
        "message": "WebSocket closed with 1011: orchestrator is None",
        "ctx": {"user": {"id": "u-17"}, "tries": 3},
        "tags": ["agent", "orchestrator"],
    },
    "httpRequest": {"status": 503, "latency": "7.012s", "requestSize": "120"},
}


def matches(text: str, entry: dict[str, Any] | None = None) -> bool:
    return parse(text).matches(ENTRY if entry is None else entry)


@pytest.mark.parametrize(
    "text",
    [
        "",
        'resource.type="cloud_run_revision"',
        "resource.type = cloud_run_revision",
        'resource.labels.revision_name="CHAT-00002-BBB"',  # string equality ignores case
        "severity>=ERROR",
        "severity>=warning",
        "severity=ERROR",
        "severity>400",
        "severity=(INFO OR ERROR)",
        "severity<=CRITICAL",
        'jsonPayload.message:"orchestrator IS none"',
        'jsonPayload.message=~"closed with \\d{4}"',
        'jsonPayload.message!~"^ok"',
        'jsonPayload.ctx.user.id="u-17"',
        "jsonPayload.ctx.tries>=3",
        "jsonPayload.tags=orchestrator",
        "jsonPayload.ctx:*",
        'labels."k8s-pod/app"=chat',
        "labels.run=r1",
        "httpRequest.status>=500",
        "httpRequest.status=503",
        "httpRequest.latency>5",
        "httpRequest.requestSize<1000",
        'timestamp>="2026-11-25T11:59:00Z"',
        'timestamp<"2026-11-25T13:00:00+00:30" timestamp>"2026-11-25T12:00:00.1Z"',
        'log_id("run.googleapis.com/stderr")',
        'logName:"stderr"',
        "insertId=abc123",
        "orchestrator",
        '"closed with 1011"',
        'SEARCH("1011")',
        'SEARCH(jsonPayload.message, "websocket")',
        "NOT severity=INFO",
        "-severity=INFO",
        "-(severity=INFO OR severity=DEBUG)",
        "severity=INFO OR httpRequest.status=503",
        "textPayload:x OR severity=ERROR httpRequest.status=503",
        "severity>=ERROR AND -textPayload:*",
        "jsonPayload.missing!=1",
        "NOT jsonPayload.missing=1",
        "severity=ERROR -- a comment\nAND httpRequest.status=503",
    ],
)
def test_matching_filters(text: str) -> None:
    assert matches(text), text


@pytest.mark.parametrize(
    "text",
    [
        "severity<ERROR",
        "severity=DEFAULT",
        'resource.labels.revision_name="chat-00001-aaa"',
        "textPayload:*",
        "jsonPayload.missing=1",
        "jsonPayload.missing:*",
        'jsonPayload.message=~"^orchestrator"',
        'jsonPayload.message=~"WEBSOCKET"',  # regexes are case-sensitive
        "httpRequest.status<500",
        'timestamp<"2026-11-25T12:00:00Z"',
        'log_id("run.googleapis.com/stdout")',
        "NOT orchestrator",
        "severity=ERROR AND httpRequest.status=200",
        "severity=(INFO OR DEBUG)",
        "chat OR zq zr",  # (chat OR zq) AND zr: AND binds loosest
        "zzz-not-present",
    ],
)
def test_non_matching_filters(text: str) -> None:
    assert not matches(text), text


def test_or_binds_tighter_than_and_as_in_the_real_language() -> None:
    # "a OR NOT b AND NOT c OR d" means (a OR (NOT b)) AND ((NOT c) OR d)
    entry = {"textPayload": "a c"}
    assert not parse('"a" OR NOT "b" AND NOT "c" OR "d"').matches(entry)
    assert parse('"a" OR NOT "b" AND NOT "c" OR "c"').matches(entry)


def test_severity_absent_means_default() -> None:
    entry = {"textPayload": "x", "severity": "DEFAULT"}
    assert parse("severity<INFO").matches(entry)
    assert parse("severity=DEFAULT").matches(entry)


def test_time_bounds_come_from_top_level_terms_only() -> None:
    flt = parse(
        'timestamp>="2026-11-25T12:00:00Z" timestamp<"2026-11-25T13:00:00Z" severity>=ERROR'
    )
    lower, lower_inc, upper, upper_inc = flt.time_bounds
    assert lower is not None
    assert upper is not None
    assert (lower.hour, lower_inc, upper.hour, upper_inc) == (12, True, 13, False)
    nested = parse('(timestamp>="2026-11-25T12:00:00Z" OR severity=ERROR)')
    assert nested.time_bounds[0] is None


@pytest.mark.parametrize(
    ("text", "line", "column", "token"),
    [
        ("severity>=", 1, 11, "<end of filter>"),
        ('severity>=ERROR AND (textPayload:"x"', 1, 37, "<end of filter>"),
        ("severity>=ERROR)", 1, 16, ")"),
        ("a AND AND b", 1, 7, "AND"),
        ('textPayload:"unterminated', 1, 13, '"'),
        ("severity>=ERROR\nAND = x", 2, 5, "="),
        ('jsonPayload.message=~"("', 1, 22, "("),
        ("severity ! ERROR", 1, 10, "!"),
        ("nosuchfn(1)", 1, 1, "nosuchfn"),
        ("a..b=1", 1, 1, "a..b"),
    ],
)
def test_errors_name_line_column_and_token(text: str, line: int, column: int, token: str) -> None:
    with pytest.raises(FilterError) as info:
        parse(text)
    err = info.value
    assert (err.line, err.column) == (line, column)
    assert err.status == "INVALID_ARGUMENT"
    assert str(err).startswith(
        f"Unparseable filter: syntax error at line {line}, column {column}, token '{token}'"
    )


def test_overlong_filters_are_refused() -> None:
    with pytest.raises(FilterError, match="longer than"):
        parse("a " * 10_001)


_ALPHABET = st.sampled_from(
    [*'()"\\=!<>:~-., \n\t*', "AND", "OR", "NOT", "severity", "x", "1", "log_id", "SEARCH"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=25).map("".join))
def test_fuzz_parse_succeeds_or_raises_filter_error(text: str) -> None:
    try:
        flt = parse(text)
    except FilterError:
        return
    flt.matches(ENTRY)  # a parsed filter evaluates without raising
    flt.matches({})


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_fuzz_arbitrary_text(text: str) -> None:
    with contextlib.suppress(FilterError):
        parse(text).matches(ENTRY)


def test_a_filter_names_the_fields_it_compares() -> None:
    flt = parse(
        'severity>=ERROR AND (resource.labels.revision_name="x" OR NOT '
        'timestamp<"2020-01-01T00:00:00Z") jsonPayload."a-b".c:x "free text"'
    )
    assert flt.fields == {
        "severity",
        "resource.labels.revision_name",
        "timestamp",
        "jsonPayload.a-b.c",
    }
    assert parse("").fields == frozenset()
