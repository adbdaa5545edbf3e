"""The HTML report: what it shows, from the report data alone; escaped; self-contained; bounded.

``reports/check-1011.json`` and ``reports/watch-1011.json`` are the demo's own
reports (``make demo``): the broken revision whose five held sessions all closed
with 1011 seven seconds in, and the watch that rolled an unchecked deploy back.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deploy_guard.cli import cli
from deploy_guard.commands.last_word import write_report_files
from deploy_guard.report import html as html_module
from deploy_guard.report.html import read_report, render_html, write_html
from deploy_guard.report.json import render_json
from deploy_guard.report.model import CheckReport
from deploy_guard.traces import SessionTrace
from report.samples import check_report, rollout_report

REPORTS = Path(__file__).parent / "reports"
CHECK_1011 = REPORTS / "check-1011.json"
WATCH_1011 = REPORTS / "watch-1011.json"

#: Every element the page may contain: anything else came from the data.
ALLOWED_TAGS = {
    "html", "head", "meta", "link", "title", "style", "body", "header", "main", "section",
    "footer", "div", "span", "p", "h1", "h2", "h3", "ul", "li", "dl", "dt", "dd", "code",
    "strong", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "i",
    "svg", "g", "line", "rect", "circle", "text",
}  # fmt: skip


class Tags(HTMLParser):
    """Every start tag and its attributes, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parsed(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(page)
    parser.close()
    return parser.tags


def text_of(page: str) -> str:
    """The page's text with the tags taken out and whitespace folded (what a reader sees)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_a_failed_check_says_every_held_session_closed_with_1011_about_7_s_in() -> None:
    page = render_html(load(CHECK_1011))
    words = text_of(page)
    assert 'id="verdict">FAIL<' in page
    assert "chat-hold: every session (5 of 5) closed with 1011, 7.0 s after it opened" in words
    assert page.count('class="end c1011"') == 5  # five red markers ...
    assert page.count('class="wanted"') == 5  # ... each short of the hold it wanted
    assert re.search(r"first failure · decision at 7\.\d s", words)  # two marks, one label
    assert "Decided by: chat-hold" in words
    # the rules table, traffic and the timeline
    assert page.count('<span class="pill s-fail">fail</span>') == 3
    assert "chat-agent-00001-lq6" in words or "chat-agent-00001" in words
    for event in ("check_started", "first_failure_seen", "decision", "check_finished"):
        assert f"<code>{event}</code>" in page
    # log matches and metric points are on the same axis as the sessions
    assert 'class="logmatch bad"' in page
    assert 'class="point"' in page


def test_the_failing_rule_comes_first_and_passing_sessions_are_thin() -> None:
    page = render_html(load(CHECK_1011))
    groups = re.findall(r'<text class="group"[^>]*>([^<]+)<', page)
    assert groups[0].startswith("chat-hold · websocket · 5 sessions (5 failed)")
    assert "chat-cycles · websocket · 100 sessions (50 drawn)" in " ".join(groups)
    assert "chat-cycles: 50 passing sessions not drawn" in text_of(page)


def test_a_watch_shows_its_canary_its_rollback_and_the_rounds_it_cut() -> None:
    doc = load(WATCH_1011)
    page = render_html(doc)
    words = text_of(page)
    rolled_back = doc["watch"]["rollbacks"][0]["revision"]
    assert f"<h1>deploy-guard watch: <code>{rolled_back}</code></h1>" in page  # what it failed
    assert "deploy-guard watch" in words
    assert "chat-golden-path-canary: 1 of 3 sessions closed with 1011" in words
    assert "chat-hold · websocket · 5 sessions (5 stopped by the guard)" in words
    assert "Rollbacks" in words
    assert "9 ms" in words
    assert "traffic rolled back" in words
    assert "rollback: chat-agent-00003" in words  # the traffic mark on the picture


def test_a_rollout_shows_each_step_and_where_it_stopped() -> None:
    report = rollout_report()
    report.traces.session("ws", _session(ok=True), age=1.0)
    page = render_html(report.to_dict())
    words = text_of(page)
    assert "deploy-guard rollout" in words
    for stage in ("tag", "step 1/2", "step 2/2", "promote"):
        assert f"<td>{stage}</td>" in page
    assert "stopped at step 2/2 (50 %): fail: error-rate failed (fail_fast)" in words
    assert "traffic put back to the split from before the rollout" in words
    assert "as written" in words
    assert "No probe session failed." in words


def test_an_error_report_still_renders_what_went_wrong() -> None:
    report = CheckReport(revision="chat-00002-bbb", service="chat")
    report.verdict, report.exit_code = "error", 2
    report.error = "policies/chat.yaml:14: rules[2].threshold: must be between 0 and 1"
    report.message = "the check did not start"
    page = render_html(report.to_dict())
    words = text_of(page)
    assert 'id="verdict">ERROR<' in page
    assert "rules[2].threshold: must be between 0 and 1" in words
    assert "No rule was judged." in words
    assert "holds no probe session" in words


def test_an_old_or_partial_report_renders_with_what_it_has() -> None:
    """A JSON report written before traces existed, or trimmed by hand: no key is required."""
    page = render_html({"verdict": "pass"})
    assert 'id="verdict">PASS<' in page
    doc = load(CHECK_1011)
    doc["traces"]["sessions"]["chat-hold"]["sessions"][0].pop("events")
    doc["rules"][0] = "not a rule object"
    assert "every session (5 of 5)" in text_of(render_html(doc))


def test_each_notification_delivery_is_listed_with_why_one_failed() -> None:
    doc = load(CHECK_1011)
    doc["notifications"] = [
        {"notifier": "slack (SLACK_WEBHOOK_URL)", "event": "fail", "status": "delivered",
         "attempts": 1, "at": "2026-12-05T02:30:04+00:00"},
        {"notifier": "webhook (DEPLOY_HOOK_URL)", "event": "fail", "status": "failed",
         "attempts": 3, "error": "HTTP 503 after 3 attempts", "at": "2026-12-05T02:30:05+00:00"},
    ]  # fmt: skip
    words = text_of(render_html(doc))
    assert "Notifications" in words
    assert "slack (SLACK_WEBHOOK_URL) fail delivered 1" in words
    assert "webhook (DEPLOY_HOOK_URL) fail failed 3 HTTP 503 after 3 attempts" in words
    assert "Notifications" not in text_of(render_html(load(WATCH_1011)))


def test_a_report_read_back_from_json_renders_the_same_page(tmp_path: Path) -> None:
    report = check_report()
    report.traces.session("ws", _session(ok=False, code=1011), age=7.0)
    path = tmp_path / "r.json"
    path.write_text(render_json(report), encoding="utf-8")
    assert render_html(read_report(path)) == render_html(report.to_dict())


INJECTIONS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "</text><foreignObject><iframe src=https://evil.example/></iframe></foreignObject>",
    "</style><link rel=stylesheet href=https://evil.example/x.css>",
    "javascript:alert(3)",
    "{{ 7*7 }}{% raw %}",
)


def hostile_report() -> dict[str, Any]:
    """A report whose every text a service, a log line or a JSON file can set is hostile."""
    bad = " | ".join(INJECTIONS)
    report = rollout_report()
    report.command = "watch"
    report.revision = report.service = report.message = report.error = bad
    report.reasons, report.notes, report.deciding, report.policies = [bad], [bad], [bad], [bad]
    report.traffic_after = {bad: 100}
    report.rules = [
        {
            "rule": bad,
            "kind": bad,
            "status": '" onclick="alert(4)',
            "observed": bad,
            "threshold": bad,
            "counts": bad,
            "evidence": [bad],
            "message": bad,
        }
    ]
    report.steps[1].reasons = [bad]
    report.watch = {"revision": bad, "rollbacks": [{"revision": bad}], "degraded": [{"why": bad}]}
    report.timeline.add(bad, detail=bad)
    fields = ("notifier", "event", "status", "attempts", "error", "at")
    report.add_notification(dict.fromkeys(fields, bad))
    trace = SessionTrace(
        kind="websocket",
        ok=False,
        end=7.0,
        handshake=0.01,
        events=((0.02, bad), (0.03, "agent_started")),
        hold=0.1,
        close_code=1011,
        closed_by=bad,
        cause=bad,
        detail=bad,
        user=bad,
        session=bad,
    )
    report.traces.session(bad, trace, age=7.0)
    from datetime import UTC, datetime

    report.traces.log_match(bad, datetime.now(UTC), severity=bad, text=bad, revision=bad)
    report.traces.metric_point(bad, bad, value=1.0, end=None, error=bad)
    return report.to_dict()


def test_text_from_the_service_logs_or_a_file_is_never_markup() -> None:
    page = render_html(hostile_report())
    tags = parsed(page)
    assert {tag for tag, _ in tags} <= ALLOWED_TAGS, {tag for tag, _ in tags} - ALLOWED_TAGS
    for tag, attrs in tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "src" not in attrs, (tag, attrs)
        if "href" in attrs:
            assert attrs["href"] == "data:,", (tag, attrs)
    assert "<script" not in page.lower()
    assert "evil.example/x.css>" not in page
    # shown, as text, everywhere it was put
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 15
    assert "{{ 7*7 }}" in page  # data, not a template


def test_the_page_loads_nothing_and_runs_nothing() -> None:
    page = render_html(load(CHECK_1011))
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    assert "default-src 'none'" in csp.group(1)
    assert "script" not in csp.group(1)  # no exception for scripts: none may run
    for tag, attrs in parsed(page):
        assert "src" not in attrs, tag
        assert attrs.get("href") in (None, "data:,"), tag
    assert "@import" not in page
    assert "url(" not in page
    assert "<script" not in page


def _session(*, ok: bool, code: int = 1000, n: int = 0) -> SessionTrace:
    return SessionTrace(
        kind="websocket",
        ok=ok,
        end=7.0,
        handshake=0.01,
        events=tuple((0.02 + i / 100, f"event_{i}") for i in range(5)),
        hold=0.1,
        hold_wanted=60.0,
        close_code=code,
        closed_by="server",
        closed_at=7.0,
        cause=None if ok else "close_code",
        detail="" if ok else f"close code {code} (internal error) after 7.0 s during the hold",
        user=f"user-{n % 5}",
        session=f"{n:016x}",
    )


def test_a_ten_thousand_session_run_renders_to_a_bounded_page() -> None:
    """Three rules of 10,000 sessions each, thousands of log lines and events: a bounded page."""
    report = check_report()
    for n in range(10_000):
        report.timeline.add("first_failure_seen" if n == 500 else "tick", n=n)
        for rule in ("ws-a", "ws-b", "ws-c"):
            report.traces.session(rule, _session(ok=n % 7 != 0, code=1011, n=n), age=7.0)
        report.traces.metric_point("p99", "latency", value=n / 1000, end=None, requests=n)
    doc = report.to_dict()
    doc["timeline"] = doc["timeline"][:200]  # a check's timeline is its events: dozens
    size = len(render_html(doc).encode())
    assert size < 900_000, size
    assert len(json.dumps(doc["traces"])) < 150_000


def test_the_report_command_renders_a_saved_report(tmp_path: Path) -> None:
    out = tmp_path / "site" / "report.html"
    result = CliRunner().invoke(cli, ["report", str(CHECK_1011), "--html", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    assert out.read_text(encoding="utf-8") == render_html(load(CHECK_1011))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json", "is not JSON"),
        ('{"rules": []}', "is not a deploy-guard report (no verdict)"),
        ("[1, 2]", "is not a deploy-guard report"),
    ],
)
def test_the_report_command_refuses_what_is_not_a_report(
    tmp_path: Path, content: str, words: str
) -> None:
    source = tmp_path / "in.json"
    source.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(cli, ["report", str(source), "--html", str(tmp_path / "o.html")])
    assert result.exit_code == 2
    assert words in result.output
    assert not (tmp_path / "o.html").exists()


def test_the_report_command_says_when_it_cannot_read_or_write(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "none.json"), "--html", "o.html"])
    assert result.exit_code == 2
    assert "cannot read the report" in result.output
    result = CliRunner().invoke(cli, ["report", str(CHECK_1011), "--html", str(tmp_path)])
    assert result.exit_code == 2
    assert f"cannot write {tmp_path}" in result.output


def test_a_page_that_cannot_render_never_costs_the_json_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_document: dict[str, Any]) -> str:
        raise RuntimeError("a bug in the page")

    monkeypatch.setattr(html_module, "render_html", broken)
    report, page = tmp_path / "r.json", tmp_path / "r.html"
    write_report_files(check_report(), str(report), None, str(page))
    assert json.loads(report.read_text())["verdict"] == "fail"
    assert not page.exists()
    assert "could not render the HTML report" in capsys.readouterr().err


def test_write_html_writes_atomically_from_a_report_or_its_document(tmp_path: Path) -> None:
    report = check_report()
    one = write_html(report, tmp_path / "a" / "one.html")
    two = write_html(report.to_dict(), tmp_path / "two.html")
    assert one.read_text() == two.read_text()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["one.html"]  # no temporary left


def test_the_templates_ship_with_the_package() -> None:
    """pyproject's package data names every template (a wheel without them renders nothing)."""
    import tomllib
    from fnmatch import fnmatch

    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["deploy_guard"]
    package = root / "src" / "deploy_guard"
    templates = sorted((package / "report" / "templates").iterdir())
    assert {t.name for t in templates} >= {"report.html.j2", "picture.svg.j2", "style.css"}
    for template in templates:
        relative = template.relative_to(package).as_posix()
        assert any(fnmatch(relative, p) for p in patterns), relative


def test_a_live_page_of_a_run_not_over_heads_running_not_its_placeholder_verdict() -> None:
    """Mid-run the report's verdict and exit code are defaults (inconclusive, 3), not news."""
    running = CheckReport(service="chat", revision="chat-00002-bbb").to_dict()
    assert running["finished_at"] == ""
    live = render_html(running, live=True)
    assert 'id="verdict">RUNNING<' in live
    assert "still running: no verdict or exit code yet" in live
    assert "exit code 3" not in live
    assert "INCONCLUSIVE" not in live
    saved = render_html(running)  # `deploy-guard report`: the document as it is
    assert 'id="verdict">INCONCLUSIVE<' in saved
    finished = json.loads(CHECK_1011.read_text())
    assert render_html(finished, live=True) == render_html(finished)  # over: the verdict
