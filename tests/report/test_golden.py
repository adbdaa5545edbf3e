"""A check's report renders byte for byte as it did before rollouts existed.

The files in ``golden/`` were written by the renderers of main before the
rollout views were added; a check's JSON, Markdown and terminal view (live and
final, colours included) must not move by one byte.
"""

from __future__ import annotations

import pytest

from report.golden import GOLDEN, RENDERINGS, rendered


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_a_checks_renderings_are_unchanged(name: str) -> None:
    assert rendered()[name] == (GOLDEN / name).read_text(encoding="utf-8")


def test_a_check_report_has_no_rollout_fields() -> None:
    doc = rendered()["check.json"]
    assert '"steps"' not in doc
    assert '"command"' not in doc
