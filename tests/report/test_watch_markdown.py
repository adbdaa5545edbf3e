"""A watch's ``--summary``, as a person reads it after a watch ends.

Read by hand, the summary of a watch that rolled V2 back and went on watching V1 was
headed "FAIL — `V1` (no traffic change)": the healthy revision, blamed. One that stopped
on an unknown service was headed "ERROR — `` (no traffic change)" over an empty Watch
section. Counts read "1 stream(s)", "1 probe rounds".
"""

from __future__ import annotations

from deploy_guard.report.markdown import render_markdown
from deploy_guard.report.model import CheckReport

V1, V2 = "chat-00001-aaa", "chat-00002-bbb"


def watch_report(**watch: object) -> CheckReport:
    report = CheckReport(revision=V1, service="chat", project="p", region="r", command="watch")
    report.watch = {
        "revision": V1,
        "windows_judged": 1,
        "status": "pass",
        "logs_mode": "tail",
        "tail_opens": 1,
        "logs_reads": 2,
        "canary_sessions": 1,
        "probe_rounds": 3,
        "watched_s": 61.2,
        **watch,
    }
    return report


def head(report: CheckReport) -> str:
    return render_markdown(report).splitlines()[0]


def test_the_head_names_the_revision_rolled_back_not_the_one_restored() -> None:
    report = watch_report(
        rollbacks=[{"revision": V2, "verified_at": "t", "first_bad_to_verified_s": 0.2}]
    )
    report.verdict, report.action, report.exit_code = "fail", "rolled_back", 0
    assert head(report) == f"## deploy-guard watch: ❌ FAIL — `{V2}` (traffic rolled back)"
    text = render_markdown(report)
    assert f"- **Watched**: `{V1}` for 61 s (1 look at the window), ending pass" in text
    assert "- **Logs**: tail (1 stream opened, 2 ListLogEntries reads)" in text
    assert "- **Probes**: 1 canary session, 3 probe rounds" in text


def test_a_healthy_watch_names_what_it_watched() -> None:
    report = watch_report()
    report.verdict, report.exit_code = "pass", 0
    assert head(report) == f"## deploy-guard watch: ✅ PASS — `{V1}` (no traffic change)"


def test_a_watch_that_never_started_names_the_service_and_has_no_empty_section() -> None:
    report = CheckReport(revision="", service="chat-agnet", command="watch")
    report.verdict, report.exit_code = "error", 2
    report.error = "service chat-agnet does not exist"
    text = render_markdown(report)
    assert (
        text.splitlines()[0] == "## deploy-guard watch: ⛔ ERROR — `chat-agnet` (no traffic change)"
    )
    assert "### Watch" not in text
    assert "``" not in text


def test_a_check_s_head_is_unchanged() -> None:
    report = CheckReport(revision=V2, service="chat")
    report.verdict, report.action, report.exit_code = "fail", "rolled_back", 1
    assert head(report) == f"## deploy-guard: ❌ FAIL — `{V2}` (traffic rolled back)"
