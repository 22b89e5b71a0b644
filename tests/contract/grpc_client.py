"""The contract's REST calls made over gRPC: a client the cases and scenarios use unchanged.

``GrpcClient`` has the ``get``/``delete`` of an aiohttp client, but each call is
the gRPC method the path names (List, Get, Delete of ImageService, Get of
OperationService), sent with the official SDK's stubs and messages. The answer
is rendered as the cloud's REST gateway would: the message as protobuf JSON,
or for a failed call ``{"code", "message", "details": [RequestInfo]}`` with the
gateway's HTTP status, the request id taken from the call's trailing metadata
(``x-request-id`` and the ``google.rpc.Status`` in ``grpc-status-details-bin``,
which must agree). So the one table of cases checks both protocols.

A request REST can say and a gRPC message cannot (a parameter twice, an unknown
parameter, a page size that is no int64, a path no method serves) is a test
bug here: such cases are marked ``rest_only``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import grpc
import orjson
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from yandex.cloud.containerregistry.v1 import image_service_pb2, image_service_pb2_grpc
from yandex.cloud.operation import operation_service_pb2, operation_service_pb2_grpc
from yarl import URL

from mirror.errors import HTTP_STATUS, GrpcCode

from .harness import IMAGES, OPERATIONS, REQUEST_INFO

LIST_FIELDS = {
    "registryId": "registry_id",
    "repositoryName": "repository_name",
    "folderId": "folder_id",
    "pageToken": "page_token",
    "filter": "filter",
    "orderBy": "order_by",
}
_IMAGE_PATH = re.compile(re.escape(IMAGES) + r"/([^/]*)")
_OPERATION_PATH = re.compile(re.escape(OPERATIONS) + r"/([^/]*)")


@dataclass
class GrpcAnswer:
    status: int
    headers: dict[str, str]
    body: str

    async def text(self) -> str:
        return self.body


def _id_in(pattern: re.Pattern[str], raw_path: str) -> str | None:
    match = pattern.fullmatch(raw_path)
    return unquote(match[1]) if match else None


class GrpcClient:
    """REST-shaped calls over one gRPC channel (``target``: ``host:port``)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.images = image_service_pb2_grpc.ImageServiceStub(channel)
        self.operations = operation_service_pb2_grpc.OperationServiceStub(channel)

    @contextlib.asynccontextmanager
    async def get(
        self, path: str, params: Any = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[GrpcAnswer]:
        yield await self._call("GET", path, params, headers or {})

    @contextlib.asynccontextmanager
    async def delete(
        self, path: str, params: Any = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[GrpcAnswer]:
        yield await self._call("DELETE", path, params, headers or {})

    async def _call(
        self, method: str, path: str | URL, params: Any, headers: Mapping[str, str]
    ) -> GrpcAnswer:
        metadata = tuple((k.lower(), v) for k, v in headers.items())
        # A raw path (escapes kept, e.g. %00 or %2f) names the id its segment decodes to.
        raw = path.raw_path if isinstance(path, URL) else path
        image = _id_in(_IMAGE_PATH, raw)
        operation = _id_in(_OPERATION_PATH, raw)
        call: Any
        if method == "GET" and raw == IMAGES:
            call = self.images.List(list_request(params), metadata=metadata)
        elif method == "GET" and image:
            call = self.images.Get(
                image_service_pb2.GetImageRequest(image_id=image), metadata=metadata
            )
        elif method == "DELETE" and image:
            call = self.images.Delete(
                image_service_pb2.DeleteImageRequest(image_id=image), metadata=metadata
            )
        elif method == "GET" and operation:
            call = self.operations.Get(
                operation_service_pb2.GetOperationRequest(operation_id=operation),
                metadata=metadata,
            )
        else:
            raise AssertionError(f"{method} {path}: no gRPC method; mark the case rest_only")
        try:
            message = await call
        except grpc.aio.AioRpcError as exc:
            return error_answer(exc)
        request_id = request_id_of(await call.trailing_metadata())
        assert request_id, "every answer carries x-request-id in its trailing metadata"
        return GrpcAnswer(
            200,
            {"Content-Type": "application/json", "X-Request-Id": request_id},
            json_format.MessageToJson(message, indent=None),
        )


def list_request(params: Mapping[str, str] | Sequence[tuple[str, str]] | None) -> Any:
    pairs = list(params.items() if isinstance(params, Mapping) else params or [])
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), "a parameter twice: mark the case rest_only"
    request = image_service_pb2.ListImagesRequest()
    for name, value in pairs:
        if name == "pageSize":
            request.page_size = int(value)  # a non-integer: mark the case rest_only
        else:
            assert name in LIST_FIELDS, f"{name}: no such field; mark the case rest_only"
            setattr(request, LIST_FIELDS[name], value)
    return request


def request_id_of(metadata: Any) -> str:
    return next((str(v) for k, v in metadata or () if k == "x-request-id"), "")


def error_answer(exc: grpc.aio.AioRpcError) -> GrpcAnswer:
    """A failed call as the REST gateway writes it, after checking its trailing metadata."""
    trailers = exc.trailing_metadata() or ()
    request_id = request_id_of(trailers)
    details = [v for k, v in trailers if k == "grpc-status-details-bin"]
    assert request_id and len(details) == 1, trailers
    status = status_pb2.Status.FromString(details[0])
    code = exc.code().value[0]
    assert status.code == code and status.message == exc.details(), (status, exc)
    info = error_details_pb2.RequestInfo()
    assert len(status.details) == 1 and status.details[0].Unpack(info)
    assert info.request_id == request_id
    body = {
        "code": code,
        "message": exc.details(),
        "details": [{"@type": REQUEST_INFO, "requestId": request_id}],
    }
    return GrpcAnswer(
        HTTP_STATUS[GrpcCode(code)],
        {"Content-Type": "application/json", "X-Request-Id": request_id},
        orjson.dumps(body).decode(),
    )
