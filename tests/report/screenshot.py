"""The README's picture of the HTML report: ``python tests/report/screenshot.py --write``.

Renders the demo's failing check (``reports/check-1011.json``, the report ``make
demo`` writes as ``demo-reports/1-broken-revision.json``) and photographs its top
(the verdict, why, and the sessions picture) in headless Chromium, into
``docs/html-report.png``. Run it when the page's look changes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, as pytest sets it
from deploy_guard.report.html import write_html
from report.chromium import chromium, file_url, find_chromium

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).parent / "reports" / "check-1011.json"
TARGET = ROOT / "docs" / "html-report.png"


async def shoot() -> bytes:
    binary = find_chromium()
    if binary is None:
        raise SystemExit("no Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as folder:
        page = write_html(json.loads(SOURCE.read_text()), Path(folder) / "check.html")
        async with chromium(binary) as browser:
            load = await browser.open(file_url(page), width=1000)
            assert load.errors() == [], load.errors()
            return await browser.screenshot(1000, until="#sessions", scale=0.8)


if __name__ == "__main__" and "--write" in sys.argv:
    TARGET.write_bytes(asyncio.run(shoot()))
    print(f"wrote {TARGET} ({TARGET.stat().st_size // 1024} KiB)")
