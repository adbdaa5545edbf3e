"""The terminal view of a rollout (live and final) and of a check's awkward text, from plain data.

The live view is what ``progress.changed(report)`` redraws: where the rollout
is now ("step 2/2: 50 % for 5m, 1m12s in"), every stage with its status, the
running stage's rules. The final view and the summary lines under it show every
stage and say where the rollout stopped and why.
"""

from __future__ import annotations

import io
import re
from datetime import datetime

from rich.console import Console

from deploy_guard.report.model import CheckReport
from deploy_guard.report.terminal import TerminalView, render, summary
from report.samples import SECRET, check_report, rollout_report, rule

STAGE_ROW = re.compile(r"^(tag|step \d+/\d+|promote) +\d+ %")
NOW = datetime.fromisoformat("2026-12-04T20:03:22+00:00")  # 72 s into step 2/2


def screen(*renderables: object, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    for r in renderables:
        console.print(r)
    return console.file.getvalue()  # type: ignore[attr-defined]


def running_at_step_two() -> CheckReport:
    """The sample rollout while its 50 % step runs: nothing decided, promote not reached."""
    report = rollout_report()
    report.finished_at = ""
    step = report.steps[2]
    step.status, step.finished_at, step.stopped, step.reasons = "running", "", "", []
    step.rules = [rule("error-rate", "metric", "pending", None, "error rate <= 1%", "80 requests")]
    return report


def rows(text: str) -> dict[str, str]:
    """The stage table's rows by stage name, spaces squeezed."""
    found = {}
    for line in text.splitlines():
        row = STAGE_ROW.match(line)
        if row:
            found[row.group(1)] = " ".join(line.split())
    return found


def test_the_live_view_says_the_current_stage_and_how_far_in_it_is() -> None:
    text = screen(render(running_at_step_two(), now=NOW))
    lines = text.splitlines()
    assert lines[0].startswith("deploy-guard rollout chat/chat-00002-bbb")
    assert lines[0].rstrip().endswith("running")
    assert lines[1] == "step 2/2: 50 % for 5m, 1m12s in"
    stages = rows(text)
    assert list(stages) == ["tag", "step 1/2", "step 2/2", "promote"]
    assert stages["tag"] == "tag 0 % pass 8.2s"
    assert stages["step 1/2"] == "step 1/2 10 % 10 % 10 % pass 2m00s of 2m"
    assert stages["step 2/2"] == "step 2/2 50 % 50 % 50 % running 1m12s of 5m"
    assert stages["promote"] == "promote 100 % pending"
    # the running stage's rules, quiet while pending
    assert "error-rate  metric  pending  80 requests" in text
    assert "5 of 5 sessions ok" not in text  # the tag stage's rules are not this stage's


def test_the_clock_of_the_running_stage_moves_with_now() -> None:
    later = datetime.fromisoformat("2026-12-04T20:06:10.600+00:00")
    assert "step 2/2: 50 % for 5m, 4m01s in" in screen(render(running_at_step_two(), now=later))


def test_between_stages_the_live_view_names_the_next_one() -> None:
    report = running_at_step_two()
    report.steps[2].status, report.steps[2].started_at = "pending", ""
    report.steps[2].traffic_written, report.steps[2].traffic_verified = {}, {}
    text = screen(render(report, now=NOW))
    assert text.splitlines()[1] == "next: step 2/2: 50 % for 5m"
    assert rows(text)["step 2/2"] == "step 2/2 50 % pending 5m planned"


def test_the_tag_stage_says_it_sends_no_traffic() -> None:
    report = running_at_step_two()
    for step in report.steps:
        step.status, step.finished_at = "pending", ""
    report.steps[0].status = "running"
    report.steps[0].started_at = "2026-12-04T20:03:19.000+00:00"
    text = screen(render(report, now=NOW))
    assert text.splitlines()[1] == "tag: probes through the tag URL, 0 % of traffic, 3.0s in"


def test_the_final_view_and_summary_show_every_stage_and_where_it_stopped() -> None:
    report = rollout_report()
    view = TerminalView(
        console=Console(file=io.StringIO(), width=120, color_system=None),
        out=Console(file=io.StringIO(), width=120, color_system=None, soft_wrap=True),
    )
    view.final(report)
    shown = view.console.file.getvalue()  # type: ignore[attr-defined]
    out = view.out.file.getvalue()  # type: ignore[attr-defined]
    assert shown.splitlines()[0].rstrip().endswith("FAIL")
    stages = rows(shown)
    assert list(stages) == ["tag", "step 1/2", "step 2/2", "promote"]
    assert stages["step 2/2"].startswith(
        "step 2/2 50 % 50 % 50 % fail 41s of 5m error-rate: 41 of 1000 requests failed"
    )
    assert stages["promote"] == "promote 100 % pending"
    # the deciding stage's rules, with their messages
    assert "4.1% of requests to chat-00002-bbb failed, limit 1%" in shown
    assert out.splitlines()[:3] == [
        "FAIL  action=rolled_back  exit=1",
        "fail at step 2/2 (50 %): error-rate 4.1%, limit 1% | traffic put back",
        "stopped at step 2/2 (50 %): fail: error-rate failed (fail_fast): traffic put back, "
        "verified; error-rate: 41 of 1000 requests failed, limit 1%; the app answered "
        "Authorization: Bearer [redacted]",
    ]
    assert "traffic now: chat-00001-aaa 100%" in out
    assert SECRET not in shown + out


def test_traffic_read_back_other_than_written_or_not_at_all_stands_out() -> None:
    report = rollout_report()
    report.steps[1].traffic_verified = {"chat-00001-aaa": 100}  # Cloud Run serves the old split
    report.steps[2].traffic_verified = {}  # written, never read back
    stages = rows(screen(render(report, now=NOW), width=140))
    assert stages["step 1/2"].startswith("step 1/2 10 % 10 % 0 % ≠ written pass")
    assert stages["step 2/2"].startswith("step 2/2 50 % 50 % not verified fail")


def test_a_completed_rollout_says_so() -> None:
    report = rollout_report()
    for step in report.steps:
        step.status, step.stopped, step.reasons = "pass", "", []
    report.steps[3].traffic_written = report.steps[3].traffic_verified = {"chat-00002-bbb": 100}
    report.verdict, report.action, report.exit_code = "pass", "promoted", 0
    report.message = ""
    out = screen(summary(report))
    assert out.splitlines()[:2] == [
        "PASS  action=promoted  exit=0",
        "completed: 100 % on the candidate",
    ]


def test_a_held_rollout_says_at_which_step() -> None:
    report = rollout_report()
    report.steps[2].status, report.steps[2].stopped = "inconclusive", "on_inconclusive: hold"
    report.steps[2].reasons = []
    report.verdict, report.action, report.exit_code = "inconclusive", "held", 3
    assert "held at step 2/2 (50 %): inconclusive: on_inconclusive: hold" in screen(summary(report))


def test_a_rollout_that_stopped_before_any_stage_shows_its_head_and_events() -> None:
    report = rollout_report()
    report.steps, report.rules = [], []
    report.verdict, report.exit_code, report.error = "error", 2, "no rollout steps"
    text = screen(render(report, now=NOW))
    assert text.splitlines()[0].rstrip().endswith("ERROR")
    assert "stage" not in text  # no empty tables
    assert "rule " not in text
    assert "rollback_verified" in text


def test_bracketed_text_in_a_rule_is_shown_as_text_not_taken_as_markup() -> None:
    report = check_report()
    report.rules[0]["message"] = "server said [/] then [bold]x[/bold]: Bearer [redacted]"
    text = screen(render(report), width=200)  # "[/]" as markup would raise MarkupError
    assert "server said [/] then [bold]x[/bold]: Bearer [redacted]" in text


def test_stage_times_without_a_zone_are_read_as_utc_and_unreadable_ones_are_left_out() -> None:
    report = running_at_step_two()
    report.steps[1].started_at, report.steps[1].finished_at = "2026-12-04T20:00:09", "garbage"
    report.steps[2].started_at = "2026-12-04T20:02:10"
    text = screen(render(report, now=NOW))
    assert "step 2/2: 50 % for 5m, 1m12s in" in text
    assert rows(text)["step 1/2"] == "step 1/2 10 % 10 % 10 % pass"
