"""The official Logging client behind :mod:`deploy_guard.gcp.tail`'s two seams.

:class:`GrpcTail` turns the client's blocking ``tail_log_entries`` iterator into
an async iterator of :class:`TailBatch`: the call runs in a thread of its own
(it lives as long as the watch, so it must not hold a worker of the default
executor), hands each response to the event loop, and is cancelled when the
iterator is closed. Its request side stays open until then: the stream is
bidirectional, and a client that half-closes it has said all it will say.

:class:`GrpcLister` is one ``ListLogEntries`` pass, paged and bounded like a
check's (:class:`deploy_guard.gcp.logs.CloudLogging`), through the one error
seam :func:`deploy_guard.gcp.errors.call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from deploy_guard.gcp.clients import Clients
from deploy_guard.gcp.errors import ApiCalls, call, status_name
from deploy_guard.gcp.logs import Entry, to_entry
from deploy_guard.log import redact_text

#: The most live-tailing sessions Cloud Logging allows per project.
TAIL_SESSIONS_PER_PROJECT = 10


@dataclass(frozen=True)
class TailBatch:
    """One ``TailLogEntriesResponse``: its entries, and what the server left out."""

    entries: Sequence[Entry]
    #: Entries the server did not send (``suppression_info``: rate limit, not consumed).
    suppressed: int = 0
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listed:
    """One ``ListLogEntries`` pass; ``unfinished``: it stopped at a bound, a token left."""

    entries: Sequence[Entry]
    unfinished: bool = False


def describe_tail_error(exc: BaseException) -> str:
    """Why the stream stopped, in words for the fallback event and the report."""
    code = status_name(exc)
    if code == "RESOURCE_EXHAUSTED":
        return (
            "Cloud Logging refused the live tail (RESOURCE_EXHAUSTED: at most "
            f"{TAIL_SESSIONS_PER_PROJECT} live-tailing sessions per project, or the tail's "
            "entry quota)"
        )
    detail = redact_text(str(getattr(exc, "message", "") or exc))[:200]
    if code:
        return f"the live tail broke: TailLogEntries answered {code} ({detail})"
    return f"the live tail broke: {type(exc).__name__} ({detail})"


def _batch(response: Any, keep_doc: bool) -> TailBatch:
    suppressed = 0
    reasons: list[str] = []
    for info in response.suppression_info:
        suppressed += int(info.suppressed_count)
        reason = getattr(info.reason, "name", str(info.reason))
        if reason not in reasons:
            reasons.append(reason)
    entries = [to_entry(e, keep_doc=keep_doc) for e in response.entries]
    return TailBatch(entries=entries, suppressed=suppressed, reasons=tuple(reasons))


class GrpcTail:
    """``TailLogEntries`` over the official client, as an async iterator per stream.

    ``session_seconds`` bounds one stream (the client's deadline); the source
    reopens a stream that lived long. ``buffer_window`` is the server's
    reordering window (0 to 60 s; Cloud Logging's default is 2 s): 0 here, since
    the counter takes entries in any order and a watch wants the first 1011 now.
    """

    def __init__(
        self,
        clients: Clients,
        project: str,
        *,
        calls: ApiCalls | None = None,
        session_seconds: float = 3600.0,
        buffer_window: float = 0.0,
    ) -> None:
        self.clients, self.project = clients, project
        self.calls = calls if calls is not None else ApiCalls()
        self.session_seconds, self.buffer_window = session_seconds, buffer_window

    async def __call__(self, flt: str, keep_doc: bool) -> AsyncIterator[TailBatch]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TailBatch | BaseException | None] = asyncio.Queue()
        stop = threading.Event()
        held: list[Any] = []  # the call, once made (for cancel)

        def put(item: TailBatch | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                # The client first: Clients builds it under its lock, so this thread never
                # imports the Logging library while another (a ListLogEntries pass, the
                # metrics) is importing it too; two threads importing one package at once
                # can end in a _DeadlockError that would break the tail for nothing.
                client = self.clients.logging()
                from google.cloud.logging_v2.types import TailLogEntriesRequest
                from google.protobuf.duration_pb2 import Duration

                request = TailLogEntriesRequest(
                    resource_names=[f"projects/{self.project}"],
                    filter=flt,
                    buffer_window=Duration(
                        seconds=int(self.buffer_window),
                        nanos=int(self.buffer_window % 1 * 1e9),
                    ),
                )

                def requests() -> Any:
                    yield request
                    stop.wait()  # keep our side open until the stream is closed

                stream = client.tail_log_entries(
                    requests=requests(), retry=None, timeout=self.session_seconds
                )
                held.append(stream)
                if stop.is_set():
                    stream.cancel()  # type: ignore[attr-defined]
                    return
                for response in stream:
                    put(_batch(response, keep_doc))
                put(None)
            except BaseException as exc:  # handed to the loop: the iterator raises it there
                if not stop.is_set():
                    put(exc)
            finally:
                stop.set()

        self.calls.add("logging", "TailLogEntries")
        threading.Thread(target=run, name="deploy-guard-tail", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # before reading ``held``: run() checks ``stop`` after filling it
            for stream in held:
                stream.cancel()


class GrpcLister:
    """One ``ListLogEntries`` pass: oldest first, ``max_pages`` pages with entries at most."""

    def __init__(
        self,
        clients: Clients,
        project: str,
        *,
        calls: ApiCalls | None = None,
        page_size: int = 1000,
        max_pages: int = 5,
        max_empty_pages: int = 10,
    ) -> None:
        self.clients, self.project = clients, project
        self.calls = calls if calls is not None else ApiCalls()
        self.page_size = min(page_size, 1000)
        self.max_pages, self.max_empty_pages = max_pages, max_empty_pages

    async def __call__(self, flt: str, keep_doc: bool, deadline: float) -> Listed:
        return await asyncio.to_thread(self._fetch, flt, keep_doc, deadline)

    def _fetch(self, flt: str, keep_doc: bool, deadline: float) -> Listed:
        client = self.clients.logging()
        request = {
            "resource_names": [f"projects/{self.project}"],
            "filter": flt,
            "order_by": "timestamp asc",
            "page_size": self.page_size,
        }

        def fetch(retry: Any) -> Listed:
            pager = client.list_log_entries(request=request, retry=retry, timeout=deadline)
            out: list[Entry] = []
            full = empty = 0
            more = False
            for n, page in enumerate(pager.pages):
                if n:  # each later page is another call against the quota
                    self.calls.add("logging", "ListLogEntries")
                more = bool(page.next_page_token)
                if not page.entries and more:  # the search ran out of time, not of entries
                    empty += 1
                    if empty >= self.max_empty_pages:
                        break
                    continue
                out.extend(to_entry(e, keep_doc=keep_doc) for e in page.entries)
                full += 1
                if full >= self.max_pages:
                    break
            return Listed(out, unfinished=more)

        return call(
            fetch,
            api="logging",
            what="reading logs (the live tail's fallback)",
            calls=self.calls,
            method="ListLogEntries",
            deadline=deadline,
        )
