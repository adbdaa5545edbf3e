"""The fault matrix: every test marked ``@pytest.mark.fault(area, case, outcome)``.

Each marked test is one row: a hostile input, an API fault, a race, a signal or a
real Google Cloud behaviour (``area``), what happens (``case``) and what the guard
or the emulator must do about it (``outcome``). The rows are read from the test
sources with :mod:`ast` (no import, no collection), so the matrix is cheap to
build and cannot list a test that does not exist.

``docs/fault-matrix.md`` is this matrix rendered, and the README's reliability
section quotes its counts; ``tests/test_fault_matrix.py`` keeps both true.
Regenerate them after adding a marked test::

    .venv/bin/python tests/fault_matrix.py --write

Run only the matrix's tests with ``pytest -m fault``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DOC = ROOT / "docs" / "fault-matrix.md"
README = ROOT / "README.md"

#: The areas a row may name, in the order the matrix lists them.
AREAS = {
    "traffic": "Traffic writes and races (Cloud Run Admin)",
    "emulator": "The emulator as unkind as Google Cloud",
    "logs": "Cloud Logging",
    "metrics": "Cloud Monitoring",
    "probes": "Probes against hostile servers",
    "policy": "Hostile policy files",
    "secrets": "Secrets in every output channel",
    "notify": "Notifications: receivers that refuse, hang or vanish",
    "signals": "Signals",
    "cli": "Command line",
}

#: The README lines between these markers are generated.
BEGIN = "<!-- fault-matrix:begin (tests/fault_matrix.py --write) -->"
END = "<!-- fault-matrix:end -->"


@dataclass(frozen=True)
class Row:
    area: str
    case: str
    outcome: str
    test: str  # tests/x/test_y.py::test_name (or ::Class::test_name)


class MatrixError(Exception):
    """A marker that cannot be a row (wrong arguments, unknown area, not on a test)."""


def _is_fault_marker(node: ast.expr) -> ast.Call | None:
    """``pytest.mark.fault(...)`` (or ``mark.fault(...)``) -> the call."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "fault":
        base = func.value
        if isinstance(base, ast.Attribute) and base.attr == "mark":
            return node
        if isinstance(base, ast.Name) and base.id == "mark":
            return node
    return None


def _strings(call: ast.Call, where: str) -> tuple[str, str, str]:
    args = call.args
    if len(args) != 3 or call.keywords:
        raise MatrixError(f"{where}: fault() takes three strings: area, case, outcome")
    values = []
    for arg in args:
        if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str) or not arg.value:
            raise MatrixError(f"{where}: fault() arguments must be non-empty string literals")
        values.append(" ".join(arg.value.split()))
    area, case, outcome = values
    if area not in AREAS:
        raise MatrixError(f"{where}: unknown area {area!r}; use one of {', '.join(AREAS)}")
    return area, case, outcome


def _rows_in(path: Path) -> list[Row]:
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    rows: list[Row] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}::")
                continue
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                call = _is_fault_marker(deco)
                if call is None:
                    continue
                where = f"{rel}:{deco.lineno}"
                if not node.name.startswith("test") or (prefix and not prefix.startswith("Test")):
                    raise MatrixError(f"{where}: a fault marker must be on a test function")
                area, case, outcome = _strings(call, where)
                rows.append(Row(area, case, outcome, f"{rel}::{prefix}{node.name}"))

    visit(tree.body, "")
    return rows


def collect() -> list[Row]:
    """Every marked test, in area order, then by test id."""
    rows: list[Row] = []
    for path in sorted(TESTS.rglob("test_*.py")):
        rows.extend(_rows_in(path))
    order = list(AREAS)
    return sorted(rows, key=lambda r: (order.index(r.area), r.test, r.case))


def cases(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows grouped by (area, case): one case may be proven at several levels (the
    probe against a server, the judge from plain data), always with one outcome."""
    grouped: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        mine = grouped.setdefault((row.area, row.case), [])
        if mine and mine[0].outcome != row.outcome:
            raise MatrixError(
                f"case {row.case!r} has two outcomes: {mine[0].outcome!r} ({mine[0].test}) "
                f"and {row.outcome!r} ({row.test})"
            )
        mine.append(row)
    return grouped


def counts(rows: list[Row]) -> Counter[str]:
    """Cases (not tests) per area."""
    return Counter(area for area, _case in cases(rows))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_doc(rows: list[Row]) -> str:
    """docs/fault-matrix.md: one table per area."""
    grouped = cases(rows)
    lines = [
        "# The fault matrix",
        "",
        "Generated by `tests/fault_matrix.py --write` from the tests marked",
        "`@pytest.mark.fault(area, case, outcome)`; `tests/test_fault_matrix.py` fails when it is",
        "stale. Each row is a case with the tests that fail if the guard or the emulator stops",
        "behaving as the outcome says. Run them all with `.venv/bin/pytest -m fault`.",
        "",
        f"{len(grouped)} cases in {len(counts(rows))} areas, proven by {len(rows)} tests.",
    ]
    for area, title in AREAS.items():
        mine = [(case, tests) for (a, case), tests in grouped.items() if a == area]
        if not mine:
            continue
        lines += [
            "",
            f"## {title} ({len(mine)})",
            "",
            "| case | outcome | tests |",
            "|---|---|---|",
        ]
        for case, tests in mine:
            names = "<br>".join(f"`{t.test}`" for t in tests)
            lines.append(f"| {_cell(case)} | {_cell(tests[0].outcome)} | {names} |")
    return "\n".join(lines) + "\n"


def render_readme_block(rows: list[Row]) -> str:
    """The README's summary: counts per area, between the markers."""
    c = counts(rows)
    lines = [BEGIN, "| area | cases |", "|---|---|"]
    for area, title in AREAS.items():
        if c[area]:
            lines.append(f"| {title} | {c[area]} |")
    lines += [f"| **all** | **{sum(c.values())}** |", END]
    return "\n".join(lines)


_BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)


def readme_block(text: str) -> str | None:
    m = _BLOCK.search(text)
    return m.group(0) if m else None


def write() -> None:
    rows = collect()
    DOC.write_text(render_doc(rows), encoding="utf-8")
    text = README.read_text(encoding="utf-8")
    if readme_block(text) is None:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block to fill")
    README.write_text(_BLOCK.sub(lambda _m: render_readme_block(rows), text), encoding="utf-8")


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        write()
        print(f"wrote {DOC.relative_to(ROOT)} and the README summary")
        return 0
    if argv:
        print("usage: python tests/fault_matrix.py [--write]", file=sys.stderr)
        return 2
    print(render_doc(collect()), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
