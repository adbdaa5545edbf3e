"""TLS is verified by default; ``verify_tls=False`` (``--insecure``) accepts self-signed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import WSMsgType, web
from probe_helpers import EVENTS, ChatFactory, collect, http_rule, ws_rule

from deploy_guard.probes.target import Target

x509 = pytest.importorskip("cryptography.x509")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def https_url(tmp_path: Path) -> AsyncIterator[str]:
    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def chat(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                user = frame.json()["user_id"]
                for name in EVENTS:
                    await ws.send_json({"type": name, "user_id": user})
        return ws

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ws/chat", chat)
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]
    yield f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def test_self_signed_certificate_is_refused_by_default(https_url: str) -> None:
    http = (await collect(http_rule(requests=1), Target(https_url)))[-1]
    assert http.failures_by_cause == {"connect_error": 1}
    assert "CERTIFICATE_VERIFY_FAILED" in http.samples[0].detail
    ws = (await collect(ws_rule(sessions=1, concurrency=1), Target(https_url)))[-1]
    assert ws.failures_by_cause == {"connect_error": 1}
    for sample in (http.samples[0], ws.samples[0]):  # the cause, and the fix for a test server
        assert "TLS certificate is not trusted" in sample.detail
        assert "--insecure" in sample.detail


async def test_insecure_target_accepts_it(https_url: str) -> None:
    target = Target(https_url, verify_tls=False)
    http = (await collect(http_rule(requests=2), target))[-1]
    assert http.succeeded == 2
    ws = (await collect(ws_rule(sessions=2, concurrency=2), target))[-1]
    assert ws.succeeded == 2


async def test_https_to_a_plain_http_server_says_so(chat_server: ChatFactory) -> None:
    served = await chat_server()
    https_url = served.url.replace("http://", "https://")
    last = (await collect(http_rule(requests=1), Target(https_url)))[-1]
    assert last.failures_by_cause == {"connect_error": 1}
    assert "did not answer with TLS: should the URL be http://?" in last.samples[0].detail
