"""``--serve``: the report live while a check runs; read-only; loopback unless asked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from deploy_guard.errors import ConfigError
from deploy_guard.runtime.status_page import DEFAULT_PORT, serve_address
from gates import POLICIES, build_gate
from waiting import eventually


def test_the_address_is_loopback_unless_cloud_run_or_the_user_says_otherwise() -> None:
    assert serve_address("auto", env={}) == ("127.0.0.1", DEFAULT_PORT)
    assert serve_address("auto", env={"PORT": "8080"}) == ("127.0.0.1", DEFAULT_PORT)
    on_run = {"K_SERVICE": "watcher", "PORT": "8080"}
    assert serve_address("auto", env=on_run) == ("0.0.0.0", 8080)
    assert serve_address("9000", env={}) == ("127.0.0.1", 9000)
    assert serve_address("0.0.0.0:9000", env={}) == ("0.0.0.0", 9000)
    assert serve_address("[::1]:9000", env={}) == ("::1", 9000)
    for bad in ("x", "host:", "127.0.0.1:70000", "-1"):
        with pytest.raises(ConfigError, match="--serve"):
            serve_address(bad, env={})


async def test_a_running_check_is_served_live_and_read_only(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    chat.first()
    cand = chat.candidate()
    gate = build_gate(gcp_clients, emulator, cand, serve="127.0.0.1:0")
    task = asyncio.ensure_future(gate.run())

    def listening() -> Any:
        return next(
            (e for e in gate.report.timeline.events if e.event == "status_page_listening"), None
        )

    try:
        await eventually(lambda: listening() is not None, within=30, what="the page")
        url = listening().detail["url"]
        assert url.startswith("http://127.0.0.1:")
        await eventually(
            lambda: "evidence_started" in [e.event for e in gate.report.timeline.events],
            within=30,
            what="evidence",
        )
        async with httpx.AsyncClient(base_url=url) as client:
            page = await client.get("/")
            health = await client.get("/healthz")
            status = await client.get("/status.json")
            posted = await client.post("/", content=b"rollback")
            missing = await client.get("/nothing")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<meta http-equiv="refresh"' in page.text
        assert cand in page.text
        assert 'id="verdict">RUNNING<' in page.text  # no verdict yet, not "inconclusive"
        assert health.text == "ok\n"
        doc = json.loads(status.text)
        assert doc["revision"] == cand
        assert doc["running"] is True
        assert doc["rules"]  # every rule, pending or judged
        assert posted.status_code == 405
        assert missing.status_code == 404
    finally:
        report = await task
    assert report.exit_code == 0, report.message
    with pytest.raises(httpx.ConnectError):  # the page ends with the check
        async with httpx.AsyncClient() as client:
            await client.get(url)


async def test_the_live_page_renders_in_a_real_browser_and_loads_nothing_else(
    chat: Any, gcp_clients: Any, emulator: Any
) -> None:
    """Opened in headless Chromium while the check runs: it shows the check, and the only
    request is the page itself (no script, font or stylesheet from anywhere).

    The browser starts before the check does (its start is the slow part on a busy
    machine), and the check holds its sessions 8 s: the page is opened while it serves."""
    from report.chromium import chromium, find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it)")
    chat.first()
    cand = chat.candidate()
    async with chromium(binary, serve_local=True) as browser:
        gate = build_gate(
            gcp_clients,
            emulator,
            cand,
            serve="127.0.0.1:0",
            policy=POLICIES / "chat-hold-long.yaml",
        )
        task = asyncio.ensure_future(gate.run())
        try:
            await eventually(
                lambda: "evidence_started" in [e.event for e in gate.report.timeline.events],
                within=30,
                what="evidence",
            )
            url = next(
                e.detail["url"]
                for e in gate.report.timeline.events
                if e.event == "status_page_listening"
            )
            assert not task.done(), "the check ended before the browser opened its page"
            load = await browser.open(url)
            assert set(load.requests) <= {url, "data:,"}, load.requests  # data:, the favicon
            assert load.failed == []
            assert load.errors() == []
            shown = await browser.evaluate("document.body.innerText")
            assert cand in shown
        finally:
            await task
