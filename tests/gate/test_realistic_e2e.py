"""``deploy-guard check`` against the emulator's realistic profile (Google Cloud's timing).

Cloud Logging lists an entry seconds after it was written, Cloud Monitoring shows
Cloud Run's request metrics per 60 s sample and up to 180 s late, a new revision
is routed a moment after it is Ready, and ListLogEntries can answer an empty page
with a token. These tests run the profile with its durations shrunk (seconds, not
minutes) and show which rules can decide inside a check and which cannot:

- a logs rule sees a line only once it is ingested: a line written at the end of
  the probes needs ``--log-settle`` longer than the ingestion delay, or the last
  pass misses it (a pass that is not a proof);
- a metric rule has no data until the first sample is released (sample period
  plus lag after the requests): a check whose probes end sooner is inconclusive
  for it, one that keeps probing longer decides;
- empty pages with a token change nothing: the reader pages on.

The table in docs/policies.md ("Logs and metrics on Google Cloud's timing")
says the same for real durations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_guard.emulator.realism import Realism
from deploy_guard.exitcodes import ExitCode

#: Google Cloud's profile, shrunk: 2 s ingestion, 1 s samples released 2-3 s late.
SHRUNK = Realism(
    logs_delay_s=2.0,
    metric_sample_period_s=1.0,
    metric_min_lag_s=2.0,
    metric_max_lag_s=3.0,
    route_delay_s=0.5,
    empty_page_ratio=0.3,
    seed=4,  # its first draws leave pages empty
)
REALISTIC = pytest.mark.parametrize("emulator", [{"realistic": SHRUNK}], indirect=True)

HEADER = """\
version: 1
name: {name}
services: ["chat*"]
on_fail: rollback
on_inconclusive: hold
on_pass: none
fail_fast: true
timeout: 60s
evidence_window: 2m
auth: {{id_token: none}}
rules:
"""
ONE_CHAT = """\
  - name: one-chat
    kind: websocket
    websocket:
      path: /ws/chat
      scenario:
        - send: {json: {type: message, user_id: "{user}", session_id: "{session}", text: hi}}
        - expect: [agent_started, agent_thinking, tool_executing, tool_completed, agent_completed]
          timeout: 5s
      hold: HOLD
      sessions: 1
"""
TOOL_ERRORS = """\
  - name: no-tool-errors
    kind: logs
    logs:
      filter: 'severity>=ERROR'
      patterns: ['tool call failed']
      max_count: 0
"""
HEALTH_503 = """\
  - name: health-answers
    kind: http
    http:
      path: /health
      requests: 5
      concurrency: 1
      expect: {status: [503]}
"""
ERROR_RATE = """\
  - name: error-rate
    kind: metric
    missing_data: inconclusive
    metric: {type: error_rate, window: 5m, min_requests: 1, max: 1%}
"""


def _policy(tmp_path: Path, name: str, *rules: str, hold: str = "0s") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEADER.format(name=name) + "".join(rules).replace("HOLD", hold))
    return str(path)


def _rules(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["rule"]: r for r in report["rules"]}


@REALISTIC
@pytest.mark.fault(
    "logs",
    "ERROR line still being ingested when the probes end (realistic delay)",
    "missed without --log-settle; fail with it",
)
def test_a_line_written_as_the_probes_end_needs_log_settle_beyond_the_ingestion_delay(
    chat: Any, check: Any, emulator: Any, tmp_path: Path
) -> None:
    policy = _policy(tmp_path, "one-run", ONE_CHAT, TOOL_ERRORS)
    chat.first()
    missed = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    code, report = check(missed, policy=policy)
    # The last pass ran before the line could be listed: nothing to count, a pass that
    # proves nothing. This is what a check without --log-settle does on Google Cloud.
    assert code == ExitCode.PASS, report
    assert _rules(report)["no-tool-errors"]["observed"] == 0

    seen = chat.candidate({"CHAT_ERROR_LOGS": "1"})
    code, report = check(seen, "--log-settle", "3s", policy=policy)
    assert code == ExitCode.FAIL, report
    assert report["deciding_rules"] == ["no-tool-errors"]
    assert "tool call failed" in " ".join(_rules(report)["no-tool-errors"]["evidence"])
    assert emulator.logs.empty_pages_served > 0  # and the reader paged past them


@REALISTIC
@pytest.mark.fault(
    "metrics",
    "5xx requests whose sample is not released before the probes end",
    "inconclusive (no data); decided by a check that probes past the lag",
)
def test_a_metric_rule_decides_only_when_the_probes_outlast_sampling_and_lag(
    chat: Any, check: Any, tmp_path: Path
) -> None:
    chat.first()
    cand = chat.candidate({"CHAT_HEALTH_STATUS": "503"})
    short = _policy(tmp_path, "short", HEALTH_503, ERROR_RATE)
    code, report = check(cand, policy=short)
    assert code == ExitCode.INCONCLUSIVE, report
    rate = _rules(report)["error-rate"]
    assert rate["status"] == "no_data", rate

    # Probing for longer than a sample period plus the largest lag (1 s + 3 s here;
    # 60 s + 180 s on Google Cloud) lets the last metric pass see the 503s.
    longer = _policy(tmp_path, "longer", HEALTH_503, ONE_CHAT, ERROR_RATE, hold="4.5s")
    code, report = check(cand, policy=longer)
    assert code == ExitCode.FAIL, report
    assert report["deciding_rules"] == ["error-rate"]
    assert _rules(report)["error-rate"]["observed"] == 1.0
