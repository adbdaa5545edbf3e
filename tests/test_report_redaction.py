"""Every renderer of a check's report shows it redacted: JSON, Markdown, the terminal view.

The report is filled raw (a rule message quoting a token a server echoed, a
timeline event with a signed URL, an error with a header value); redaction
happens where each output is made, so a secret registered after the field was
filled is caught too.
"""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from deploy_guard import log as guard_log
from deploy_guard.report.json import render_json
from deploy_guard.report.markdown import render_markdown
from deploy_guard.report.model import CheckReport
from deploy_guard.report.terminal import TerminalView, render, summary

TOKEN = "ya29.c.b0AXv0zTN" + "8fJq2Lw9xZp4Rk7Vd1Mn6Bt3Hs5Gc0Ye" * 3
KEY = "AIzaSy-report-api-key-00af9b"
SIGNED = "https://storage.example/o?X-Goog-Signature=9e107d9d372bb6826bd81d3542a419d6&page=2"


def filled_report() -> CheckReport:
    report = CheckReport(revision="chat-00002-abc", service="chat", project="p", region="r")
    report.rules = [
        {
            "rule": "chat",
            "kind": "websocket",
            "status": "fail",
            "counts": "1 of 1 session closed with 1011; limit 0",
            "message": f"close code 1011 (bad Bearer {TOKEN[:100]}) after 0.1 s",
            "evidence": [f"recv: your key {KEY}", f"fetched {SIGNED}"],
            "observed": 0.0,
            "threshold": "0",
        }
    ]
    report.timeline.add("probe_failed", url=SIGNED, detail=f"echo {TOKEN[40:90]}")
    report.timeline.add("tag_added", tag="dg-1", token=TOKEN)
    report.message = f"fail: chat: close code 1011 (bad Bearer {TOKEN[:100]})"
    report.reasons = [report.message]
    report.error = f"GET {SIGNED} answered 403 for key {KEY}"
    report.notes = [f"the server said {KEY}"]
    report.finished_at = "2026-12-04T20:00:00+00:00"
    return report


def leaked(text: str) -> list[str]:
    return [
        s[i : i + 12]
        for s in (TOKEN, KEY, "9e107d9d372bb6826bd81d3542a419d6")
        for i in range(len(s) - 11)
        if s[i : i + 12] in text
    ]


def _screen(*renderables: object) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    for r in renderables:
        console.print(r)
    return out.getvalue()


@pytest.mark.fault(
    "secrets", "report fields quoting echoed secrets and signed URLs", "redacted in every renderer"
)
def test_json_markdown_and_the_terminal_view_show_no_secret() -> None:
    report = filled_report()  # filled before the secrets were known...
    guard_log.register_secret(TOKEN)  # ...as when a check fails before reading its token
    guard_log.register_secret(KEY)
    guard_log.allow_query_params(["page"])
    outputs = {
        "json": render_json(report),
        "markdown": render_markdown(report),
        "terminal": _screen(render(report, events=50, width=200), summary(report)),
    }
    view = TerminalView(
        console=Console(file=io.StringIO(), width=200), out=Console(file=io.StringIO(), width=200)
    )
    view.final(report)
    outputs["terminal final"] = view.console.file.getvalue() + view.out.file.getvalue()  # type: ignore[attr-defined]
    for name, text in outputs.items():
        assert leaked(text) == [], name
        assert "[redacted]" in text, name
        assert "page=2" in text or name.startswith("terminal"), name  # safe: shown
    assert "X-Goog-Signature=[redacted]&page=2" in outputs["json"]
    assert "close code 1011 (bad Bearer [redacted])" in outputs["terminal"]
