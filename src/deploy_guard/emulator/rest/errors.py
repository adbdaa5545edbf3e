"""Errors as Google's REST APIs answer them: an HTTP status and a JSON body.

Every refusal is ``{"error": {"code": 404, "message": "...", "status":
"NOT_FOUND"}}``, with the HTTP status that Google's gRPC-to-HTTP mapping gives
the canonical code (``google/rpc/code.proto``: ABORTED and ALREADY_EXISTS are
409, FAILED_PRECONDITION is 400, ...). The emulator's own errors are
:class:`~deploy_guard.errors.EmulatorError` with a gRPC status name, so the
same refusal reads the same over gRPC and over REST.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from deploy_guard.errors import EmulatorError

#: gRPC status name -> HTTP status.
HTTP_STATUS: dict[str, int] = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def http_status(status: str) -> int:
    """The HTTP status of a gRPC status name (500 for a name Google does not define)."""
    return HTTP_STATUS.get(status, 500)


def error_body(status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": http_status(status), "message": message, "status": status}}


def error_response(status: str, message: str) -> web.Response:
    return json_response(error_body(status, message), status=http_status(status))


def from_error(exc: EmulatorError) -> web.Response:
    return error_response(exc.status, exc.message)


def json_response(data: Any, status: int = 200) -> web.Response:
    """JSON the way Google's front ends send it (UTF-8, indented, a trailing newline)."""
    return web.Response(
        text=json.dumps(data, indent=2) + "\n",
        status=status,
        content_type="application/json",
    )


def invalid(message: str) -> EmulatorError:
    return EmulatorError("INVALID_ARGUMENT", message)
