"""Long-running operations (``google.longrunning.Operations``).

Cloud Run's writes return an ``Operation``; the official sync client polls
``GetOperation`` until ``done`` and then reads ``response`` (an ``Any`` holding
the resource) or ``error`` (a ``google.rpc.Status``). ``metadata`` holds the
resource too: the client reads it while the operation runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, empty_pb2
from google.rpc import status_pb2

from deploy_guard.emulator.paging import page
from deploy_guard.emulator.rpc import ServiceHandler, generic_handler, status_code
from deploy_guard.errors import EmulatorError


def _any(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(message).pb(message) if hasattr(type(message), "pb") else message)
    return packed


class OperationStore:
    """Every operation the emulator started, by name, and waiters for them."""

    def __init__(self, parent: str) -> None:
        self._parent = parent  # projects/P/locations/R
        self._ops: dict[str, operations_pb2.Operation] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._then: dict[str, list[Callable[[operations_pb2.Operation], None]]] = {}

    def start(self, metadata: Any) -> operations_pb2.Operation:
        """A new, running operation; ``metadata`` is the resource (proto-plus)."""
        name = f"{self._parent}/operations/{uuid.uuid4()}"
        op = operations_pb2.Operation(name=name, done=False, metadata=_any(metadata))
        self._ops[name] = op
        self._done[name] = asyncio.Event()
        return self.get(name)

    def finish(
        self, name: str, *, response: Any = None, error: EmulatorError | None = None
    ) -> operations_pb2.Operation:
        """Mark done with the final resource, or with the error the client will raise."""
        op = self._ops[name]
        op.done = True
        if error is not None:
            code = status_code(error.status).value[0]
            op.error.CopyFrom(status_pb2.Status(code=code, message=error.message))
        else:
            op.response.CopyFrom(_any(response))
            op.metadata.CopyFrom(_any(response))
        self._done[name].set()
        for callback in self._then.pop(name, []):
            callback(self.get(name))
        return self.get(name)

    def when_done(self, name: str, callback: Callable[[operations_pb2.Operation], None]) -> None:
        """Call ``callback`` with the operation once it is done (at once if it is)."""
        op = self.get(name)
        if op.done:
            callback(op)
        else:
            self._then.setdefault(name, []).append(callback)

    def done_now(self, resource: Any) -> operations_pb2.Operation:
        """An operation that finished at once (deletes, ``validate_only``)."""
        return self.finish(self.start(resource).name, response=resource)

    def get(self, name: str) -> operations_pb2.Operation:
        if name not in self._ops:
            raise EmulatorError("NOT_FOUND", f"operation {name!r} not found")
        copy = operations_pb2.Operation()
        copy.CopyFrom(self._ops[name])
        return copy

    # -- gRPC methods ---------------------------------------------------------------------

    async def get_operation(
        self, request: operations_pb2.GetOperationRequest, _ctx: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        return self.get(request.name)

    async def wait_operation(
        self, request: operations_pb2.WaitOperationRequest, ctx: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        self.get(request.name)  # NOT_FOUND first
        timeout = 60.0
        if request.HasField("timeout"):
            timeout = request.timeout.ToTimedelta().total_seconds()
        remaining = ctx.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining - 0.05, 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done[request.name].wait(), timeout)
        return self.get(request.name)

    async def list_operations(
        self, request: operations_pb2.ListOperationsRequest, _ctx: grpc.aio.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        prefix = request.name.rstrip("/") + "/" if request.name else ""
        names = [n for n in self._ops if n.startswith(prefix)]
        chunk, token = page(names, request.page_size, request.page_token)
        return operations_pb2.ListOperationsResponse(
            operations=[self.get(n) for n in chunk], next_page_token=token
        )

    async def delete_operation(
        self, request: operations_pb2.DeleteOperationRequest, _ctx: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        self.get(request.name)
        del self._ops[request.name]
        self._done.pop(request.name, None)
        self._then.pop(request.name, None)
        return empty_pb2.Empty()

    def handler(self) -> ServiceHandler:
        """``google.longrunning.Operations``, as the Cloud Run clients call it."""
        o = operations_pb2
        return generic_handler(
            "google.longrunning.Operations",
            [
                ("GetOperation", self.get_operation, o.GetOperationRequest, o.Operation),
                ("WaitOperation", self.wait_operation, o.WaitOperationRequest, o.Operation),
                (
                    "ListOperations",
                    self.list_operations,
                    o.ListOperationsRequest,
                    o.ListOperationsResponse,
                ),
                (
                    "DeleteOperation",
                    self.delete_operation,
                    o.DeleteOperationRequest,
                    empty_pb2.Empty,
                ),
            ],
        )
