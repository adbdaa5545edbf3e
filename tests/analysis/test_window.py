"""The windowed log counter from plain data: windows, rates, de-duplication, bounded memory."""

from __future__ import annotations

import pytest

from deploy_guard.analysis.window import WindowCounter


def test_counts_each_label_within_a_window_on_bucket_boundaries() -> None:
    c: WindowCounter[str] = WindowCounter(bucket=10, origin=1000)
    for i, at in enumerate([1000, 1005, 1012, 1019, 1025, 1031]):
        assert c.add(f"e{i}", at, ["1011"] if i % 2 == 0 else ["1011", "timeout"])
    assert c.count("1011") == 6
    assert c.count("timeout") == 3
    assert c.count("1011", since=1010, until=1030) == 3  # [1010, 1030): 1012, 1019, 1025
    assert c.count("timeout", since=1010, until=1020) == 1  # 1019
    assert c.count("1011", since=1040) == 0
    assert c.count("absent") == 0
    assert c.counts(since=1020) == {"1011": 2, "timeout": 1}


def test_a_window_counts_the_buckets_it_overlaps() -> None:
    c: WindowCounter[str] = WindowCounter(bucket=10)
    c.add("a", 3, ["x"])
    c.add("b", 8, ["x"])
    # [5, 9) is inside bucket [0, 10): the bucket's two entries count (the documented edge)
    assert c.count("x", since=5, until=9) == 2
    assert c.count("x", since=10) == 0


def test_rate_per_minute_over_the_window() -> None:
    c: WindowCounter[str] = WindowCounter(bucket=5)
    for i in range(6):
        c.add(str(i), 10 * i, ["err"])
    assert c.per_minute("err", 0, 60) == 6.0
    assert c.per_minute("err", 0, 30) == 6.0  # 3 in half a minute
    assert c.per_minute("err", 30, 30) == 0.0  # an empty window has no rate


def test_an_entry_read_again_counts_once() -> None:
    c: WindowCounter[tuple[str, str]] = WindowCounter(bucket=10)
    labels = [("rule", "1011")]
    assert c.add("id-1", 100, labels)
    assert c.add("id-2", 101, labels)
    # the next pass re-reads the last minute: the same ids come back
    assert not c.add("id-1", 100, labels)
    assert not c.add("id-2", 101, labels)
    assert c.add("id-3", 102, labels)
    assert c.count(("rule", "1011")) == 3
    assert c.refused == 0  # duplicates are not refusals


def test_an_entry_without_labels_is_remembered_all_the_same() -> None:
    c: WindowCounter[str] = WindowCounter()
    assert c.add("seen", 5, [])
    assert not c.add("seen", 5, ["x"])  # a re-read must not count it now
    assert c.count("x") == 0


def test_an_entry_older_than_the_id_horizon_is_refused_not_counted_twice() -> None:
    c: WindowCounter[str] = WindowCounter(bucket=10, horizon=600, id_horizon=60)
    c.add("old", 0, ["x"])
    c.add("new", 100, ["x"])  # "old" is now past the id horizon: its id is forgotten
    assert c.ids == 1
    assert not c.add("old", 0, ["x"])  # could be a re-read: refused, never counted twice
    assert not c.add("late", 30, ["x"])  # older than newest - id_horizon
    assert c.refused == 2
    assert c.add("recent", 41, ["x"])  # within the id horizon
    assert c.count("x") == 3


def test_memory_stays_bounded_over_a_long_time_and_the_total_stays_exact() -> None:
    c: WindowCounter[str] = WindowCounter(
        bucket=10, horizon=300, id_horizon=120, max_ids=10_000, origin=0
    )
    day = 24 * 3600
    n = 0
    for second in range(0, day, 2):  # one entry every 2 s for a day: 43,200 entries
        assert c.add(f"e{second}", second, ["err"] if second % 10 == 0 else ["ok"])
        n += 1
        assert c.buckets <= 300 / 10 + 2
        assert c.ids <= 120 / 2 + 1
    assert c.count("err") + c.count("ok") == n  # folded, not lost
    assert c.count("err") == day // 10
    # the last five minutes are still in detail
    assert c.count("err", since=day - 300) == 30
    assert c.per_minute("err", day - 300, day) == 6.0


def test_a_window_reaching_into_the_folded_past_is_an_error_not_a_wrong_number() -> None:
    c: WindowCounter[str] = WindowCounter(bucket=10, horizon=60, id_horizon=30)
    for t in range(0, 600, 5):
        c.add(str(t), t, ["x"])
    with pytest.raises(ValueError, match="folded"):
        c.count("x", since=100)
    with pytest.raises(ValueError, match="folded"):
        c.count("x", since=0, until=100)
    assert c.count("x", since=0) == 120  # everything: the folded total and the detail
    assert c.count("x", since=600 - 60) == 12


def test_a_burst_beyond_max_ids_forgets_the_oldest_and_refuses_at_or_before_them() -> None:
    c: WindowCounter[str] = WindowCounter(bucket=10, id_horizon=300, max_ids=100)
    for i in range(250):
        c.add(f"e{i}", 1000 + i / 100, ["x"])  # 250 entries within 2.5 s
        assert c.ids <= 100
    assert c.count("x") == 250
    assert not c.add("e0", 1000, ["x"])  # forgotten, and refused rather than counted again
    assert not c.add("other", 1000 + 149 / 100, ["x"])  # at the refusal line: unknown
    assert c.add("fresh", 1003, ["x"])
    assert c.count("x") == 251


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"bucket": 0}, "bucket"),
        ({"bucket": 10, "horizon": 5}, "horizon"),
        ({"id_horizon": 7200}, "id_horizon"),
        ({"max_ids": 0}, "max_ids"),
    ],
)
def test_nonsense_options_are_refused(options: dict[str, float], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        WindowCounter(**options)  # type: ignore[arg-type]
