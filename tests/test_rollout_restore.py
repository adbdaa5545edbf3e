"""What ``rollback`` puts back after a rollout, from plain data (no emulator)."""

from __future__ import annotations

from datetime import UTC, datetime

from deploy_guard.gcp.rollouts import (
    ROLLOUT_ANNOTATION,
    RolloutRecord,
    current,
    ended,
    restore_split,
)


def record(before: dict[str, int]) -> RolloutRecord:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return RolloutRecord("c", before, 1, 10, ((10, 60.0),), "h:1", moment, moment)


def test_the_split_before_comes_back_as_it_was() -> None:
    assert restore_split(record({"a": 90, "b": 10})) == {"a": 90, "b": 10}


def test_the_candidate_is_left_out_and_the_rest_renormalised() -> None:
    assert restore_split(record({"a": 60, "b": 20, "c": 20})) == {"a": 75, "b": 25}


def test_revisions_no_longer_usable_are_left_out_too() -> None:
    assert restore_split(record({"a": 50, "b": 50}), usable={"a", "c"}) == {"a": 100}
    assert restore_split(record({"a": 50, "b": 50}), usable={"c"}) == {}
    assert restore_split(record({"c": 100})) == {}


def test_the_value_that_ends_a_record_reads_as_no_rollout() -> None:
    assert current(ended()) is None
    assert list(ended()) == [ROLLOUT_ANNOTATION]
