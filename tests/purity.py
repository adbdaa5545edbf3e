"""Read a package's imports from its source: the purity tests of judge/ and strategies/.

Purity by construction: a client, a clock, a socket or a logger creeping into a
decision core would make its answers depend on the world. Reading the imports
(no import, no execution) fails at once when one does.
"""

from __future__ import annotations

import ast
from pathlib import Path


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (``from x import y`` counts as ``x``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    return names


def assert_imports_only(
    package_file: str, stdlib: set[str], ours: tuple[str, ...], *, min_files: int, what: str
) -> set[str]:
    """Each module of the package imports only ``stdlib`` names or ``ours`` prefixes.

    Returns every name seen, so the caller can show the walk really read imports.
    """
    files = sorted(Path(package_file).parent.glob("*.py"))
    assert len(files) >= min_files
    seen: set[str] = set()
    for file in files:
        for name in imports_of(file):
            seen.add(name)
            ok = name in stdlib or name.startswith(ours)
            assert ok, f"{file.name} imports {name}: {what} must stay free of I/O"
    return seen
