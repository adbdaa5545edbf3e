"""Fixtures for the emulator's API tests: one API's handlers on their own gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from deploy_guard.gcp.clients import Clients

ServeHandlers = Callable[[grpc.GenericRpcHandler], Awaitable[Clients]]


@pytest.fixture
async def serve_handlers() -> AsyncIterator[ServeHandlers]:
    """``clients = await serve_handlers(logging_api.handlers(store))``: a server on 127.0.0.1:0.

    The official clients come from the guard's own factory, over a plain-text channel to it;
    servers and channels are closed when the test ends.
    """
    servers: list[grpc.aio.Server] = []
    opened: list[Clients] = []

    async def serve(handler: grpc.GenericRpcHandler) -> Clients:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        clients = Clients(host=f"127.0.0.1:{port}")
        opened.append(clients)
        return clients

    yield serve
    for clients in opened:
        clients.close()
    for server in servers:
        await server.stop(None)
