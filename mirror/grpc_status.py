"""An ``ApiError`` as a gRPC status, the way the cloud's gRPC API returns errors.

Shared by the mirror's gRPC servicers and the simulator's (as ``mirror.listing``
is by their REST handlers). A failed call ends with the error's status code and
message, and trailing metadata carrying the request id twice: as
``x-request-id`` and inside ``grpc-status-details-bin``, a ``google.rpc.Status``
whose details hold a ``google.rpc.RequestInfo`` (what the REST error JSON's
``details`` holds). A successful call carries ``x-request-id`` too.
"""

from __future__ import annotations

import uuid
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from mirror.errors import ApiError, GrpcCode

REQUEST_ID_KEY = "x-request-id"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

STATUS_CODES: dict[GrpcCode, grpc.StatusCode] = {
    GrpcCode(code.value[0]): code for code in grpc.StatusCode
}


def new_request_id() -> str:
    return str(uuid.uuid4())


def status_code(error: ApiError) -> grpc.StatusCode:
    return STATUS_CODES.get(error.code, grpc.StatusCode.UNKNOWN)


def error_trailers(error: ApiError, request_id: str) -> tuple[tuple[str, str | bytes], ...]:
    """``x-request-id`` and the rich status (``google.rpc.Status`` with a RequestInfo)."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.RequestInfo(request_id=request_id))
    status = status_pb2.Status(code=int(error.code), message=error.message, details=[info])
    return ((REQUEST_ID_KEY, request_id), (STATUS_DETAILS_KEY, status.SerializeToString()))


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: ApiError, request_id: str
) -> NoReturn:
    """End the call with ``error`` (raises, as ``context.abort`` does)."""
    await context.abort(status_code(error), error.message, error_trailers(error, request_id))
    raise AssertionError("context.abort returned")  # pragma: no cover


def set_request_id(context: grpc.aio.ServicerContext[Any, Any], request_id: str) -> None:
    context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
