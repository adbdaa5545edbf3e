"""Traffic plans from plain snapshots: what a rollback restores, when the guard refuses."""

from __future__ import annotations

import pytest

from deploy_guard.errors import ActionError
from deploy_guard.gcp.traffic import (
    Allocation,
    RevisionState,
    ServiceState,
    failed_reconcile,
    newest_ready_before,
    pin_plan,
    renormalise,
    rollback_plan,
    same_spec,
    served_spec,
    served_split,
    settled,
    shows,
    spec_text,
    superseded_reason,
    without_tag,
)


def state(
    traffic: tuple[Allocation, ...],
    statuses: tuple[Allocation, ...] | None = None,
    *,
    generation: int = 3,
    latest: str = "chat-00002-bbb",
    ready: str = "chat-00002-bbb",
) -> ServiceState:
    return ServiceState(
        name="projects/p/locations/r/services/chat",
        short="chat",
        generation=generation,
        latest_created_revision=latest,
        latest_ready_revision=ready,
        traffic=traffic,
        traffic_statuses=statuses if statuses is not None else traffic,
    )


A = Allocation


def test_rollback_restores_the_recorded_split_minus_the_candidate_renormalised() -> None:
    before = state((A("chat-1", 60), A("chat-2", 30), A("cand", 10, tag="candidate")))
    plan = rollback_plan(before, "cand")
    assert plan is not None
    assert served_split(state(plan)) == {"chat-1": 67, "chat-2": 33}
    # the pipeline's own tag on the candidate stays, at 0 %
    assert A("cand", 0, tag="candidate") in plan


def test_rollback_is_nothing_to_do_when_the_candidate_held_no_traffic() -> None:
    before = state((A("chat-1", 100), A("cand", 0, tag="candidate")))
    assert rollback_plan(before, "cand") is None


def test_rollback_refuses_without_a_baseline() -> None:
    before = state((A(None, 100),), ready="cand")
    with pytest.raises(ActionError, match="no baseline"):
        rollback_plan(before, "cand")


def test_latest_is_pinned_by_name_when_restoring() -> None:
    before = state((A(None, 50), A("cand", 50)), ready="chat-1")
    plan = rollback_plan(before, "cand")
    assert plan == (A("chat-1", 100),)


def test_rollback_drops_the_temporary_tag() -> None:
    before = state((A("chat-1", 90), A("cand", 10), A("cand", 0, tag="dg-1234")))
    plan = rollback_plan(before, "cand", drop_tags=["dg-1234"])
    assert plan == (A("chat-1", 100),)


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        ({"a": 1, "b": 1, "c": 1}, {"a": 34, "b": 33, "c": 33}),
        ({"a": 90}, {"a": 100}),
        ({"a": 0}, {}),
    ],
)
def test_renormalise_sums_to_100(shares: dict[str, int], expected: dict[str, int]) -> None:
    assert renormalise(shares) == expected


def test_superseded_by_a_newer_revision_generation_or_traffic_change() -> None:
    base = state((A("chat-1", 100),))
    assert superseded_reason(base, base) is None
    newer = state((A("chat-1", 100),), latest="chat-00003-ccc", generation=4)
    assert "newer revision chat-00003-ccc" in (superseded_reason(base, newer) or "")
    moved = state((A("chat-1", 50), A("chat-2", 50)), generation=4)
    assert "generation 3 -> 4" in (superseded_reason(base, moved) or "")
    same_gen = state((A("chat-1", 50), A("chat-2", 50)))
    assert "traffic" in (superseded_reason(base, same_gen) or "")


def test_shows_requires_the_served_split_and_tags() -> None:
    spec = (A("chat-1", 100), A("cand", 0, tag="candidate"))
    assert shows(state(spec), spec)
    assert not shows(state(spec, statuses=(A("chat-1", 100),)), spec)
    assert not shows(state(spec, statuses=(A("cand", 100),)), spec)


def test_pin_plan_keeps_tags_and_without_tag_removes_only_ours() -> None:
    cur = state((A("chat-1", 100), A("cand", 0, tag="candidate"), A("cand", 0, tag="dg-1")))
    assert pin_plan(cur, "cand", drop_tags=["dg-1"]) == (A("cand", 100, tag="candidate"),)
    assert without_tag(cur, "dg-1") == (A("chat-1", 100), A("cand", 0, tag="candidate"))
    assert without_tag(cur, "absent") is None


def test_newest_ready_before_the_serving_revision() -> None:
    revs = [
        RevisionState("n1", "r1", "chat", True, create_time=1),
        RevisionState("n2", "r2", "chat", False, create_time=2),
        RevisionState("n3", "r3", "chat", True, create_time=3),
        RevisionState("n4", "r4", "chat", True, create_time=4),
    ]
    found = newest_ready_before(revs, {"r4": 100})
    assert found is not None
    assert found.short == "r3"
    found = newest_ready_before(revs, {"r3": 100})
    assert found is not None
    assert found.short == "r1"
    assert newest_ready_before(revs, {"r1": 100}) is None


def test_a_failed_reconcile_is_told_from_one_still_under_way() -> None:
    from dataclasses import replace

    served = (Allocation("chat-00001-aaa", 100),)
    base = state(served, generation=4)
    failed = replace(base, observed_generation=3, terminal_message="exited with status 3")
    assert not settled(failed)
    assert failed_reconcile(failed)  # waiting changes nothing
    assert not failed_reconcile(replace(failed, reconciling=True))  # still under way
    assert not failed_reconcile(replace(failed, terminal_message=""))  # just lagging
    assert settled(replace(base, observed_generation=4))
    assert not failed_reconcile(replace(base, observed_generation=4, terminal_message="x"))


def test_tag_removal_after_a_failed_write_starts_from_what_is_served() -> None:
    broken = (Allocation("chat-00001-aaa", 100),)  # names a deleted revision, tag dropped
    served = (Allocation(None, 100), Allocation("chat-00002-bbb", 0, "dg-1", uri="http://x"))
    now = state(broken, served)
    assert without_tag(now, "dg-1") is None  # the spec no longer has it ...
    start = served_spec(now)
    assert all(not a.uri for a in start)
    assert without_tag(now, "dg-1", start=start) == (Allocation(None, 100),)  # ... served has


def test_same_spec_ignores_order_and_urls() -> None:
    a = (Allocation("r1", 90), Allocation(None, 10, "candidate"))
    b = (Allocation(None, 10, "candidate", uri="http://x"), Allocation("r1", 90))
    assert same_spec(a, b)
    assert not same_spec(a, (Allocation("r1", 100),))
    assert spec_text(a) == "r1 90%, LATEST 10% tag=candidate"
