"""The check's renderings kept byte for byte: ``python tests/report/golden.py --write``.

Run with ``--write`` only when a change to a check's report is meant; the test
``test_golden.py`` compares every rendering with its file.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from deploy_guard.report.json import render_json
from deploy_guard.report.markdown import render_markdown
from deploy_guard.report.model import CheckReport
from deploy_guard.report.terminal import TerminalView, render

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, as pytest sets it
from report.samples import check_report

GOLDEN = Path(__file__).parent / "golden"


def _console() -> Console:
    return Console(
        file=io.StringIO(),
        width=100,
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
    )


def _live(report: CheckReport) -> str:
    console = _console()
    console.print(render(report, width=100))
    return console.file.getvalue()  # type: ignore[attr-defined]


def _final(report: CheckReport) -> str:
    view = TerminalView(console=_console(), out=_console())
    view.final(report)
    return view.console.file.getvalue() + view.out.file.getvalue()  # type: ignore[attr-defined]


RENDERINGS: dict[str, Callable[[CheckReport], str]] = {
    "check.json": render_json,
    "check.md": render_markdown,
    "check-live.ansi": _live,
    "check-final.ansi": _final,
}


def rendered() -> dict[str, str]:
    """Every rendering of :func:`samples.check_report` (a fresh report each time)."""
    return {name: make(check_report()) for name, make in RENDERINGS.items()}


if __name__ == "__main__" and "--write" in sys.argv:
    for name, text in rendered().items():
        (GOLDEN / name).write_text(text, encoding="utf-8")
        print(f"wrote {GOLDEN / name}")
