"""The router against real local revisions: aiohttp and websockets servers on port 0.

Clients are the ones users and probes use (httpx, websockets); sinks are plain
recording classes. Nothing is mocked: every assertion is about bytes that
crossed a real loopback socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import httpx
import pytest
from aiohttp import WSMsgType, web
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from deploy_guard.emulator.contracts import Backend, RequestRecord, RevisionRef, Route
from deploy_guard.emulator.router import TIMEOUT_MESSAGE, Router
from waiting import eventually

# -- sinks and helpers -------------------------------------------------------------


class RecordingSink:
    """Implements LogSink and MetricSink by remembering every call."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def request(self, record: RequestRecord) -> None:
        self.records.append(record)

    def revision_output(self, ref: RevisionRef, stream: str, line: str, when: datetime) -> None:
        raise AssertionError("the router never writes revision output")

    def system(self, ref: RevisionRef, severity: str, message: str, when: datetime) -> None:
        raise AssertionError("the router never writes system entries")

    def audit(self, **_: Any) -> None:
        raise AssertionError("the router never writes audit entries")


class BrokenSink(RecordingSink):
    def request(self, record: RequestRecord) -> None:
        raise RuntimeError("sink is broken")


def ref(name: str) -> RevisionRef:
    return RevisionRef("proj", "europe-west1", "chat", name, "chat")


def route(backend: Backend | None, percent: int = 100) -> Route:
    return Route(backend=backend, percent=percent)


def ws_url(http_url: str, path: str) -> str:
    return "ws" + http_url.removeprefix("http") + path


# -- revisions: an aiohttp app and a websockets server ------------------------------


@dataclass
class Revision:
    """A running local revision and what it saw."""

    name: str
    backend: Backend
    ws_closes: list[int | None]


async def _aiohttp_revision(name: str) -> tuple[web.AppRunner, Revision]:
    revision = Revision(name, Backend(ref(name), "127.0.0.1", 0), [])

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = {
            "revision": name,
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_len": len(body),
        }
        status = int(request.query.get("status", "200"))
        return web.json_response(payload, status=status, headers={"X-Revision": name})

    async def stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/plain"})
        out.headers.add("Set-Cookie", "a=1")
        out.headers.add("Set-Cookie", "b=2")
        await out.prepare(request)
        for i in range(3):
            await out.write(f"chunk{i};".encode())
        await out.write_eof()
        return out

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("s", "30")))  # a revision that takes long
        return web.Response(text="late")

    async def drip(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await out.prepare(request)
        await out.write(b"first;")
        await asyncio.sleep(30)  # the rest never comes in time
        await out.write_eof()
        return out

    async def nothing(_: web.Request) -> web.StreamResponse:
        return web.Response(status=204, headers={"X-Revision": name})

    async def die(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()  # the process died mid-request
        return web.Response()

    async def refuse(_: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="go away", headers={"X-Why": "denied"})

    async def ws(request: web.Request) -> web.StreamResponse:
        sock = web.WebSocketResponse(protocols=("chat.v1",))
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                if msg.data == "who":
                    await sock.send_str(name)
                elif msg.data == "fail":
                    await sock.close(code=1011, message=b"orchestrator is None")
                elif msg.data == "drop":
                    assert request.transport is not None
                    request.transport.abort()
                else:
                    await sock.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        revision.ws_closes.append(sock.close_code)
        return sock

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/stream", stream)
    app.router.add_get("/refuse", refuse)
    app.router.add_get("/nothing", nothing)
    app.router.add_get("/slow", slow)
    app.router.add_get("/drip", drip)
    app.router.add_post("/die", die)
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app, shutdown_timeout=1.0)  # slow handlers do not hold teardown
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    revision.backend = Backend(ref(name), "127.0.0.1", port)
    return runner, revision


@pytest.fixture
async def rev_a() -> AsyncIterator[Revision]:
    runner, revision = await _aiohttp_revision("chat-00001-aaa")
    yield revision
    await runner.cleanup()


@pytest.fixture
async def rev_b() -> AsyncIterator[Revision]:
    runner, revision = await _aiohttp_revision("chat-00002-bbb")
    yield revision
    await runner.cleanup()


@pytest.fixture
async def ws_rev() -> AsyncIterator[Revision]:
    """A revision served by the websockets library, which reports 1006 faithfully."""
    revision = Revision("chat-00003-ccc", Backend(ref("chat-00003-ccc"), "127.0.0.1", 0), [])

    async def handler(conn: ServerConnection) -> None:
        try:
            async for message in conn:
                if message == "fail":
                    await conn.close(1011, "orchestrator is None")
                elif message == "drop":
                    conn.transport.abort()
                else:
                    await conn.send(message)
        except ConnectionClosed:
            pass
        finally:
            revision.ws_closes.append(conn.close_code)

    async with ws_serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        revision.backend = Backend(revision.backend.ref, "127.0.0.1", port)
        yield revision


@dataclass
class Setup:
    router: Router
    logs: RecordingSink
    metrics: RecordingSink


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    logs, metrics = RecordingSink(), RecordingSink()
    router = Router(logs, metrics)
    await router.start()
    yield Setup(router, logs, metrics)
    await router.stop()


async def service(setup: Setup, *routes: Route, key: str = "svc:chat") -> str:
    url = await setup.router.open_endpoint(key)
    setup.router.set_routes(key, list(routes))
    return url


# -- HTTP --------------------------------------------------------------------------


async def test_get_passes_path_query_and_headers_and_strips_hop_by_hop(
    setup: Setup, rev_a: Revision
) -> None:
    url = await service(setup, route(rev_a.backend))
    async with httpx.AsyncClient() as client:
        del client.headers["Accept-Encoding"], client.headers["User-Agent"]
        resp = await client.get(
            f"{url}/echo/a%2Fb?x=1&y=%20z",
            headers={"X-Custom": "kept", "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1"},
        )
    assert resp.status_code == 200
    assert resp.headers["x-revision"] == rev_a.name
    seen = resp.json()
    assert seen["method"] == "GET"
    assert seen["raw_path"] == "/echo/a%2Fb?x=1&y=%20z"
    assert seen["headers"]["x-custom"] == "kept"
    assert "x-drop-me" not in seen["headers"]
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert seen["headers"]["x-forwarded-proto"] == "http"
    assert seen["headers"]["host"] == url.removeprefix("http://")
    assert "/" in seen["headers"]["x-cloud-trace-context"]
    # The router's own HTTP client must not add headers the client did not send.
    assert "accept-encoding" not in seen["headers"]
    assert "user-agent" not in seen["headers"]


async def test_post_body_and_status_pass_through(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    body = bytes(range(256)) * 1000
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{url}/echo?status=201", content=body)
    assert resp.status_code == 201
    seen = resp.json()
    assert seen["method"] == "POST"
    assert seen["body_len"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_chunked_request_body_streams_to_revision(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))

    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield f"part{i}".encode()

    async with httpx.AsyncClient() as client:
        resp = await client.put(f"{url}/echo", content=parts())
    assert resp.json()["body_len"] == len(b"part0part1part2part3part4")
    await eventually(lambda: len(setup.logs.records) == 1)
    assert setup.logs.records[0].request_size == 25


async def test_streamed_response_keeps_repeated_headers(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{url}/stream")
    assert resp.text == "chunk0;chunk1;chunk2;"
    assert resp.headers.get_list("set-cookie") == ["a=1", "b=2"]


async def test_head_and_no_content_keep_their_framing(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    async with httpx.AsyncClient() as client:
        full = await client.get(f"{url}/echo")
        head = await client.head(f"{url}/echo")
        empty = await client.get(f"{url}/nothing")
        again = await client.get(f"{url}/echo")  # the kept-alive connection still works
    assert head.status_code == 200
    assert head.content == b""
    # The revision's length for the body it would send (HEAD echoes differ by method).
    assert abs(int(head.headers["content-length"]) - len(full.content)) < 5
    assert (empty.status_code, empty.content) == (204, b"")
    assert again.status_code == 200


async def test_expect_100_continue_is_answered(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 200")
    seen = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert seen["body_len"] == 5
    assert "expect" not in seen["headers"]


async def test_http_request_record_reaches_both_sinks(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{url}/echo?status=404", headers={"User-Agent": "probe/1"})
    assert resp.status_code == 404
    await eventually(lambda: len(setup.metrics.records) == 1)
    assert setup.logs.records == setup.metrics.records
    rec = setup.logs.records[0]
    assert rec.ref == rev_a.backend.ref
    assert rec.status == 404
    assert rec.method == "GET"
    assert rec.protocol == "HTTP/1.1"
    assert rec.url == f"{url}/echo?status=404"
    assert rec.user_agent == "probe/1"
    assert rec.remote_ip == "127.0.0.1"
    assert rec.response_size == len(resp.content)
    assert 0 < rec.latency_s < 5
    assert rec.start_time <= rec.end_time
    assert rec.start_time.tzinfo is not None
    assert rec.ws_close_code is None


async def test_a_failing_sink_does_not_break_proxying(rev_a: Revision) -> None:
    metrics = RecordingSink()
    router = Router(BrokenSink(), metrics)
    try:
        url = await router.open_endpoint("svc:chat")
        router.set_routes("svc:chat", [route(rev_a.backend)])
        async with httpx.AsyncClient() as client:
            statuses = [(await client.get(f"{url}/echo")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        await eventually(lambda: len(metrics.records) == 3)
    finally:
        await router.stop()


# -- traffic split -----------------------------------------------------------------


async def _revisions_hit(url: str, n: int) -> list[str]:
    async with httpx.AsyncClient() as client:
        return [(await client.get(f"{url}/echo")).headers["x-revision"] for _ in range(n)]


async def test_fifty_fifty_split_hits_both_evenly(
    setup: Setup, rev_a: Revision, rev_b: Revision
) -> None:
    url = await service(setup, route(rev_a.backend, 50), route(rev_b.backend, 50))
    hits = await _revisions_hit(url, 100)
    assert 45 <= hits.count(rev_a.name) <= 55
    assert hits.count(rev_a.name) + hits.count(rev_b.name) == 100


async def test_ninety_ten_split_interleaves(setup: Setup, rev_a: Revision, rev_b: Revision) -> None:
    url = await service(setup, route(rev_a.backend, 90), route(rev_b.backend, 10))
    hits = await _revisions_hit(url, 50)
    assert hits.count(rev_b.name) == 5
    # Smooth WRR spreads the small share out instead of bunching it.
    assert all(hits[i : i + 10].count(rev_b.name) == 1 for i in range(0, 50, 10))


async def test_hundred_zero_split_hits_only_one(
    setup: Setup, rev_a: Revision, rev_b: Revision
) -> None:
    url = await service(setup, route(rev_a.backend, 100), route(rev_b.backend, 0))
    assert set(await _revisions_hit(url, 20)) == {rev_a.name}


async def test_tag_endpoint_reaches_only_its_revision(
    setup: Setup, rev_a: Revision, rev_b: Revision
) -> None:
    svc = await service(setup, route(rev_a.backend))
    tag = await service(setup, route(rev_b.backend), key="tag:chat:candidate")
    assert svc != tag
    assert set(await _revisions_hit(tag, 10)) == {rev_b.name}
    assert set(await _revisions_hit(svc, 10)) == {rev_a.name}


async def test_open_endpoint_is_idempotent(setup: Setup) -> None:
    first = await setup.router.open_endpoint("svc:chat")
    assert await setup.router.open_endpoint("svc:chat") == first
    assert first.startswith("http://127.0.0.1:")


# -- failures ----------------------------------------------------------------------


async def test_no_routes_is_503_with_cloud_run_body(setup: Setup) -> None:
    url = await setup.router.open_endpoint("svc:empty")
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{url}/anything")
    assert resp.status_code == 503
    assert "Service Unavailable" in resp.text


async def test_route_to_non_serving_revision_is_503(setup: Setup) -> None:
    url = await service(setup, route(None))
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{url}/")
    assert resp.status_code == 503
    assert setup.logs.records == []


async def test_route_to_a_dead_revision_is_503_logged_against_it(setup: Setup) -> None:
    url = await service(setup, Route(backend=None, percent=100, ref=ref("chat-00001-dead")))
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{url}/x?y=1")
    assert resp.status_code == 503
    [record] = setup.logs.records
    assert (record.ref.revision, record.status, record.method) == ("chat-00001-dead", 503, "GET")
    assert record.url.endswith("/x?y=1")


async def test_revision_refusing_connections_is_503_and_recorded(setup: Setup) -> None:
    # Bind then release a port so nothing listens on it.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    dead = Backend(ref("chat-00009-dead"), "127.0.0.1", port)
    url = await service(setup, route(dead))
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{url}/")
    assert resp.status_code == 503
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(ws_url(url, "/ws")):
            pass
    assert refused.value.response.status_code == 503
    await eventually(lambda: len(setup.logs.records) == 2)
    assert [r.status for r in setup.logs.records] == [503, 503]
    assert setup.logs.records[0].ref.revision == "chat-00009-dead"
    # no container took them: logged, not in request_count
    assert setup.metrics.records == []


async def test_revision_dying_mid_request_is_502_and_recorded(
    setup: Setup, rev_a: Revision
) -> None:
    url = await service(setup, route(rev_a.backend))
    async with httpx.AsyncClient() as client:
        resp = await client.post(f"{url}/die", content=b"x")
        assert resp.status_code == 502
        assert (await client.get(f"{url}/echo")).status_code == 200
    await eventually(lambda: len(setup.logs.records) == 2)
    assert [r.status for r in setup.logs.records] == [502, 200]


async def test_closed_endpoint_refuses_new_connections(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/echo")).status_code == 200
        await setup.router.close_endpoint("svc:chat")
        await setup.router.close_endpoint("svc:chat")  # idempotent
        with pytest.raises(httpx.TransportError):
            await client.get(f"{url}/echo")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as fresh:
            await fresh.get(f"{url}/echo")
    assert setup.router.endpoint_url("svc:chat") is None


# -- WebSocket ---------------------------------------------------------------------


async def test_websocket_echo_with_subprotocol(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    async with ws_connect(ws_url(url, "/ws?room=1"), subprotocols=["chat.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v1"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x01\x02\x03")
        assert await ws.recv() == b"\x03\x02\x01"
        await ws.send("who")
        assert await ws.recv() == rev_a.name
        latency = await asyncio.wait_for(await ws.ping(b"abc"), 5)
        assert latency >= 0


async def test_revision_1011_reaches_client_with_reason(setup: Setup, ws_rev: Revision) -> None:
    url = await service(setup, route(ws_rev.backend))
    async with ws_connect(ws_url(url, "/chat")) as ws:
        await ws.send("fail")
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    assert closed.value.rcvd.reason == "orchestrator is None"
    await eventually(lambda: len(setup.logs.records) == 1)
    rec = setup.logs.records[0]
    assert (rec.status, rec.protocol, rec.ws_close_code) == (101, "websocket", 1011)
    assert setup.metrics.records == setup.logs.records


async def test_aiohttp_revision_1011_reaches_client(setup: Setup, rev_a: Revision) -> None:
    url = await service(setup, route(rev_a.backend))
    async with ws_connect(ws_url(url, "/ws")) as ws:
        await ws.send("fail")
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "orchestrator is None")


async def test_revision_dropping_the_connection_is_1006(setup: Setup, ws_rev: Revision) -> None:
    url = await service(setup, route(ws_rev.backend))
    async with ws_connect(ws_url(url, "/chat")) as ws:
        await ws.send("ping-me")
        assert await ws.recv() == "ping-me"
        await ws.send("drop")
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
    assert closed.value.rcvd is None
    assert ws.close_code == 1006
    await eventually(lambda: len(setup.logs.records) == 1)
    assert setup.logs.records[0].ws_close_code is None


async def test_client_close_code_reaches_revision(setup: Setup, ws_rev: Revision) -> None:
    url = await service(setup, route(ws_rev.backend))
    async with ws_connect(ws_url(url, "/chat")) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
        await ws.close(4000, "user left")
    assert ws.close_code == 4000
    await eventually(lambda: ws_rev.ws_closes == [4000])
    await eventually(lambda: len(setup.logs.records) == 1)
    assert setup.logs.records[0].ws_close_code == 4000


async def test_client_dropping_the_connection_is_1006_for_revision(
    setup: Setup, ws_rev: Revision
) -> None:
    url = await service(setup, route(ws_rev.backend))
    async with ws_connect(ws_url(url, "/chat")) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
        ws.transport.abort()
    await eventually(lambda: ws_rev.ws_closes == [1006])
    await eventually(lambda: len(setup.logs.records) == 1)


async def test_revision_refusing_upgrade_gives_client_its_status(
    setup: Setup, rev_a: Revision
) -> None:
    url = await service(setup, route(rev_a.backend))
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(ws_url(url, "/refuse")):
            pass
    assert refused.value.response.status_code == 403
    assert refused.value.response.headers["X-Why"] == "denied"
    await eventually(lambda: len(setup.logs.records) == 1)
    assert setup.logs.records[0].status == 403


async def test_traffic_change_leaves_open_websockets_on_their_revision(
    setup: Setup, rev_a: Revision, rev_b: Revision
) -> None:
    url = await service(setup, route(rev_a.backend))
    async with ws_connect(ws_url(url, "/ws")) as old:
        await old.send("who")
        assert await old.recv() == rev_a.name
        setup.router.set_routes("svc:chat", [route(rev_b.backend)])
        async with ws_connect(ws_url(url, "/ws")) as new:
            await new.send("who")
            assert await new.recv() == rev_b.name
        await old.send("who")
        assert await old.recv() == rev_a.name
    await eventually(lambda: len(setup.logs.records) == 2)
    assert sorted(r.ref.revision for r in setup.logs.records) == [rev_a.name, rev_b.name]


async def test_many_concurrent_sessions_each_get_their_own_answers(
    setup: Setup, ws_rev: Revision
) -> None:
    url = await service(setup, route(ws_rev.backend))

    async def session(i: int) -> None:
        async with ws_connect(ws_url(url, "/chat")) as ws:
            for j in range(5):
                await ws.send(f"{i}:{j}")
                assert await ws.recv() == f"{i}:{j}"

    await asyncio.gather(*(session(i) for i in range(30)))
    await eventually(lambda: len(setup.metrics.records) == 30)
    assert {r.ws_close_code for r in setup.metrics.records} == {1000}


async def test_stop_closes_open_websockets_with_going_away(rev_a: Revision) -> None:
    router = Router(RecordingSink(), RecordingSink())
    url = await router.open_endpoint("svc:chat")
    router.set_routes("svc:chat", [route(rev_a.backend)])
    async with ws_connect(ws_url(url, "/ws")) as ws:
        await ws.send("who")
        assert await ws.recv() == rev_a.name
        await router.stop()
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1001


# -- the request timeout -------------------------------------------------------------


@pytest.mark.fault(
    "emulator", "HTTP request outlasting the revision's timeout", "504 with Cloud Run's text"
)
async def test_a_request_that_reaches_the_timeout_is_504_and_logged_so(
    setup: Setup, rev_a: Revision
) -> None:
    url = await service(setup, route(replace(rev_a.backend, timeout_s=1.0)))
    async with httpx.AsyncClient(timeout=30) as client:
        late = await client.get(f"{url}/slow?s=30")
        quick = await client.get(f"{url}/echo")
    assert late.status_code == 504
    assert "reached the maximum request timeout" in late.text
    assert quick.status_code == 200  # the timeout is per request, not per revision
    await eventually(lambda: len(setup.logs.records) == 2)
    timed_out, fine = setup.logs.records
    assert (timed_out.status, timed_out.message) == (504, TIMEOUT_MESSAGE)
    assert (fine.status, fine.message) == (200, "")
    assert [r.status for r in setup.metrics.records] == [504, 200]


@pytest.mark.fault(
    "emulator", "HTTP answer still streaming at the timeout", "connection cut, 504 logged"
)
async def test_an_answer_still_streaming_at_the_timeout_is_cut(
    setup: Setup, rev_a: Revision
) -> None:
    url = await service(setup, route(replace(rev_a.backend, timeout_s=1.0)))
    received: list[bytes] = []

    async def read_all(resp: httpx.Response) -> None:
        async for chunk in resp.aiter_bytes():
            received.append(chunk)

    async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", f"{url}/drip") as resp:
        assert resp.status_code == 200  # already sent when the timeout struck
        with pytest.raises(httpx.RemoteProtocolError):
            await read_all(resp)
    assert b"".join(received) == b"first;"
    await eventually(lambda: len(setup.logs.records) == 1)
    assert (setup.logs.records[0].status, setup.logs.records[0].message) == (504, TIMEOUT_MESSAGE)


@pytest.mark.fault(
    "emulator", "WebSocket session outlasting the revision's timeout", "cut, 1006 on both sides"
)
async def test_a_websocket_session_is_cut_at_the_timeout_without_a_close_frame(
    setup: Setup, ws_rev: Revision
) -> None:
    url = await service(setup, route(replace(ws_rev.backend, timeout_s=1.0)))
    async with ws_connect(ws_url(url, "/chat"), ping_interval=None) as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()  # the revision sends nothing more: only the timeout ends this
    assert closed.value.rcvd is None  # no close frame: the client sees an abnormal closure
    assert ws.close_code == 1006
    await eventually(lambda: ws_rev.ws_closes == [1006])
    await eventually(lambda: len(setup.logs.records) == 1)
    record = setup.logs.records[0]
    assert (record.status, record.ws_close_code, record.message) == (101, None, TIMEOUT_MESSAGE)


async def test_a_session_that_ends_before_the_timeout_is_left_alone(
    setup: Setup, ws_rev: Revision
) -> None:
    url = await service(setup, route(replace(ws_rev.backend, timeout_s=30.0)))
    async with ws_connect(ws_url(url, "/chat")) as ws:
        await ws.send("x")
        assert await ws.recv() == "x"
    assert ws.close_code == 1000
    await eventually(lambda: len(setup.logs.records) == 1)
    assert (setup.logs.records[0].ws_close_code, setup.logs.records[0].message) == (1000, "")


def test_module_imports_no_google_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys, deploy_guard.emulator.router; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('google.cloud'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


async def test_a_client_that_is_not_http_is_one_warning_line_never_a_traceback(
    setup: Setup, rev_a: Revision, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gRPC client pointed at a service URL (not the emulator's address) is a user slip."""
    from structlog.testing import capture_logs

    url = await service(setup, route(rev_a.backend))
    host, port = url.removeprefix("http://").split(":")
    with capture_logs() as events:
        reader, writer = await asyncio.open_connection(host, int(port))
        # HTTP/2's connection preface, then a SETTINGS frame, as gRPC sends first
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        await writer.drain()
        answer = await reader.read()
        writer.close()
    assert b" 400 Bad Request" in answer.split(b"\r\n", 1)[0]
    bad = [e for e in events if e["event"] == "router_bad_request"]
    assert len(bad) == 1
    assert "DEPLOY_GUARD_EMULATOR_HOST" in bad[0]["hint"]
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
