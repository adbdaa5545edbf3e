"""``--report FILE.json``: the machine-readable result of a check.

The document's top-level fields are an interface (pipelines read them):
``verdict``, ``action``, ``exit_code``, ``service``, ``revision``, ``baseline``,
``traffic_before``, ``traffic_after``, ``rules``, ``api_calls``, ``timeline``;
a rollout's document adds ``command`` and ``steps`` (one object per stage: traffic
written and verified, status, reasons, rules, why it stopped there). Every field
is described in ``docs/reports.md``.
It is written atomically (a temporary file, then a rename), so a reader never
sees half a report, even when the check is ended by a signal mid-write.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from deploy_guard.report.model import CheckReport


def render_json(report: CheckReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, default=str) + "\n"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json(report: CheckReport, path: str | Path) -> Path:
    return write_atomic(path, render_json(report))
