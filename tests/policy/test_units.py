"""Durations and ratios as written in files."""

from __future__ import annotations

import pytest

from deploy_guard.policy.units import (
    format_duration,
    format_measured,
    format_ratio,
    parse_duration,
    parse_ratio,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7s", 7.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1m30s", 90.0), ("1.5s", 1.5)],
)
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["sixty", "7", "7 sec", "-1s", "", "s", True, None, [1]])
def test_bad_durations_say_what_is_allowed(bad: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(use 60s, 2m\)"):
        parse_duration(bad)


def test_bare_numbers_are_seconds_only_outside_files() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(5)
    assert parse_duration(5, strict=False) == 5.0
    with pytest.raises(ValueError):
        parse_duration(-1, strict=False)
    with pytest.raises(ValueError):
        parse_duration(float("nan"), strict=False)


@pytest.mark.parametrize(
    ("written", "ratio"), [("95%", 0.95), (0.95, 0.95), ("100%", 1.0), (0, 0.0)]
)
def test_ratios(written: object, ratio: float) -> None:
    assert parse_ratio(written) == pytest.approx(ratio)


@pytest.mark.parametrize("bad", [95, "95", "abc%", True, -0.1, float("inf")])
def test_bad_ratios(bad: object) -> None:
    with pytest.raises(ValueError, match=r"is not a ratio \(use 95% or 0.95\)"):
        parse_ratio(bad)


def test_over_100_percent_is_named() -> None:
    with pytest.raises(ValueError, match='"150%" is over 100%'):
        parse_ratio("150%")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (7, "7s"), (60, "60s"), (120, "2m"), (7200, "2h"), (90, "90s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1.39799, "1.4s"),
        (7.051, "7.05s"),
        (16.6564, "16.7s"),
        (60.108, "60.1s"),
        (0.82041, "820ms"),
        (0.0012345, "1.23ms"),
        (0.9996, "1s"),
        (99.96, "100s"),
        (150.4, "2m30s"),
        (180.2, "3m"),
    ],
)
def test_format_measured_rounds_clock_readings(seconds: float, text: str) -> None:
    assert format_measured(seconds) == text


def test_format_ratio() -> None:
    assert format_ratio(0.95) == "95%"
