"""HTTP probe: each expectation's failure is named, against real servers on port 0."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from probe_helpers import ChatFactory, collect, http_rule

from deploy_guard.probes.http import json_path
from deploy_guard.probes.target import Target

Serve = Callable[[web.Application], Awaitable[str]]


async def final(url: str, **spec: Any) -> Any:
    return (await collect(http_rule(**spec), Target(url)))[-1]


def api_app(seen: list[web.Request] | None = None) -> web.Application:
    async def status(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request)
        return web.json_response({"status": "ok", "items": [{"id": 7}, {"id": 8}], "ready": True})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "0.3")))
        return web.Response(text="late")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": await request.json(), "method": request.method})

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain words")

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/slow", slow)
    app.router.add_post("/echo", echo)
    app.router.add_get("/text", text)
    return app


async def test_healthy_endpoint_passes_all_checks(chat_server: ChatFactory) -> None:
    served = await chat_server(revision="chat-00002-abc")
    last = await final(
        served.url,
        requests=6,
        concurrency=3,
        expect={
            "status": [200],
            "body_contains": '"status"',
            "json": {"$.status": "ok", "revision": "chat-00002-abc"},
            "max_latency": "2s",
        },
    )
    assert last.complete
    assert (last.done, last.succeeded, last.planned) == (6, 6, 6)
    assert last.kind == "http"
    assert "total" in last.latencies


async def test_unexpected_status_is_named(chat_server: ChatFactory) -> None:
    served = await chat_server(health_status=500)
    last = await final(served.url, requests=3)
    assert last.failures_by_cause == {"status": 3}
    assert last.samples[0].status == 500
    assert last.samples[0].detail == "HTTP 500, expected 200"
    assert "500" in last.samples[0].transcript[-1]["data"]


@pytest.mark.parametrize(
    ("expect", "words"),
    [
        ({"body_contains": "degraded"}, "body does not contain 'degraded'"),
        ({"json": {"$.status": "degraded"}}, 'JSON path $.status is "ok", expected "degraded"'),
        ({"json": {"items[1].id": 9}}, "JSON path items[1].id is 8, expected 9"),
        ({"json": {"items[5].id": 9}}, "JSON path items[5].id not found"),
    ],
)
async def test_body_expectations_are_named(
    aiohttp_server: Serve, expect: dict[str, Any], words: str
) -> None:
    url = await aiohttp_server(api_app())
    last = await final(url, path="/status", requests=2, expect=expect)
    assert last.failures_by_cause == {"body": 2}
    assert last.samples[0].detail == words


async def test_json_expectation_on_a_non_json_body(aiohttp_server: Serve) -> None:
    url = await aiohttp_server(api_app())
    last = await final(url, path="/text", requests=1, expect={"json": {"a": 1}})
    assert last.failures_by_cause == {"body": 1}
    assert "not JSON" in last.samples[0].detail


async def test_latency_and_timeout(aiohttp_server: Serve) -> None:
    url = await aiohttp_server(api_app())
    slow = await final(url, path="/slow?s=0.2", requests=2, expect={"max_latency": "50ms"})
    assert slow.failures_by_cause == {"latency": 2}
    assert "limit 0.05 s" in slow.samples[0].detail
    answer = slow.samples[0].transcript[-1]
    assert answer["dir"] == "recv"
    assert answer["t"] >= 0.2  # the transcript says when the answer came
    timed_out = await final(url, path="/slow?s=2", requests=1, timeout="100ms")
    assert timed_out.failures_by_cause == {"timeout": 1}
    detail = timed_out.samples[0].detail
    assert detail == "response not complete within the 0.1 s timeout (no headers yet)"


async def test_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    last = await final(f"http://127.0.0.1:{port}", requests=1)
    assert last.failures_by_cause == {"connect_error": 1}
    assert "nothing listens there: is the service running" in last.samples[0].detail


async def test_post_json_body_headers_and_env(
    aiohttp_server: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_TEST_KEY", "k-123")
    seen: list[web.Request] = []
    url = await aiohttp_server(api_app(seen))
    last = await final(
        url,
        method="POST",
        path="/echo",
        json={"q": [1, 2]},
        requests=1,
        expect={"json": {"got.q[1]": 2, "method": "POST"}},
    )
    assert last.succeeded == 1
    await final(url, path="/status", requests=1, headers={"X-Key": "${PROBE_TEST_KEY}"})
    assert seen[-1].headers["X-Key"] == "k-123"


def test_json_path_forms() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": [5, 6]}]}, "x": None}
    assert json_path(doc, "$.a.b[0].c") == 1
    assert json_path(doc, "a.b[1].c[1]") == 6
    assert json_path(doc, "x") is None
    assert json_path(doc, "a.zz") is not None  # the private "missing" marker, not None
    assert json_path(doc, "a.zz") is json_path(doc, "a.b[9]")
