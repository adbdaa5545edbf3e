"""A rollout's Markdown summary from plain data: every stage, where it stopped and why, rules.

The summary is read in a Cloud Build log or a pull request: these tests assert
what a person reads there (rows, sentences), not the layout's every byte (the
check's summary, which must not move, is kept byte for byte in ``golden/``).
"""

from __future__ import annotations

from deploy_guard.report.markdown import render_markdown
from report.samples import BASE, CANDIDATE, SECRET, rollout_report

HEADER = "| | stage | percent | traffic written | traffic verified | status | how long | reasons |"


def section(text: str, title: str) -> list[str]:
    """The lines of one ``### title`` section, blank lines dropped."""
    lines = text.splitlines()
    start = lines.index(f"### {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("### ")), len(lines))
    return [line for line in lines[start:end] if line]


def test_a_rollout_of_four_stages_reads_stage_by_stage() -> None:
    text = render_markdown(rollout_report())
    assert text.startswith(
        f"## deploy-guard rollout: ❌ FAIL — `{CANDIDATE}` "
        "(traffic put back to the split from before the rollout)\n"
    )
    assert f"- **Traffic after**: `{BASE}` 100%" in text
    split_10 = f"`{BASE}` 90%, `{CANDIDATE}` 10%"
    split_50 = f"`{BASE}` 50%, `{CANDIDATE}` 50%"
    assert section(text, "Steps") == [
        HEADER,
        "|---|---|---|---|---|---|---|---|",
        "| ✅ | tag | 0 % | (none: tag URL only) |  | pass | 8.2s |  |",
        f"| ✅ | step 1/2 | 10 % | {split_10} | ✅ as written | pass | 2m00s of 2m |  |",
        f"| ❌ | step 2/2 | 50 % | {split_50} | ✅ as written | fail | 41s of 5m "
        "| error-rate: 41 of 1000 requests failed, limit 1%; "
        "the app answered Authorization: Bearer [redacted] |",
        "| ⏳ | promote | 100 % |  |  | pending |  |  |",
    ]


def test_it_says_where_the_rollout_stopped_and_why() -> None:
    assert section(render_markdown(rollout_report()), "Where it stopped") == [
        "At **step 2/2** (50 %), ❌ fail: "
        "error-rate failed (fail_fast): traffic put back, verified",
        "- error-rate: 41 of 1000 requests failed, limit 1%",
        "- the app answered Authorization: Bearer [redacted]",
    ]


def test_each_stage_lists_its_rule_results_compactly() -> None:
    rules = section(render_markdown(rollout_report()), "Rules at each stage")
    assert rules[:3] == [
        "**tag** (0 %): ✅ pass",
        "- ✅ `ws` pass, 100% (1011 closes <= 0); 5 of 5 sessions ok",
        "- ✅ `http` pass, 100% (success ratio >= 95%); 20 of 20 ok",
    ]
    assert "- ✅ `error-rate` pass, 0.2% (error rate <= 1%); 1 of 500 requests failed" in rules
    assert (
        "- ❌ `error-rate` fail, 4.1% (error rate <= 1%); 41 of 1000 requests failed: "
        "4.1% of requests to chat-00002-bbb failed, limit 1%"
    ) in rules
    assert not any(line.startswith("**promote**") for line in rules)  # never reached: no rules
    # the evidence shown is the stopping stage's
    assert "- `error-rate`: GET /session?access_token=[redacted] 500" in rules
    assert "### Rules\n" not in render_markdown(rollout_report())  # no check table besides


def test_traffic_read_back_other_than_written_is_flagged() -> None:
    report = rollout_report()
    report.steps[1].traffic_verified = {BASE: 100}
    report.steps[2].traffic_verified = {}
    steps = section(render_markdown(report), "Steps")
    assert f"| ⚠️ `{BASE}` 100% (not as written) | pass |" in steps[3]
    assert "| **not verified** | fail |" in steps[4]


def test_a_held_rollout_names_the_step_it_holds() -> None:
    report = rollout_report()
    report.steps[2].status, report.steps[2].stopped = "inconclusive", ""
    report.steps[2].reasons = ["error-rate: 12 requests in the window, min_requests 50"]
    report.verdict, report.action, report.exit_code = "inconclusive", "held", 3
    report.traffic_after = {BASE: 50, CANDIDATE: 50}
    text = render_markdown(report)
    assert text.startswith(
        f"## deploy-guard rollout: ❔ INCONCLUSIVE — `{CANDIDATE}` (held at step 2/2 (50 %))\n"
    )
    assert section(text, "Where it stopped") == [
        "At **step 2/2** (50 %), ❔ inconclusive",
        "- error-rate: 12 requests in the window, min_requests 50",
    ]


def test_an_interrupted_step_and_a_completed_rollout() -> None:
    report = rollout_report()
    report.steps[2].status = "interrupted"
    report.steps[2].stopped = "SIGTERM: the split from before the rollout put back"
    report.steps[2].reasons = []
    assert section(render_markdown(report), "Where it stopped") == [
        "At **step 2/2** (50 %), ⏹️ interrupted: SIGTERM: the split from before the rollout put back"
    ]
    for step in report.steps:
        step.status, step.stopped = "pass", ""
    report.steps[3].traffic_written = report.steps[3].traffic_verified = {CANDIDATE: 100}
    report.verdict, report.action, report.exit_code = "pass", "promoted", 0
    text = render_markdown(report)
    assert section(text, "Where it stopped") == ["Completed: 100 % on the candidate"]
    assert f"| ✅ | promote | 100 % | `{CANDIDATE}` 100% | ✅ as written | pass |" in text


def test_a_rollout_stopped_before_its_first_stage_says_why() -> None:
    report = rollout_report()
    report.steps = []
    report.verdict, report.action, report.exit_code = "error", "none", 2
    report.error = "another rollout runs on chat: chat-00003-ccc at step 1/2"
    text = render_markdown(report)
    assert section(text, "Steps") == ["(the rollout stopped before its first stage)"]
    assert section(text, "Where it stopped") == [
        "another rollout runs on chat: chat-00003-ccc at step 1/2"
    ]


def test_the_rollout_summary_has_no_secret() -> None:
    text = render_markdown(rollout_report())
    assert SECRET not in text
    assert "[redacted]" in text
