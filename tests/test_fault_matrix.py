"""The fault matrix stays true: its doc and the README's counts match the marked tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import fault_matrix as fm


def test_every_marker_is_a_well_formed_row() -> None:
    rows = fm.collect()  # raises MatrixError on a malformed marker
    assert rows, "no test carries @pytest.mark.fault"
    fm.cases(rows)  # raises MatrixError when one case is given two outcomes


def test_one_case_has_one_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fm, "ROOT", tmp_path.parent)
    body = (
        "import pytest\n"
        "@pytest.mark.fault('probes', 'c', 'exit 1')\ndef test_a(): pass\n"
        "@pytest.mark.fault('probes', 'c', 'exit 3')\ndef test_b(): pass\n"
    )
    rows = fm._rows_in(_write(tmp_path, body))
    with pytest.raises(fm.MatrixError, match="two outcomes"):
        fm.cases(rows)


def test_the_doc_is_generated_from_the_markers() -> None:
    expected = fm.render_doc(fm.collect())
    assert fm.DOC.read_text(encoding="utf-8") == expected, (
        "docs/fault-matrix.md is stale: run .venv/bin/python tests/fault_matrix.py --write"
    )


def test_the_readme_quotes_the_counts() -> None:
    block = fm.readme_block(fm.README.read_text(encoding="utf-8"))
    assert block is not None, "README.md lost its fault-matrix block"
    assert block == fm.render_readme_block(fm.collect()), (
        "README.md's fault-matrix counts are stale: "
        "run .venv/bin/python tests/fault_matrix.py --write"
    )


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "test_x.py"
    path.write_text(body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "import pytest\n@pytest.mark.fault('nowhere', 'c', 'o')\ndef test_a(): pass\n",
            "unknown area",
        ),
        ("import pytest\n@pytest.mark.fault('policy', 'c')\ndef test_a(): pass\n", "three strings"),
        (
            "import pytest\nX = 'c'\n@pytest.mark.fault('policy', X, 'o')\ndef test_a(): pass\n",
            "string literals",
        ),
        (
            "import pytest\n@pytest.mark.fault('policy', 'c', 'o')\ndef helper(): pass\n",
            "on a test function",
        ),
    ],
)
def test_malformed_markers_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    monkeypatch.setattr(fm, "ROOT", tmp_path.parent)
    with pytest.raises(fm.MatrixError, match=message):
        fm._rows_in(_write(tmp_path, body))


def test_rows_name_class_methods_and_async_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fm, "ROOT", tmp_path.parent)
    body = (
        "import pytest\n"
        "class TestX:\n"
        "    @pytest.mark.fault('traffic', 'a  race', 'exit 4')\n"
        "    async def test_race(self): pass\n"
    )
    [row] = fm._rows_in(_write(tmp_path, body))
    assert row == fm.Row(
        "traffic", "a race", "exit 4", f"{tmp_path.name}/test_x.py::TestX::test_race"
    )
