"""The watch benchmark's pure helpers, and its policies as the guard loads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bench_files import BENCH, load

from deploy_guard.policy.load import load_file
from deploy_guard.policy.watch import watch_plan

bw = load("bench_watch")


def _report(at: datetime) -> dict[str, object]:
    verified = at + timedelta(seconds=0.25)
    return {
        "timeline": [
            {"event": "watch_started", "t": 0.0, "at": at.isoformat()},
            {"event": "window_judged", "t": 1.0, "detail": {"status": "pass"}},
            {"event": "window_judged", "t": 9.5, "detail": {"status": "fail"}},
            {"event": "watch_rolled_back", "t": 9.7, "detail": {}},
        ],
        "watch": {
            "rollbacks": [{"verified_at": verified.isoformat(), "first_bad_to_verified_s": 0.21}]
        },
    }


def test_a_rollback_is_timed_three_ways() -> None:
    at = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    timing = bw.rollback_timing(_report(at), at)
    assert timing.reported == 0.21
    assert timing.judged == pytest.approx(0.2)  # the failing window, not the passing one
    assert timing.logged == pytest.approx(0.25)


def test_a_watch_that_never_rolled_back_has_no_timing() -> None:
    timing = bw.rollback_timing({"timeline": [], "watch": {}}, None)
    assert (timing.reported, timing.judged, timing.logged) == (None, None, None)


def test_spread_is_the_median_and_the_worst_of_what_is_known() -> None:
    found = bw.spread([0.3, None, 0.1, 0.2])
    assert (found.p50, found.max, found.n) == (0.2, 0.3, 3)
    assert bw.spread([None]) is None


@pytest.mark.parametrize("canary", [True, False])
def test_section_one_s_policies_load_and_watch_as_meant(tmp_path: Path, canary: bool) -> None:
    path = tmp_path / "watch.yaml"
    path.write_text(bw.watch_policy("bench-watch", canary))
    plan = watch_plan([load_file(path)])
    assert plan.probe_interval is None
    assert (plan.canary is not None) is canary


def test_the_long_watch_runs_the_shipped_policy_with_the_steady_lines_allowed(
    tmp_path: Path,
) -> None:
    policy = load_file(bw._long_policy(tmp_path))
    shipped = (BENCH.parent / "policies" / "chat-agent.yaml").read_text()
    assert "metric_interval: 1m" in shipped
    steady = next(r for r in policy.rules if r.name == bw.STEADY_RULE["name"])
    assert steady.logs is not None
    assert steady.logs.max_count >= 1_000_000
    assert sum(r.kind == "metric" for r in policy.rules) == 2
