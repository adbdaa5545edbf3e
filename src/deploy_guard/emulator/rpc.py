"""Serve protobuf methods with ``grpc.aio`` without generated servicer code.

Each API module describes its methods as ``(name, handler, request type,
response type)`` and :func:`generic_handler` turns them into one
``grpc.GenericRpcHandler``. The request/response types may be proto-plus
classes (``run_v2.Service``) or raw protobuf classes (``operations_pb2``): both
expose ``serialize``/``deserialize`` or ``SerializeToString``/``FromString``.

Errors become data here, at the boundary: an :class:`EmulatorError` becomes
its gRPC status; anything else becomes INTERNAL with its message, is logged,
and the server keeps serving with its state intact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from deploy_guard.errors import EmulatorError
from deploy_guard.log import get_logger

log = get_logger("deploy_guard.emulator.rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _codec(message_type: Any) -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    if hasattr(message_type, "deserialize"):  # proto-plus
        return message_type.deserialize, message_type.serialize
    return message_type.FromString, lambda message: message.SerializeToString()


def status_code(name: str) -> grpc.StatusCode:
    """``"NOT_FOUND"`` -> ``grpc.StatusCode.NOT_FOUND`` (UNKNOWN if no such code)."""
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


def _guarded(method: str, handler: Handler, deserialize: Callable[[bytes], Any]) -> Handler:
    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = deserialize(raw)
        except DecodeError as exc:
            # grpc would answer UNKNOWN; the real APIs answer INVALID_ARGUMENT.
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}")
        try:
            return await handler(request, context)
        except EmulatorError as exc:
            await context.abort(status_code(exc.status), exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("emulator_rpc_failed", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, f"emulator error in {method}: {exc}")

    return call


def generic_handler(
    service: str, methods: list[tuple[str, Handler, Any, Any]]
) -> grpc.GenericRpcHandler:
    """One generic handler for ``service`` (``google.cloud.run.v2.Services``).

    Requests arrive as bytes and are parsed inside the guard, so a corrupt
    message is INVALID_ARGUMENT like on the real API, not grpc's UNKNOWN.
    """
    table = {}
    for name, handler, request_type, response_type in methods:
        deserialize, _ = _codec(request_type)
        _, serialize = _codec(response_type)
        table[name] = grpc.unary_unary_rpc_method_handler(
            _guarded(f"/{service}/{name}", handler, deserialize),
            request_deserializer=None,
            response_serializer=serialize,
        )
    return grpc.method_handlers_generic_handler(service, table)
