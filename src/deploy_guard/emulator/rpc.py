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

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
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


def _guarded_stream(
    method: str, stream_fn: Any, deserialize: Callable[[bytes], Any]
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """:func:`_guarded` for a bidirectional stream: requests arrive as bytes and are
    parsed as the handler reads them, so a corrupt one is INVALID_ARGUMENT (grpc
    would answer UNKNOWN); an EmulatorError the handler lets out becomes its status."""

    async def call(
        raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async def requests() -> AsyncIterator[Any]:
            async for raw in raw_requests:
                try:
                    request = deserialize(raw)
                except DecodeError as exc:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}"
                    )
                yield request

        try:
            async for response in stream_fn(requests(), context):
                yield response
        except EmulatorError as exc:
            await context.abort(status_code(exc.status), exc.message)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("emulator_rpc_failed", method=method)
            await context.abort(grpc.StatusCode.INTERNAL, f"emulator error in {method}: {exc}")

    return call


class ServiceHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The methods of one gRPC service, by full name (``/pkg.Service/Method``).

    Like ``grpc.method_handlers_generic_handler``, but it says which methods
    it serves, so a fault rule naming no served method is refused at once.
    """

    def __init__(self, service: str, table: dict[str, grpc.RpcMethodHandler]) -> None:
        self._table = {f"/{service}/{name}": handler for name, handler in table.items()}

    @property
    def method_names(self) -> list[str]:
        return list(self._table)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self._table.get(handler_call_details.method)


def generic_handler(
    service: str,
    methods: list[tuple[str, Handler, Any, Any]],
    streams: Sequence[tuple[str, Any, Any, Any]] = (),
) -> ServiceHandler:
    """One generic handler for ``service`` (``google.cloud.run.v2.Services``).

    ``methods`` are unary: their requests arrive as bytes and are parsed inside
    the guard, so a corrupt message is INVALID_ARGUMENT like on the real API,
    not grpc's UNKNOWN. ``streams`` are bidirectional streaming methods
    (``TailLogEntries``): ``(name, async generator function, request type,
    response type)``; their requests are parsed inside a guard of their own
    (the same INVALID_ARGUMENT for a corrupt one), and an error they raise is
    mapped like a unary method's.
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
    for name, stream_fn, request_type, response_type in streams:
        deserialize, _ = _codec(request_type)
        _, serialize = _codec(response_type)
        table[name] = grpc.stream_stream_rpc_method_handler(
            _guarded_stream(f"/{service}/{name}", stream_fn, deserialize),
            request_deserializer=None,
            response_serializer=serialize,
        )
    return ServiceHandler(service, table)
