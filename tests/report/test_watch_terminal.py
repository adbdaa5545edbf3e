"""A watch's live view on a terminal, from plain data.

By hand the view of a watch read like a check's ("deploy-guard chat/REV  5400.3 s
running"), and an outage showed nowhere but in the rows of the rules it blinded.
"""

from __future__ import annotations

import io

from rich.console import Console

from deploy_guard.report.model import CheckReport
from deploy_guard.report.terminal import render
from report.samples import Clock, rule, timeline

REV = "chat-00002-bbb"


def screen(report: CheckReport) -> list[str]:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render(report))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def watching(seconds: float, **watch: object) -> CheckReport:
    clock = Clock()
    report = CheckReport(
        revision=REV,
        service="chat",
        command="watch",
        timeline=timeline(clock, [(0.0, "watching", {"revision": REV})]),
    )
    clock.now += seconds
    report.rules = [rule("no-1011", "logs", "pass", 0, "matches <= 0", "0 matches over 5m")]
    report.watch = dict(watch)
    return report


def test_the_live_view_says_it_is_watching_and_for_how_long() -> None:
    assert screen(watching(12.34))[0] == f"deploy-guard watch chat/{REV}  12.3 s  watching"
    assert screen(watching(245))[0] == f"deploy-guard watch chat/{REV}  4m05s  watching"
    assert screen(watching(26 * 3600 + 180))[0].startswith(f"deploy-guard watch chat/{REV}  26h03m")


def test_a_degraded_watch_says_what_is_down_under_its_head() -> None:
    down = "Cloud Logging: the live tail is down"
    report = watching(30, degraded_now=True, degraded=[{"at": "t", "why": down}])
    assert screen(report)[1] == f"degraded (never a rollback): {down}"
    recovered = watching(30, degraded_now=False, degraded=[{"at": "t", "why": down}])
    assert "degraded" not in "\n".join(screen(recovered))
