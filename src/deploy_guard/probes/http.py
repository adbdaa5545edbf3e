"""One HTTP probe request, checked against a rule's expectations.

The same shape as a WebSocket session: every outcome is an
:class:`~deploy_guard.measurements.Attempt` whose cause names the first
expectation that failed, in the order a human would check them: could we
connect, the status, the body, the JSON fields, then the latency. httpx errors
are mapped to causes in one place (:func:`run_request`'s ``except`` clauses).
Redirects are not followed: a probe sees what the revision answers (expect a
3xx status explicitly if that is the healthy answer).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpcore
import httpx

from deploy_guard.log import redact_text
from deploy_guard.measurements import Attempt
from deploy_guard.probes.target import auth_hint, connect_failure

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import HttpSpec
    from deploy_guard.probes.target import Target

#: Characters of a response body kept for a failed request's transcript.
BODY_SAMPLE = 300
#: Bytes of (decoded) response body read at most; a longer body fails the request.
MAX_BODY = 1 << 20
#: Bytes of response headers httpcore (h11) accepts before giving up on a response.
HEADER_LIMIT: int = getattr(httpcore.AsyncHTTP11Connection, "MAX_INCOMPLETE_EVENT_SIZE", 100 * 1024)
#: h11's words when the headers pass that limit.
_BUFFER_TOO_LONG = "Receive buffer too long"
_MISSING = object()
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def json_path(document: Any, path: str) -> Any:
    """Follow a simple dotted path (``$.a.b[0].c``, ``a.b``, ``items[2]``).

    Returns a private sentinel when the path leads nowhere; the only syntax is
    names, dots and ``[index]``, so nothing in a policy file is evaluated.
    """
    rest = path[1:] if path.startswith("$") else path
    node = document
    for name, index in _SEGMENT.findall(rest):
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                return _MISSING
            node = node[int(index)]
        else:
            if not isinstance(node, dict) or name not in node:
                return _MISSING
            node = node[name]
    return node


def _check(spec: HttpSpec, answer: _Answer, elapsed: float) -> tuple[str, str] | None:
    """The first unmet expectation as (cause, detail), or None when all hold."""
    expect = spec.expect
    status = answer.status or 0
    if expect.status and status not in expect.status:
        wanted = ", ".join(str(s) for s in expect.status)
        return "status", f"HTTP {status}, expected {wanted}{auth_hint(status)}"
    if expect.body_contains is not None and expect.body_contains not in answer.text:
        return "body", f"body does not contain {expect.body_contains!r}"
    if expect.json:
        try:
            document = json.loads(answer.body)
        except ValueError:
            return "body", "body is not JSON, but the rule expects JSON fields"
        for path, wanted in expect.json.items():
            got = json_path(document, path)
            if got is _MISSING:
                return "body", f"JSON path {path} not found"
            if got != wanted:
                return (
                    "body",
                    f"JSON path {path} is {json.dumps(got)}, expected {json.dumps(wanted)}",
                )
    if expect.max_latency is not None and elapsed > expect.max_latency:
        return "latency", f"took {elapsed:.3f} s, limit {expect.max_latency:g} s"
    return None


@dataclass
class _Answer:
    """What came back so far: the status once the headers are in, the body read (capped)."""

    status: int | None = None
    headers_after: float | None = None
    body: bytes = b""
    encoding: str = "utf-8"
    content_encoding: str = "identity"

    @property
    def text(self) -> str:
        return self.body.decode(self.encoding, errors="replace")

    def progress(self) -> str:
        """Where a request stood when time ran out: "no headers yet" or the body so far."""
        if self.headers_after is None:
            return "no headers yet"
        return (
            f"headers after {self.headers_after:.3f} s, {_size(len(self.body))} of body read so far"
        )


def _size(n: int) -> str:
    """Bytes in words: 512 bytes, 12 KiB, 1 MiB."""
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def _transcript(
    method: str, path: str, answer: _Answer | None, took: float
) -> tuple[dict[str, Any], ...]:
    """The request at 0 s, then the answer (or nothing) at the time it came."""
    entries: list[dict[str, Any]] = [{"t": 0.0, "dir": "send", "data": f"{method} {path}"}]
    if answer is not None and answer.status is not None:
        body = answer.text[:BODY_SAMPLE]
        entries.append({"t": round(took, 6), "dir": "recv", "data": f"{answer.status} {body}"})
    return tuple(entries)


class _TooBig(Exception):
    """The body passed :data:`MAX_BODY` bytes; reading stopped there."""


class _Inflate:
    """Bounded ``Content-Encoding`` decoding: never more than ``room + 1`` bytes per call.

    httpx inflates each raw chunk whole, so 64 KiB of a compressed body of
    zeros becomes 64 MiB before any cap can look at it. This decodes gzip and
    deflate (all httpx asks for) with zlib's ``max_length``; other encodings
    pass through as httpx would pass them.
    """

    def __init__(self, encoding: str) -> None:
        name = encoding.strip().lower()
        wbits = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16}.get(name)
        if name == "deflate":
            wbits = zlib.MAX_WBITS
        self.raw_deflate_tried = name != "deflate"
        self.zlib = zlib.decompressobj(wbits) if wbits is not None else None

    def decode(self, data: bytes, room: int) -> bytes:
        if self.zlib is None:
            return data
        try:
            out = self.zlib.decompress(data, room + 1)
        except zlib.error:
            if self.raw_deflate_tried:
                raise
            # "deflate" is sometimes sent without its zlib header (httpx allows it too)
            self.zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self.zlib.decompress(data, room + 1)
        self.raw_deflate_tried = True  # only the first chunk may switch
        return out


async def _read(response: httpx.Response, answer: _Answer, start: float, cap: int) -> None:
    """Read the body into ``answer`` chunk by chunk, stopping past ``cap`` bytes (decoded)."""
    answer.status = response.status_code
    answer.headers_after = time.monotonic() - start
    answer.encoding = response.encoding or "utf-8"
    answer.content_encoding = response.headers.get("content-encoding", "identity")
    inflate = _Inflate(answer.content_encoding)
    parts: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        chunk = inflate.decode(raw, cap - size)
        size += len(chunk)
        if size > cap:
            answer.body = b"".join(parts)
            raise _TooBig
        parts.append(chunk)
    answer.body = b"".join(parts)


async def run_request(
    spec: HttpSpec, target: Target, client: httpx.AsyncClient, *, max_body: int = MAX_BODY
) -> Attempt:
    """Send one request of an ``http`` rule; never raises except on cancellation.

    ``spec.timeout`` bounds the whole request (connect, headers and the whole
    body), and at most ``max_body`` bytes of body are kept: a server that
    streams forever, trickles a byte a second or sends endless headers costs
    one timeout and a bounded amount of memory, and the attempt says which.
    """
    url = target.url(spec.path)
    kwargs: dict[str, Any] = {"headers": target.headers_for(spec.headers), "timeout": spec.timeout}
    if spec.json is not None:
        kwargs["json"] = spec.json
    elif spec.body is not None:
        kwargs["content"] = spec.body
    answer = _Answer()
    start = time.monotonic()
    try:
        async with asyncio.timeout(spec.timeout):
            async with client.stream(spec.method, url, **kwargs) as response:
                await _read(response, answer, start, max_body)
    except (TimeoutError, httpx.TimeoutException):
        detail = (
            f"response not complete within the {spec.timeout:g} s timeout ({answer.progress()})"
        )
        return _failed(target, spec, "timeout", detail, start, answer)
    except zlib.error as exc:
        detail = f"the body is not valid {answer.content_encoding}: {exc}"
        return _failed(target, spec, "protocol_error", detail, start, answer)
    except _TooBig:
        detail = f"body larger than {_size(max_body)} (reading stopped there)"
        return _failed(target, spec, "too_large", detail, start, answer)
    except httpx.RemoteProtocolError as exc:
        if answer.status is None and _BUFFER_TOO_LONG in str(exc):
            detail = f"headers larger than {_size(HEADER_LIMIT)} (reading stopped there)"
            return _failed(target, spec, "too_large", detail, start)
        detail = f"the server broke HTTP: {redact_text(str(exc))} ({answer.progress()})"
        return _failed(target, spec, "protocol_error", detail, start, answer)
    except httpx.TransportError as exc:
        if answer.status is not None:  # the connection broke while the body came
            detail = f"{redact_text(connect_failure(exc))} ({answer.progress()})"
            return _failed(target, spec, "error", detail, start, answer)
        detail = redact_text(connect_failure(exc))
        return _failed(target, spec, "connect_error", detail, start)
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {redact_text(str(exc))}"
        return _failed(target, spec, "error", detail, start)
    elapsed = time.monotonic() - start
    problem = _check(spec, answer, elapsed)
    if problem is None:
        return Attempt(ok=True, status=answer.status, durations={"total": round(elapsed, 6)})
    return _failed(target, spec, problem[0], problem[1], start, answer, elapsed)


def _failed(
    target: Target,
    spec: HttpSpec,
    cause: str,
    detail: str,
    start: float,
    answer: _Answer | None = None,
    elapsed: float | None = None,
) -> Attempt:
    """A failed attempt; the detail and transcript never carry the token."""
    took = time.monotonic() - start if elapsed is None else elapsed
    detail = redact_text(detail)
    entries = [
        {**e, "data": redact_text(str(e["data"]))}
        for e in _transcript(spec.method, spec.path, answer, took)
    ]
    if target.token is not None:
        detail = target.token.scrub(detail)
        entries = [target.token.scrub(e) for e in entries]
    return Attempt(
        ok=False,
        cause=cause,
        detail=detail,
        status=answer.status if answer is not None else None,
        durations={"total": round(took, 6)},
        transcript=tuple(entries),
    )


def make_client(target: Target, concurrency: int) -> httpx.AsyncClient:
    """One pooled client per rule run; TLS verified unless the target says not."""
    limits = httpx.Limits(
        max_connections=max(1, concurrency), max_keepalive_connections=concurrency
    )
    return httpx.AsyncClient(verify=target.verify_tls, limits=limits, follow_redirects=False)
