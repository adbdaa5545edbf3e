"""Real users of a service during a rollout: steady HTTP requests and WebSocket sessions.

A rollout is judged on what real users see through the service's *main* URL,
where the router splits traffic between revisions (never a tag URL, which
reaches one revision only). :class:`Users` plays those users from a
background thread with its own asyncio loop, so a synchronous test drives the
rollout while the users keep coming::

    with Users(svc.uri, rate=20.0, paths=["/", "/api/tool"],
               websocket=Sessions("/ws", ["hi"])) as users:
        users.wait_for(40, within=10)
        ...
    users.by_revision()      # {"shop-00001-abc": Counter({"200": 36, "ws:1000": 2}), ...}

Each answer is filed under the revision that gave it: the revision app
(``tests/apps/revision_app.py``) names itself in every HTTP body, failures
included, and in the first message of every WebSocket session. Outcomes are
strings: an HTTP status (``"200"``, ``"500"``) or ``"ws:CODE"``, the close code
a WebSocket session ended with (``"ws:1000"`` when the user closed it,
``"ws:1011"`` when the revision did, ``"ws:1006"`` when the connection dropped).
An answer that names no revision (the router's own 503 page) is filed under
:data:`UNKNOWN`; a request that got no answer at all is counted in
:meth:`Users.errors`.

Why the paths follow a golden-ratio sequence, not a plain rotation: the router
splits by smooth weighted round robin, a fixed rotation. A 90/10 split sends
every 10th request to the candidate; users alternating ``/`` and ``/api/tool``
would then send the candidate only one of the two paths, for ever. Request
``i`` takes path ``floor(frac(i * phi) * len(paths))``: for any split, the
requests each revision receives still cover every path in the same shares.

Memory is bounded: counts per (revision, path, outcome), never each answer.
Leaving the ``with`` block stops sending at once, lets requests in flight end
(up to ``drain`` seconds, so the users' counts match the emulator's), closes
open WebSocket sessions with 1000 and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

#: The revision an answer is filed under when it names none.
UNKNOWN = "?"
#: frac(i * PHI) spreads any arithmetic subsequence of requests over every path.
PHI = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Sessions:
    """WebSocket users: a new session every ``every`` seconds on ``path``.

    A session reads the revision's first message (which names it), sends each
    of ``messages`` and waits for its answer, stays ``hold`` seconds, then
    closes with 1000. A revision that closes first decides the close code.
    """

    path: str = "/ws"
    messages: Sequence[str] = ("hello",)
    every: float = 1.0
    hold: float = 0.0


def path_for(i: int, paths: Sequence[str]) -> str:
    """The path of request ``i``: a golden-ratio sequence over ``paths`` (see module doc)."""
    return paths[int((i * PHI) % 1.0 * len(paths))]


def revision_of(body: bytes | str) -> str:
    """The revision a JSON answer names, or :data:`UNKNOWN`."""
    try:
        doc = json.loads(body)
    except ValueError:
        return UNKNOWN
    name = doc.get("revision") if isinstance(doc, dict) else None
    return name if isinstance(name, str) and name else UNKNOWN


class Users:
    """Users of ``url`` at ``rate`` HTTP requests per second (and WebSocket sessions).

    Use as a context manager; the counts stay readable after it exits.
    ``max_in_flight`` bounds concurrent requests: when the service is slower
    than ``rate`` allows, the users wait rather than pile up.
    """

    def __init__(
        self,
        url: str,
        rate: float = 20.0,
        paths: Sequence[str] = ("/",),
        websocket: Sessions | None = None,
        *,
        timeout: float = 10.0,
        max_in_flight: int = 64,
        drain: float = 5.0,
    ) -> None:
        if rate <= 0 or not paths:
            raise ValueError("Users need a positive rate and at least one path")
        self.url = url.rstrip("/")
        self.rate = rate
        self.paths = tuple(paths)
        self.websocket = websocket
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.drain = drain
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._errors: Counter[str] = Counter()
        self._total = 0
        self._open = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    # ------------------------------------------------------------------ reading
    def by_revision(self, path: str | None = None) -> dict[str, Counter[str]]:
        """Outcome counts per revision that answered (only ``path``'s, if given)."""
        out: dict[str, Counter[str]] = {}
        with self._changed:
            for (revision, at, outcome), n in self._counts.items():
                if path is None or at == path:
                    out.setdefault(revision, Counter())[outcome] += n
        return out

    def total(self) -> int:
        """Answers so far: HTTP responses and ended WebSocket sessions (not errors)."""
        with self._changed:
            return self._total

    def open_sessions(self) -> int:
        """WebSocket sessions open now (their revision named, not ended yet)."""
        with self._changed:
            return self._open

    def errors(self) -> Counter[str]:
        """Requests that got no answer, by ``"GET /path: ExceptionName"``."""
        with self._changed:
            return Counter(self._errors)

    def wait_for(self, n: int, within: float = 10.0) -> int:
        """Block until ``n`` more answers came; the new total. TimeoutError after ``within`` s."""
        deadline = time.monotonic() + within
        with self._changed:
            goal = self._total + n
            while self._total < goal:
                left = deadline - time.monotonic()
                if left <= 0 or self._failure is not None:
                    raise TimeoutError(
                        f"{goal - self._total} of {n} answers missing after {within} s "
                        f"(errors: {dict(self._errors)}; failure: {self._failure!r})"
                    )
                self._changed.wait(left)
            return self._total

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Users:
        self._thread = threading.Thread(target=self._run, name="users", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except RuntimeError:
            if exc is None:  # never hide the test's own failure behind the users'
                raise

    def stop(self) -> None:
        """Stop sending, let requests in flight end (``drain`` s at most), join the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(self.drain + 5)
            if self._thread.is_alive():
                raise RuntimeError("the users' thread did not stop")
        if self._failure is not None:
            raise RuntimeError("the users' loop failed") from self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop() and wait_for()
            with self._changed:
                self._failure = exc
                self._changed.notify_all()
        finally:
            self._started.set()

    # ------------------------------------------------------------------ the users
    def _count(self, revision: str, path: str, outcome: str) -> None:
        with self._changed:
            self._counts[(revision, path, outcome)] += 1
            self._total += 1
            self._changed.notify_all()

    def _opened(self, n: int) -> None:
        with self._changed:
            self._open += n

    def _error(self, what: str, exc: BaseException) -> None:
        with self._changed:
            self._errors[f"{what}: {type(exc).__name__}"] += 1
            self._changed.notify_all()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._started.set()
            tasks: set[asyncio.Task[None]] = set()
            pacers = [self._pace(session, tasks)]
            if self.websocket is not None:
                pacers.append(self._pace_sessions(session, self.websocket, tasks))
            await asyncio.gather(*pacers)
            if tasks:  # stopped: requests in flight end; sessions see the stop and close
                _done, late = await asyncio.wait(tasks, timeout=self.drain)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    async def _pace(self, session: aiohttp.ClientSession, tasks: set[asyncio.Task[None]]) -> None:
        """Start request ``i`` at ``i / rate`` seconds (never more than max_in_flight open)."""
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.max_in_flight)
        start, i = loop.time(), 0
        while not self._stop.is_set():
            if loop.time() - (start + i / self.rate) > 1.0:  # a stall: go on, no burst
                start = loop.time() - i / self.rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), start + i / self.rate - loop.time())
            if self._stop.is_set():
                return
            await slots.acquire()
            task = asyncio.create_task(self._request(session, path_for(i, self.paths), slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1

    async def _request(
        self, session: aiohttp.ClientSession, path: str, slots: asyncio.Semaphore
    ) -> None:
        try:
            async with session.get(self.url + path) as answer:
                body = await answer.read()
            self._count(revision_of(body), path, str(answer.status))
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            self._error(f"GET {path}", exc)
        finally:
            slots.release()

    async def _pace_sessions(
        self, session: aiohttp.ClientSession, spec: Sessions, tasks: set[asyncio.Task[None]]
    ) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            task = asyncio.create_task(self._session(session, spec))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), spec.every)

    async def _session(self, session: aiohttp.ClientSession, spec: Sessions) -> None:
        """One WebSocket session, filed under the revision its first message names."""
        assert self._stop is not None
        url = self.url.replace("http", "ws", 1) + spec.path
        revision = UNKNOWN
        try:
            async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                first = await ws.receive(self.timeout)
                if first.type == aiohttp.WSMsgType.TEXT:
                    revision = revision_of(first.data)
                self._opened(1)
                try:
                    await self._converse(ws, spec, first.type == aiohttp.WSMsgType.TEXT)
                finally:
                    self._opened(-1)
                code = ws.close_code
            self._count(revision, spec.path, f"ws:{code if code is not None else 1006}")
        except aiohttp.WSServerHandshakeError as exc:  # refused upgrade: an HTTP answer
            self._count(revision, spec.path, str(exc.status))
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            self._error(f"WS {spec.path}", exc)

    async def _converse(self, ws: Any, spec: Sessions, greeted: bool) -> None:
        """Send each message and read its answer, hold, close with 1000 if still open."""
        assert self._stop is not None
        for message in spec.messages if greeted else ():
            if ws.closed:
                break
            await ws.send_str(message)
            answer = await ws.receive(self.timeout)
            if answer.type != aiohttp.WSMsgType.TEXT:
                break
        if not ws.closed and spec.hold:
            await _hold(ws, self._stop, spec.hold)
        if not ws.closed:
            await ws.close(code=1000)


async def _hold(ws: Any, stop: asyncio.Event, seconds: float) -> None:
    """Keep a session open ``seconds``, until the users stop or the revision closes it.

    One reader runs all along: aiohttp marks a session abnormally closed (1006) when
    a ``receive`` times out, so the hold ends by ``close(1000)``, which breaks it.
    """
    reading = asyncio.create_task(_read_until_closed(ws))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({reading, stopping}, timeout=seconds, return_when="FIRST_COMPLETED")
        if not ws.closed:
            await ws.close(code=1000)
        await reading
    finally:
        for task in (reading, stopping):
            task.cancel()
        await asyncio.gather(reading, stopping, return_exceptions=True)


async def _read_until_closed(ws: Any) -> None:
    while (await ws.receive()).type not in _ENDED:
        pass


_ENDED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)
