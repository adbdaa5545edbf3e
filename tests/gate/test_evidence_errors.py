"""An evidence source that raises is never swallowed: its rules end as errors, with the cause.

Sources are injected through the gate's own seams
(:class:`deploy_guard.analysis.sources.ProbeSource` and the log source of
:class:`deploy_guard.analysis.sources.Sources`); the rest is the emulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from deploy_guard.analysis.sources import Sources
from deploy_guard.measurements import LogMeasurement, Measurement, ProbeMeasurement
from deploy_guard.policy.model import Rule
from deploy_guard.probes.target import Target
from gates import build_gate


class _CrashingProbes:
    """Reports each rule once, then raises, as a bug in the probe code would."""

    def stream(self, rules: Sequence[Rule], target: Target) -> AsyncIterator[Measurement]:
        return self._run(rules)

    async def _run(self, rules: Sequence[Rule]) -> AsyncIterator[Measurement]:
        for rule in rules:
            yield ProbeMeasurement(rule=rule.name, kind=rule.kind, planned=2, done=0, succeeded=0)
        raise RuntimeError("session bookkeeping broke")


class _CrashingLogs:
    """A log source whose pass raises something the gcp seam never maps."""

    async def measure(
        self, *, complete: bool, deadline: float | None = None
    ) -> list[LogMeasurement]:
        raise KeyError("textPayload")


def _swap(gate: Any, **replace: Any) -> None:
    real = gate.sources

    def build(scope: Any) -> Sources:
        sources: Sources = real(scope)
        for name, source in replace.items():
            setattr(sources, name, source)
        return sources

    gate.sources = build


@pytest.mark.fault("probes", "probe source raises mid-check", "rule error with cause, logged")
async def test_a_probe_source_that_raises_is_the_rules_error(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    gate = build_gate(gcp_clients, emulator, cand)
    _swap(gate, probes=_CrashingProbes())
    with capture_logs() as events:
        report = await gate.run()
    rules = {r["rule"]: r for r in report.rules}
    assert rules["chat-held"]["status"] == "error"
    cause = "the probes source failed: RuntimeError: session bookkeeping broke"
    assert rules["chat-held"]["message"].startswith(cause)
    assert "never measured" not in rules["chat-held"]["message"]
    assert any(cause in reason for reason in report.reasons)
    assert report.exit_code == 3  # the policy's missing_data: inconclusive, nothing changed
    failed = [e for e in events if e["event"] == "evidence_source_failed"]
    assert failed[0]["log_level"] == "error"
    assert failed[0]["source"] == "probes"
    assert failed[0]["rules"] == ["chat-held"]
    assert failed[0]["error"] == cause
    assert report.timeline.first("evidence_source_failed") is not None


@pytest.mark.fault("logs", "log source raises an unmapped exception", "rule error with cause")
async def test_a_log_source_that_raises_is_the_rules_error(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    gate = build_gate(gcp_clients, emulator, cand)
    _swap(gate, logs=_CrashingLogs())
    with capture_logs() as events:
        report = await gate.run()
    rules = {r["rule"]: r for r in report.rules}
    assert rules["chat-held"]["status"] == "pass"  # the probes went on to the end
    assert rules["no-1011-in-logs"]["status"] == "error"
    cause = "the logs source failed: KeyError: 'textPayload'"
    assert rules["no-1011-in-logs"]["message"].startswith(cause)
    assert report.exit_code == 3
    failed = [e for e in events if e["event"] == "evidence_source_failed"]
    assert [(e["source"], e["rules"]) for e in failed] == [("logs", ["no-1011-in-logs"])]
