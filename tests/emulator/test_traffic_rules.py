"""The emulator's traffic, name and paging rules, without any server."""

from __future__ import annotations

import re

import pytest
from google.cloud import run_v2
from hypothesis import given
from hypothesis import strategies as st

from deploy_guard.emulator import traffic
from deploy_guard.emulator.names import Location, new_revision_id
from deploy_guard.emulator.paging import page
from deploy_guard.errors import EmulatorError

LATEST = traffic.LATEST
REVISION = traffic.REVISION


def target(revision: str = "", percent: int = 0, tag: str = "") -> run_v2.TrafficTarget:
    kind = REVISION if revision else LATEST
    return run_v2.TrafficTarget(type_=kind, revision=revision, percent=percent, tag=tag)


def test_empty_traffic_serves_latest() -> None:
    traffic.validate([], set())
    (status,) = traffic.statuses([])
    assert (status.type_, status.percent) == (LATEST, 100)
    assert traffic.serving_split([status], "a-00002-x") == {"a-00002-x": 100}


def test_split_merges_latest_with_the_revision_it_means() -> None:
    served = traffic.statuses([target("a-00001-x", 40), target(percent=60, tag="new")])
    assert traffic.serving_split(served, "a-00001-x") == {"a-00001-x": 100}
    assert traffic.tag_targets(served, "a-00002-y") == {"new": "a-00002-y"}


@given(st.lists(st.integers(0, 100), min_size=1, max_size=5))
def test_percentages_must_sum_to_exactly_100(percents: list[int]) -> None:
    names = {f"a-0000{i}-x" for i in range(len(percents))}
    targets = [target(f"a-0000{i}-x", p) for i, p in enumerate(percents)]
    if sum(percents) == 100:
        traffic.validate(targets, names)
    else:
        with pytest.raises(EmulatorError, match="sum to 100") as info:
            traffic.validate(targets, names)
        assert info.value.status == "INVALID_ARGUMENT"


def test_tags_must_be_valid_and_unique() -> None:
    with pytest.raises(EmulatorError, match="invalid"):
        traffic.validate([target(percent=100, tag="Bad_Tag")], set())
    with pytest.raises(EmulatorError, match="more than once"):
        traffic.validate([target(percent=100, tag="x"), target(percent=0, tag="x")], set())


@pytest.mark.parametrize("service_len", [1, 20, 42, 45, 49])
def test_tag_and_service_name_together_are_at_most_46_characters(service_len: int) -> None:
    service = "s" * service_len
    room = 46 - service_len
    if room >= 1:
        traffic.validate([target(percent=100, tag="t" * room)], set(), service_id=service)
    with pytest.raises(EmulatorError) as refused:
        traffic.validate(
            [target(percent=100, tag="t" * max(room + 1, 1))], set(), service_id=service
        )
    assert refused.value.status == "INVALID_ARGUMENT"
    assert refused.value.message.endswith(
        "together are too long. Combined traffic tag and service name cannot exceed 46 characters."
    )


def test_revision_ids_look_like_cloud_runs() -> None:
    assert re.fullmatch(r"chat-00042-[a-z0-9]{3}", new_revision_id("chat", 42))


def test_names_outside_the_served_location_are_not_found() -> None:
    here = Location("p", "r")
    assert here.parse_service("projects/p/locations/r/services/s") == "s"
    assert here.parse_revision("projects/p/locations/r/services/s/revisions/s-1") == ("s", "s-1")
    with pytest.raises(EmulatorError) as info:
        here.parse_service("projects/q/locations/r/services/s")
    assert info.value.status == "NOT_FOUND"
    with pytest.raises(EmulatorError) as info:
        here.parse_service("projects/p/services/s")
    assert info.value.status == "INVALID_ARGUMENT"


@given(st.integers(0, 60), st.integers(1, 25))
def test_pages_cover_every_item_once_in_order(count: int, size: int) -> None:
    items = list(range(count))
    seen: list[int] = []
    token = ""
    while True:
        chunk, token = page(items, size, token)
        assert len(chunk) <= size
        seen += chunk
        if not token:
            break
    assert seen == items
