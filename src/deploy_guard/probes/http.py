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

import json
import re
import time
from typing import TYPE_CHECKING, Any

import httpx

from deploy_guard.log import redact_text
from deploy_guard.measurements import Attempt
from deploy_guard.probes.target import auth_hint, connect_failure

if TYPE_CHECKING:  # pragma: no cover
    from deploy_guard.policy.model import HttpSpec
    from deploy_guard.probes.target import Target

#: Characters of a response body kept for a failed request's transcript.
BODY_SAMPLE = 300
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


def _check(spec: HttpSpec, response: httpx.Response, elapsed: float) -> tuple[str, str] | None:
    """The first unmet expectation as (cause, detail), or None when all hold."""
    expect = spec.expect
    if expect.status and response.status_code not in expect.status:
        wanted = ", ".join(str(s) for s in expect.status)
        hint = auth_hint(response.status_code)
        return "status", f"HTTP {response.status_code}, expected {wanted}{hint}"
    if expect.body_contains is not None and expect.body_contains not in response.text:
        return "body", f"body does not contain {expect.body_contains!r}"
    if expect.json:
        try:
            document = response.json()
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


def _transcript(
    method: str, path: str, response: httpx.Response | None, took: float
) -> tuple[dict[str, Any], ...]:
    """The request at 0 s, then the answer (or nothing) at the time it came."""
    entries: list[dict[str, Any]] = [{"t": 0.0, "dir": "send", "data": f"{method} {path}"}]
    if response is not None:
        body = response.text[:BODY_SAMPLE]
        entries.append(
            {"t": round(took, 6), "dir": "recv", "data": f"{response.status_code} {body}"}
        )
    return tuple(entries)


async def run_request(spec: HttpSpec, target: Target, client: httpx.AsyncClient) -> Attempt:
    """Send one request of an ``http`` rule; never raises except on cancellation."""
    url = target.url(spec.path)
    kwargs: dict[str, Any] = {"headers": target.headers_for(spec.headers), "timeout": spec.timeout}
    if spec.json is not None:
        kwargs["json"] = spec.json
    elif spec.body is not None:
        kwargs["content"] = spec.body
    start = time.monotonic()
    try:
        response = await client.request(spec.method, url, **kwargs)
    except httpx.TimeoutException:
        return _failed(target, spec, "timeout", f"no answer within {spec.timeout:g} s", start)
    except httpx.TransportError as exc:
        detail = redact_text(connect_failure(exc))
        return _failed(target, spec, "connect_error", detail, start)
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {redact_text(str(exc))}"
        return _failed(target, spec, "error", detail, start)
    elapsed = time.monotonic() - start
    problem = _check(spec, response, elapsed)
    if problem is None:
        return Attempt(ok=True, status=response.status_code, durations={"total": round(elapsed, 6)})
    return _failed(target, spec, problem[0], problem[1], start, response, elapsed)


def _failed(
    target: Target,
    spec: HttpSpec,
    cause: str,
    detail: str,
    start: float,
    response: httpx.Response | None = None,
    elapsed: float | None = None,
) -> Attempt:
    """A failed attempt; the detail and transcript never carry the token."""
    took = time.monotonic() - start if elapsed is None else elapsed
    detail = redact_text(detail)
    entries = [
        {**e, "data": redact_text(str(e["data"]))}
        for e in _transcript(spec.method, spec.path, response, took)
    ]
    if target.token is not None:
        detail = target.token.scrub(detail)
        entries = [target.token.scrub(e) for e in entries]
    return Attempt(
        ok=False,
        cause=cause,
        detail=detail,
        status=response.status_code if response is not None else None,
        durations={"total": round(took, 6)},
        transcript=tuple(entries),
    )


def make_client(target: Target, concurrency: int) -> httpx.AsyncClient:
    """One pooled client per rule run; TLS verified unless the target says not."""
    limits = httpx.Limits(
        max_connections=max(1, concurrency), max_keepalive_connections=concurrency
    )
    return httpx.AsyncClient(verify=target.verify_tls, limits=limits, follow_redirects=False)
