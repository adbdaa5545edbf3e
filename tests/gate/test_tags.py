"""Temporary-tag records from plain data: who holds a dg- tag, until when, and what is stale."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from deploy_guard.gcp.tags import (
    MAX_RECORDS,
    TAGS_ANNOTATION,
    records,
    stale,
    temporary_tags,
    with_holder,
    without_holders,
    without_tags,
)
from deploy_guard.gcp.traffic import Allocation, ServiceState

NOW = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)


def service(*tags: str, annotations: dict[str, str] | None = None) -> ServiceState:
    spec = (
        Allocation(revision="chat-00001-aaa", percent=100),
        *(Allocation(revision="chat-00002-bbb", percent=0, tag=t) for t in tags),
    )
    statuses = tuple(
        Allocation(a.revision, a.percent, a.tag, f"https://{a.tag}---chat" if a.tag else "")
        for a in spec
    )
    return ServiceState(
        name="projects/p/locations/r/services/chat",
        short="chat",
        generation=3,
        latest_created_revision="chat-00002-bbb",
        latest_ready_revision="chat-00002-bbb",
        traffic=spec,
        traffic_statuses=statuses,
        annotations=annotations or {},
    )


def test_a_holder_is_in_use_until_its_time_then_stale() -> None:
    until = NOW + timedelta(minutes=10)
    record = with_holder(service("dg-aaaa0000"), "dg-aaaa0000", until=until, by="host/42")
    state = service("dg-aaaa0000", annotations={TAGS_ANNOTATION: record})
    (tag,) = temporary_tags(state, NOW)
    assert (tag.in_use, tag.by, tag.until, tag.revision) == (
        True,
        "host/42",
        until,
        "chat-00002-bbb",
    )
    assert (
        tag.describe()
        == "dg-aaaa0000 (chat-00002-bbb): in use by host/42 until 2026-12-04T21:10:00Z"
    )
    assert stale(state, NOW) == []
    (late,) = stale(state, until + timedelta(seconds=1))
    assert (
        "stale, its check by host/42 should have ended by 2026-12-04T21:10:00Z" in late.describe()
    )


def test_records_of_tags_no_longer_on_the_service_are_pruned_and_removed_with_their_tag() -> None:
    old = json.dumps({"dg-gone0000": {"until": "2026-12-04T20:00:00Z", "by": "x"}})
    state = service("dg-new00000", annotations={TAGS_ANNOTATION: old})
    value = with_holder(state, "dg-new00000", until=NOW, by="me")
    assert set(json.loads(value)) == {"dg-new00000"}
    assert json.loads(without_holders({TAGS_ANNOTATION: value}, ["dg-new00000"])) == {}


@pytest.mark.fault(
    "traffic",
    "hostile deploy-guard.dev/tags annotation (not JSON, wrong shapes, huge)",
    "no record trusted: the tags read as stale",
)
@pytest.mark.parametrize(
    "value",
    [
        "",
        "[1, 2]",
        "{",
        '{"dg-aaaa0000": {"until": 5}}',
        '{"dg-aaaa0000": {"until": "next tuesday"}}',
        '{"candidate": {"until": "2099-01-01T00:00:00Z"}}',
        json.dumps({f"dg-{i:08x}": {"until": "2099-01-01T00:00:00Z"} for i in range(5000)}),
    ],
)
def test_an_unreadable_record_never_makes_a_tag_in_use(value: str) -> None:
    state = service("dg-aaaa0000", "candidate", annotations={TAGS_ANNOTATION: value})
    assert len(records(state.annotations)) <= MAX_RECORDS
    assert [t.tag for t in stale(state, NOW)] == ["dg-aaaa0000"]  # never the deploy's own tag


def test_removing_tags_keeps_every_share() -> None:
    state = service("dg-aaaa0000", "candidate")
    spec = without_tags(state, ["dg-aaaa0000"])
    assert spec is not None
    assert [(a.revision, a.percent, a.tag) for a in spec] == [
        ("chat-00001-aaa", 100, ""),
        ("chat-00002-bbb", 0, "candidate"),
    ]
    assert without_tags(state, ["dg-absent00"]) is None
