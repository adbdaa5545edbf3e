"""A real headless Chromium, driven over the DevTools protocol, to open a report page.

Debian's ``chromium`` package (``.ci/run`` installs it when missing); tests that
need it skip, saying why, where it is absent. The browser runs with every host
name mapped to nothing (``--host-resolver-rules``), and the page is watched
through the protocol itself: every request the page makes
(``Network.requestWillBeSent``), every console message and uncaught exception,
and every browser log entry (a Content-Security-Policy violation is one). A
test then asserts on what the page showed and on what it asked for.

Only what the tests need: open a file, evaluate an expression, take a screenshot.
The protocol runs over the WebSocket the browser prints on start
(``--remote-debugging-port=0``), with the ``websockets`` client the probes use.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

#: Where Debian (and most distributions) put the browser.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Seconds for the browser to start, and for any one protocol answer.
START_TIMEOUT, CALL_TIMEOUT = 30.0, 30.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """The browser's path (``$CHROMIUM`` first), or None when none is installed."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


@dataclass
class PageLoad:
    """What a page did while it loaded: its requests, console messages and errors."""

    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and browser log errors."""
        return (
            [
                f"console.{kind}: {text}"
                for kind, text in self.console
                if kind in ("error", "warning")
            ]
            + [f"exception: {text}" for text in self.exceptions]
            + [f"log {level}: {text}" for level, text in self.log if level in ("error", "warning")]
        )


class Browser:
    """One headless Chromium and one page in it (see the module docstring)."""

    def __init__(self, ws: ClientConnection, session: str) -> None:
        self._ws = ws
        self._session = session
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[asyncio.Queue[dict[str, Any]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._answers.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                for queue in self._listeners:
                    queue.put_nowait(message)

    async def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send one protocol command and return its result (an error answer raises)."""
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[number] = future
        await self._ws.send(json.dumps(message))
        async with asyncio.timeout(CALL_TIMEOUT):
            answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def open(self, url: str, *, width: int = 1200, height: int = 1600) -> PageLoad:
        """Load ``url`` in a ``width`` x ``height`` window; what the page did until its
        ``load`` event (and everything it had queued by then)."""
        load = PageLoad()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            await self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            for domain in ("Page", "Runtime", "Log", "Network"):
                await self.call(f"{domain}.enable")
            await self.call("Page.navigate", url=url)
            async with asyncio.timeout(CALL_TIMEOUT):
                while True:
                    event = await queue.get()
                    _note(load, event)
                    if event.get("method") == "Page.loadEventFired":
                        break
            # What the page queued by its load event has been reported once a round
            # trip through the same connection has come back.
            await self.call("Runtime.evaluate", expression="1")
            while not queue.empty():
                _note(load, queue.get_nowait())
        finally:
            self._listeners.remove(queue)
        return load

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(
        self, width: int = 1200, *, until: str | None = None, scale: float = 1.0
    ) -> bytes:
        """A PNG of the page at ``width`` CSS pixels: all of it, or down to the bottom of
        the element ``until`` selects; ``scale`` shrinks it (a picture for the docs)."""
        bottom = "document.documentElement.scrollHeight"
        if until is not None:
            bottom = f"document.querySelector({json.dumps(until)}).getBoundingClientRect().bottom"
        height = int(await self.evaluate(f"Math.ceil({bottom} + window.scrollY)"))
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=min(height, 16000),
            deviceScaleFactor=1,
            mobile=False,
        )
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": scale}
        shot = await self.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip
        )
        return base64.b64decode(shot["data"])


def _note(load: PageLoad, event: dict[str, Any]) -> None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Network.requestWillBeSent":
        load.requests.append(str(params["request"]["url"]))
    elif method == "Network.loadingFailed":
        load.failed.append(f"{params.get('errorText')} {params.get('blockedReason', '')}".strip())
    elif method == "Runtime.consoleAPICalled":
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        load.console.append((str(params["type"]), text))
    elif method == "Runtime.exceptionThrown":
        load.exceptions.append(json.dumps(params["exceptionDetails"])[:500])
    elif method == "Log.entryAdded":
        entry = params["entry"]
        load.log.append((str(entry["level"]), f"{entry.get('text', '')} {entry.get('url', '')}"))


@contextlib.asynccontextmanager
async def chromium(binary: str, *, serve_local: bool = False) -> AsyncIterator[Browser]:
    """A headless Chromium with one blank page, ended (and its profile removed) on exit.

    No host name resolves; ``serve_local`` leaves 127.0.0.1 reachable (a live page served
    on loopback), every other address still resolves to nothing.
    """
    rules = "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" if serve_local else "MAP * ~NOTFOUND"
    profile = tempfile.mkdtemp(prefix="dg-chromium-")
    args = [
        binary,
        "--headless",
        "--no-sandbox",  # CI runs as root, where the sandbox cannot start
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-dev-shm-usage",
        "--mute-audio",
        f"--host-resolver-rules={rules}",  # no host name resolves: nothing can load
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                line = (await proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError(f"chromium ended before it listened: {''.join(seen)}")
                seen.append(line)
                found = _LISTENING.search(line)
                if found:
                    break
        drain = asyncio.ensure_future(_drain(proc.stderr))
        async with connect(found.group(1), max_size=None, ping_interval=None) as ws:
            browser = Browser(ws, "")
            browser._reader = asyncio.ensure_future(browser._read())
            target = await browser.call("Target.createTarget", session=False, url="about:blank")
            attached = await browser.call(
                "Target.attachToTarget", session=False, targetId=target["targetId"], flatten=True
            )
            browser._session = attached["sessionId"]
            try:
                yield browser
            finally:
                browser._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await browser._reader
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _drain(stream: asyncio.StreamReader) -> None:
    """Keep reading the browser's stderr, so a full pipe never blocks it."""
    while await stream.readline():
        pass


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
