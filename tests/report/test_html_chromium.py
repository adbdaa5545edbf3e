"""The HTML report in a real headless Chromium: it renders, says what failed, loads nothing.

Each page is opened from a file in a browser whose every host name resolves
to nothing, watched over the DevTools protocol (:mod:`report.chromium`): the
only request is the file itself, nothing is logged to the console, no
Content-Security-Policy violation is reported, and the page shows the verdict
and the failing sessions, drawn (visible where they are, in their colour).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from deploy_guard.report.html import render_html, write_html
from deploy_guard.report.model import CheckReport
from report.chromium import Browser, chromium, file_url, find_chromium
from report.samples import rollout_report
from report.test_html import CHECK_1011, WATCH_1011, hostile_report

BROWSER = find_chromium()
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium here (Debian: apt-get install chromium; .ci/run installs it as root)",
)


def _error_report() -> dict[str, Any]:
    report = CheckReport(revision="chat-00002-bbb", service="chat")
    report.verdict, report.exit_code, report.message = "error", 2, "the check did not start"
    report.error = "no policy given: pass --policy FILE (or keep policies in ./policies)"
    return report.to_dict()


async def _open(browser: Browser, path: Path) -> Any:
    load = await browser.open(file_url(path))
    assert load.requests == [file_url(path)], load.requests  # the file, and nothing else
    assert load.failed == []
    assert load.errors() == []
    return load


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_the_failing_checks_page_renders_its_verdict_and_every_1011(tmp_path: Path) -> None:
    assert BROWSER is not None
    page = write_html(json.loads(CHECK_1011.read_text()), tmp_path / "check.html")
    async with chromium(BROWSER) as browser:
        await _open(browser, page)
        assert await browser.evaluate("document.getElementById('verdict').innerText") == "FAIL"
        headline = await browser.evaluate("document.querySelector('ul.headlines').innerText")
        assert "chat-hold: every session (5 of 5) closed with 1011" in headline
        # the picture is laid out at the page's width, and each red marker is drawn,
        # on top, in red: the point under its centre is the marker itself
        box = await browser.evaluate(
            "(() => { const r = document.querySelector('svg.picture').getBoundingClientRect();"
            " return [r.width, r.height]; })()"
        )
        assert box[0] > 900
        assert box[1] > 300
        shown = await browser.evaluate(
            """[...document.querySelectorAll('circle.c1011')].map(c => {
                 const r = c.getBoundingClientRect();
                 const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                 return [top === c, getComputedStyle(c).fill];
               })"""
        )
        assert shown == [[True, "rgb(213, 0, 0)"]] * 5
        rows = await browser.evaluate("document.querySelectorAll('#rules tbody tr').length")
        assert rows == 9
        shot = await browser.screenshot(width=1200)
        width, height = png_size(shot)
        assert width == 1200
        assert height > 2000


@pytest.mark.parametrize("which", ["watch", "rollout", "error", "hostile"])
async def test_every_kind_of_report_opens_cleanly(tmp_path: Path, which: str) -> None:
    assert BROWSER is not None
    documents = {
        "watch": lambda: json.loads(WATCH_1011.read_text()),
        "rollout": lambda: rollout_report().to_dict(),
        "error": _error_report,
        "hostile": hostile_report,
    }
    document = documents[which]()
    page = tmp_path / f"{which}.html"
    page.write_text(render_html(document), encoding="utf-8")
    async with chromium(BROWSER) as browser:
        await _open(browser, page)
        verdict = await browser.evaluate("document.getElementById('verdict').innerText")
        assert verdict == str(document["verdict"]).upper()
        text = await browser.evaluate("document.body.innerText")
        if which == "hostile":
            # the markup in the data is shown as text, and none of it became an element
            assert "<script>alert(1)</script>" in text
            assert (
                await browser.evaluate(
                    "document.querySelectorAll('script, iframe, img, foreignObject').length"
                )
                == 0
            )
        elif which == "rollout":
            assert "stopped at step 2/2 (50 %)" in text
        elif which == "watch":
            assert "Rollbacks" in text
        else:
            assert "no policy given" in text
