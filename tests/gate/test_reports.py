"""Report renderers: JSON fields, Markdown, the terminal view, no secrets; a real rollout's too."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from deploy_guard.report.json import write_json
from deploy_guard.report.markdown import render_markdown, write_markdown
from deploy_guard.report.model import CheckReport, Timeline
from deploy_guard.report.terminal import render, summary

SECRET = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.sig"


@dataclass(frozen=True)
class FakeResult:  # the judge's RuleResult shape, as plain data
    rule: str
    kind: str
    status: str
    observed: float | None
    threshold: str
    counts: str
    evidence: tuple[str, ...]
    message: str


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def sample_report() -> CheckReport:
    clock = Clock()
    report = CheckReport(revision="chat-00002-bbb", timeline=Timeline(clock))
    report.service, report.project, report.region = "chat", "p", "r"
    report.timeline.add("check_started")
    clock.now += 7.2
    report.timeline.add("first_failure_seen", rule="ws", token=SECRET)
    clock.now += 0.3
    report.timeline.add("rollback_verified", traffic="chat-00001-aaa 100%")
    report.set_rules(
        [
            FakeResult(
                "ws",
                "websocket",
                "fail",
                0.0,
                "1011 closes <= 0",
                "1 of 5 sessions closed with 1011, limit 0",
                (f"GET /ws?access_token={SECRET}",),
                f"Authorization: Bearer {SECRET}",
            )
        ]
    )
    report.verdict, report.action, report.exit_code = "fail", "rolled_back", 1
    report.traffic_before = {"chat-00001-aaa": 100}
    report.traffic_after = {"chat-00001-aaa": 100}
    report.baseline = ["chat-00001-aaa"]
    report.api_calls = {"logging": {"ListLogEntries": 2}, "run": {"GetService": 4}}
    return report


def test_json_report_has_the_contract_fields_and_no_secret(tmp_path: Path) -> None:
    path = write_json(sample_report(), tmp_path / "out" / "report.json")
    text = path.read_text()
    doc = json.loads(text)
    for key in (
        "verdict",
        "action",
        "exit_code",
        "service",
        "revision",
        "baseline",
        "traffic_before",
        "traffic_after",
        "rules",
        "api_calls",
        "timeline",
    ):
        assert key in doc
    assert doc["rules"][0]["counts"] == "1 of 5 sessions closed with 1011, limit 0"
    assert doc["api_calls_total"] == 6
    assert SECRET not in text


def test_timeline_measures_between_events() -> None:
    report = sample_report()
    assert report.timeline.between("first_failure_seen", "rollback_verified") == 0.3
    assert report.timeline.between("first_failure_seen", "never") is None


def test_markdown_summary(tmp_path: Path) -> None:
    report = sample_report()
    text = render_markdown(report)
    assert "FAIL" in text
    assert "traffic rolled back" in text
    assert "| `ws` | websocket | fail |" in text
    assert "first_failure_seen" in text
    assert SECRET not in text
    assert write_markdown(report, tmp_path / "s.md").read_text() == text


def test_markdown_rounds_observed_figures_and_json_keeps_them() -> None:
    report = sample_report()
    report.rules[0]["observed"] = 0.008932236999498855  # a session success ratio
    assert "| fail | 0.8932% |" in render_markdown(report)
    assert report.to_dict()["rules"][0]["observed"] == 0.008932236999498855


@pytest.mark.parametrize(
    ("kind", "status", "observed", "threshold", "shown"),
    [
        ("http", "pass", 0.95, "success ratio >= 90%", "95%"),
        ("metric", "fail", 0.0123, "error rate <= 1%", "1.23%"),
        ("metric", "pass", 0.82, "p99 latency <= 1s", "820ms"),
        ("metric", "no_data", 0.0, "error rate <= 1%", ""),  # too few requests: no "0"
        ("metric", "no_data", None, "p99 latency <= 1s", ""),
        ("logs", "fail", 3.0, "matches <= 0", "3"),
        ("logs", "pass", 0.5, "matches/min <= 2", "0.50/min"),
    ],
)
def test_markdown_shows_observed_figures_in_their_unit(
    kind: str, status: str, observed: float | None, threshold: str, shown: str
) -> None:
    report = sample_report()
    report.set_rules([FakeResult("r", kind, status, observed, threshold, "counts", (), "")])
    assert f"| {status} | {shown} | {threshold} |" in render_markdown(report)


def test_terminal_view_renders_rules_and_summary() -> None:
    console = Console(record=True, width=160)
    console.print(render(sample_report()))
    console.print(summary(sample_report()))
    out = console.export_text()
    assert "ws" in out
    assert "1 of 5 sessions closed with 1011" in out
    assert "action=rolled_back" in out
    assert SECRET not in out


def test_live_view_keeps_pending_rules_quiet_and_event_lines_within_the_width() -> None:
    report = sample_report()
    report.set_rules(
        [
            FakeResult(
                "error-rate",
                "metric",
                "pending",
                None,
                "error rate <= 1%",
                "0 requests in 1.2s; min_requests 20",
                (),
                "only 0 requests reached revision chat-00002-bbb; is it receiving traffic?",
            )
        ]
    )
    report.timeline.add("evidence_started", rules=[f"rule-{n}" for n in range(40)])
    console = Console(record=True, width=80)
    console.print(render(report, width=80))
    live = console.export_text()
    assert "0 requests in 1.2s" in live
    assert "is it receiving traffic" not in live  # still collecting: no alarm yet
    assert "running" in live
    assert all(len(line) <= 80 for line in live.splitlines())
    assert "rule-39" not in live  # the long detail is cut, not wrapped
    report.finished_at = "2026-11-25T19:00:00+00:00"
    console = Console(record=True, width=80)
    console.print(render(report, width=80))
    assert "is it receiving traffic" in console.export_text()


def test_notes_reach_every_renderer_and_an_error_reads_as_error() -> None:
    report = sample_report()
    report.notes = ["rollback target chat-00001-aaa: the last known good revision"]
    assert report.to_dict()["notes"] == report.notes
    assert "- **Note**: rollback target chat-00001-aaa" in render_markdown(report)
    console = Console(record=True, width=160)
    console.print(summary(report))
    assert "note: rollback target chat-00001-aaa" in console.export_text()
    report.verdict, report.exit_code = "error", 2
    console.print(summary(report))
    assert "ERROR  action=rolled_back  exit=2" in console.export_text()


class Frames:
    """A progress view that keeps every redraw as text, as the terminal would show it."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def changed(self, report: CheckReport) -> None:
        console = Console(file=io.StringIO(), width=120, color_system=None)
        console.print(render(report, width=120))
        self.frames.append(console.file.getvalue())  # type: ignore[attr-defined]


async def test_a_real_rollouts_live_view_and_summary_show_every_stage(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    from deploy_guard.runtime.rollout import RolloutGate, RolloutOptions
    from gates import build_gate

    base = chat.first()
    cand = chat.candidate(tag=None)
    frames = Frames()
    gate = build_gate(
        gcp_clients,
        emulator,
        cand,
        policy=Path(__file__).parent / "policies" / "chat-rollout.yaml",
        progress=frames,
        gate_class=RolloutGate,
        options_class=RolloutOptions,
    )
    report = await gate.run()
    assert (report.action, report.exit_code) == ("promoted", 0), report.message
    # the live view followed the walk: each stage was shown running, with its clock
    for line in (
        "tag: probes through the tag URL",
        "step 1/2: 10 % for 2s",
        "step 2/2: 50 % for 2s",
    ):
        assert any(f"\n{line}" in frame for frame in frames.frames), line
    assert any(re.search(r"step 1/2 +10 % +10 % +10 % +running", f) for f in frames.frames)
    assert any(
        re.search(r"\nstep 1/2 +10 % +10 % +10 % +pass +\S+ of 2s +\n", f) for f in frames.frames
    )
    text = render_markdown(report)
    assert text.startswith(f"## deploy-guard rollout: ✅ PASS — `{cand}` (candidate promoted")
    assert f"| promote | 100 % | `{cand}` 100% | ✅ as written | pass |" in text
    assert f"| step 1/2 | 10 % | `{base}` 90%, `{cand}` 10% | ✅ as written | pass |" in text
    assert "Completed: 100 % on the candidate" in text
    assert "**step 2/2** (50 %): ✅ pass" in text


def test_a_rollout_stopped_at_its_tag_stage_says_so_in_its_summary(
    chat: Any, emulator_env: dict[str, str], tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from deploy_guard.cli import cli

    chat.first()
    cand = chat.candidate({"CHAT_FAIL_1011_AFTER": "1"}, tag=None)
    policy = Path(__file__).parent / "policies" / "chat-rollout.yaml"
    summary_md = tmp_path / "summary.md"
    args = ["rollout", "--revision", cand, "--policy", str(policy), "--summary", str(summary_md)]
    result = CliRunner().invoke(cli, [*args, "--log-interval", "0.5s"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    text = summary_md.read_text()
    assert "| ❌ | tag | 0 % | (none: tag URL only) |  | fail |" in text
    assert "| ⏳ | step 1/2 | 10 % |  |  | pending | 2s planned |  |" in text
    where = text.split("### Where it stopped\n\n")[1].splitlines()[0]
    assert where.startswith("At **tag** (0 %), ❌ fail: ")
    assert "`chat-golden-path` fail" in text
