"""Load a ``bench/`` module from its file, for the tests of its pure helpers.

``bench/`` is not a package the tests import (``tests/`` is on ``sys.path``, the
repository root is not), so a module is loaded by its path; the modules tested
this way import only the standard library at their top level.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    """``bench/<name>.py``, imported once per process."""
    key = f"bench_under_test_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
