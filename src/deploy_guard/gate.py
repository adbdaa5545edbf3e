"""The names callers used before the split, re-exported: ``from deploy_guard.gate import Gate``.

The check now lives in layers that data flows through one way (see the README,
"How it works"): :mod:`deploy_guard.runtime` (session and driver),
:mod:`deploy_guard.strategies` (what to do next, pure), :mod:`deploy_guard.analysis`
(sources -> judge -> result), :mod:`deploy_guard.actions` (traffic writes and the
rollback target) and :mod:`deploy_guard.judge` (verdicts, pure). New code
imports from those modules; this one only keeps old imports working.
"""

from __future__ import annotations

from deploy_guard.actions.target import choose_rollback_target, pick_rollback_target
from deploy_guard.analysis.engine import COMPLETION_BOUND
from deploy_guard.analysis.sources import (
    ProbeSource,
    RunnerProbes,
    Scope,
    SourceFactory,
    Sources,
    cloud_sources,
)
from deploy_guard.analysis.streams import POLL_GRACE
from deploy_guard.judge.combine import Judges, worst
from deploy_guard.runtime.driver import TICK, Gate, report_error
from deploy_guard.runtime.options import CheckOptions, NoProgress, Progress
from deploy_guard.runtime.session import TAG_MARGIN, probe_token, tag_holder, warm_imports

__all__ = [
    "COMPLETION_BOUND",
    "POLL_GRACE",
    "TAG_MARGIN",
    "TICK",
    "CheckOptions",
    "Gate",
    "Judges",
    "NoProgress",
    "ProbeSource",
    "Progress",
    "RunnerProbes",
    "Scope",
    "SourceFactory",
    "Sources",
    "choose_rollback_target",
    "cloud_sources",
    "pick_rollback_target",
    "probe_token",
    "report_error",
    "tag_holder",
    "warm_imports",
    "worst",
]
