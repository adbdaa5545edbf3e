"""Run every ``bench/bench_*.py`` module's ``main()`` in turn (``make bench``).

``python -m bench NAME`` runs ``bench_NAME`` when there is one, else every
module whose name contains NAME (``watch`` is ``bench_watch``, not ``bench_watching``).
Each benchmark prints its own results; ratios against a baseline measured in
the same run are what to compare across machines.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def _picks(arg: str, name: str, names: list[str]) -> bool:
    """Whether ``arg`` selects module ``name``: its exact name if it has one, else a part."""
    if f"bench_{arg}" in names:
        return name == f"bench_{arg}"
    return arg in name


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [n for n in names if not argv or any(_picks(a, n, names) for a in argv)]
    if not wanted:
        print(f"no benchmark matches {argv}; have: {', '.join(names)}", file=sys.stderr)
        return 2
    for name in wanted:
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
