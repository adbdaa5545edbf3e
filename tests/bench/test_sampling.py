"""The benchmarks' view of a process from outside: /proc parsing, usage, calls in time."""

from __future__ import annotations

import pytest
from bench_files import load

sp = load("sampling")


def test_cpu_seconds_read_past_a_process_name_with_spaces_and_parentheses() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    stat = "42 (py (x) y) S 1 42 42 0 -1 4194304 900 0 0 0 250 50 0 0 20 0 3 0 100 1 2\n"
    assert sp.cpu_seconds(stat, 100) == pytest.approx(3.0)


def test_rss_is_vmrss_in_bytes_and_none_without_it() -> None:
    assert sp.rss_bytes("Name:\tpython\nVmPeak:\t 9 kB\nVmRSS:\t  2048 kB\n") == 2048 * 1024
    assert sp.rss_bytes("Name:\tpython\nState:\tZ (zombie)\n") is None


def test_usage_is_cpu_time_over_wall_time_and_rss_at_three_moments() -> None:
    samples = [
        sp.Sample(t=0.0, cpu=1.0, rss=10),
        sp.Sample(t=30.0, cpu=1.6, rss=50),
        sp.Sample(t=60.0, cpu=1.9, rss=80),
        sp.Sample(t=120.0, cpu=2.5, rss=70),
    ]
    use = sp.usage(samples, warm=60.0)
    assert use.seconds == 120.0
    assert use.cpu_percent == pytest.approx(100 * 1.5 / 120)
    assert use.cpu_percent_warm == pytest.approx(100 * 0.6 / 60)
    assert (use.rss_first, use.rss_warm, use.rss_end, use.rss_max) == (10, 80, 70, 80)


def test_calls_close_together_are_one_read() -> None:
    stamps = [10.0, 10.01, 10.3, 70.0, 70.2, 130.5]
    assert sp.bursts(stamps) == [(10.0, 3), (70.0, 2), (130.5, 1)]
    assert sp.bursts([]) == []


def test_gaps_are_the_seconds_between_reads() -> None:
    assert sp.gaps([10.0, 70.0, 130.5]) == [60.0, 60.5]
    assert sp.gaps([10.0]) == []


def test_every_minute_picks_the_first_sample_of_each_minute_and_its_cpu_share() -> None:
    samples = [sp.Sample(t=float(t), cpu=t / 50, rss=t) for t in range(0, 150, 10)]
    assert [s.t for s in sp.every(samples)] == [0.0, 60.0, 120.0]
    assert sp.cpu_shares(samples) == pytest.approx([2.0, 2.0])
