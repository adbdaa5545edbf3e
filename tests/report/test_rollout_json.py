"""A rollout's ``--report`` document: its ``command`` and ``steps`` fields, and no secret.

``to_dict()`` is the one place secrets are scrubbed for every renderer, so a
secret anywhere in a stage (a reason, the stop text, a rule's message or
evidence), even one registered after the stage was filled, must come out
redacted in the JSON, the Markdown and the terminal view alike.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from deploy_guard import log as guard_log
from deploy_guard.report.json import render_json, write_json
from deploy_guard.report.markdown import render_markdown
from deploy_guard.report.model import CheckReport, StepRecord
from deploy_guard.report.terminal import TerminalView, render, summary
from report.samples import BASE, CANDIDATE, SECRET, rollout_report

#: Registered as a secret only after the report was filled (a token read late).
LATE = "ya29.rollout-step-token-" + "Qm9kZWdhIGNvZmZlZQ" * 2
STEP_FIELDS = [
    "index",
    "phase",
    "percent",
    "duration_s",
    "status",
    "traffic_written",
    "traffic_verified",
    "started_at",
    "finished_at",
    "reasons",
    "rules",
    "stopped",
]


def test_a_rollout_document_adds_command_and_steps(tmp_path: Path) -> None:
    doc = json.loads(write_json(rollout_report(), tmp_path / "report.json").read_text())
    assert doc["command"] == "rollout"
    assert [list(step) for step in doc["steps"]] == [STEP_FIELDS] * 4
    assert [(s["phase"], s["percent"], s["status"]) for s in doc["steps"]] == [
        ("tag", 0, "pass"),
        ("step", 10, "pass"),
        ("step", 50, "fail"),
        ("promote", 100, "pending"),
    ]
    stopped = doc["steps"][2]
    assert stopped["duration_s"] == 300.0
    assert stopped["traffic_written"] == stopped["traffic_verified"] == {BASE: 50, CANDIDATE: 50}
    assert stopped["stopped"] == "error-rate failed (fail_fast): traffic put back, verified"
    assert stopped["rules"][1]["rule"] == "error-rate"
    assert stopped["rules"][1]["observed"] == 0.041  # raw, as the JSON keeps figures
    assert doc["steps"][3]["traffic_written"] == {}
    # the check's fields are all still there
    assert {"verdict", "action", "exit_code", "traffic_before", "traffic_after", "rules"} <= set(
        doc
    )


def test_a_check_document_has_neither_field() -> None:
    doc = CheckReport(revision="chat-00002-bbb").to_dict()
    assert "command" not in doc
    assert "steps" not in doc


def _secret_in_every_part_of_a_step() -> CheckReport:
    report = rollout_report()
    step = report.steps[2]
    step.reasons.append(f"the proxy echoed {LATE}")
    step.stopped = f"error-rate failed; token {LATE} in the log"
    step.rules[1]["message"] = f"500 with body {LATE}"
    step.rules[1]["evidence"].append(f"GET /x?key={LATE}")
    report.steps.insert(
        3, StepRecord(index=3, phase="step", percent=90, reasons=[f"{LATE} said no"])
    )
    return report


def _terminal(report: CheckReport) -> str:
    live = io.StringIO()
    Console(file=live, width=200, color_system=None).print(render(report), summary(report))
    view = TerminalView(
        console=Console(file=io.StringIO(), width=200), out=Console(file=io.StringIO(), width=200)
    )
    view.final(report)
    return live.getvalue() + view.console.file.getvalue() + view.out.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.fault(
    "secrets",
    "a rollout step's reason, stop text or rule quoting a secret (known before or registered late)",
    "redacted in the JSON steps, the Markdown and the terminal view",
)
def test_a_secret_in_a_step_is_scrubbed_in_every_renderer() -> None:
    report = _secret_in_every_part_of_a_step()  # filled before LATE was known to be secret
    guard_log.register_secret(LATE)
    outputs = {
        "json": render_json(report),
        "markdown": render_markdown(report),
        "terminal": _terminal(report),
    }
    for name, text in outputs.items():
        assert SECRET not in text, name
        assert LATE not in text, name
        assert LATE[20:40] not in text, name
        assert "[redacted]" in text, name
    steps = json.loads(outputs["json"])["steps"]
    assert steps[2]["reasons"][-1] == "the proxy echoed [redacted]"
    assert steps[2]["stopped"] == "error-rate failed; token [redacted] in the log"
    assert steps[2]["rules"][1]["evidence"][-1] == "GET /x?key=[redacted]"
    assert steps[3]["reasons"] == ["[redacted] said no"]
    assert "the proxy echoed [redacted]" in outputs["terminal"]
