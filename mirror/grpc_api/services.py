"""The mirror's gRPC servicers: ImageService, OperationService and endpoint discovery.

Each method validates as the REST handler does (``mirror.listing``) and asks
the same reader (``ImageReader``, ``DeleteTracker``): a page token from a REST
page continues over gRPC and back. List and Get answer wire bytes, the index's
JSON docs encoded straight to ``Image`` (``mirror.image_wire``) or taken from
the cache of serialized images (``wire_cache``), no message objects; the other
methods answer the JSON parsed into the SDK's message (``mirror.grpc_wire``).
``OperationService.Cancel`` answers UNIMPLEMENTED: a Delete the upstream has
accepted cannot be called back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from yandex.cloud.containerregistry.v1 import image_service_pb2, image_service_pb2_grpc
from yandex.cloud.endpoint import (
    api_endpoint_pb2,
    api_endpoint_service_pb2,
    api_endpoint_service_pb2_grpc,
)
from yandex.cloud.operation import operation_pb2, operation_service_pb2, operation_service_pb2_grpc

from mirror.api.auth import ADMIN, READ
from mirror.api.image_list import ImageReader
from mirror.api.images import image_doc
from mirror.api.operations import DeleteTracker
from mirror.errors import NotFound, Unimplemented
from mirror.grpc_api.calls import Context, Guard, actor_of, rpc
from mirror.grpc_api.wire_cache import ImageWireCache
from mirror.grpc_wire import from_dict, from_json, list_request
from mirror.listing import validate_resource_id

# The SDK's service ids (yandexcloud's endpoint discovery): the mirror answers for
# these. ``iam`` is listed because the SDK looks it up before any authenticated
# call; with an ``iam_token`` it never calls it (the mirror has no IAM service).
SERVED_ENDPOINTS = ("container-registry", "operation", "endpoint", "iam")
IMAGE_SERVICE = image_service_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name


class ImageService(image_service_pb2_grpc.ImageServiceServicer):
    """List and Get answer serialized bytes (``add_image_service`` sends them as they are)."""

    def __init__(
        self, images: ImageReader, deletes: DeleteTracker, guard: Guard, cache: ImageWireCache
    ) -> None:
        self.images = images
        self.deletes = deletes
        self.guard = guard
        self.cache = cache

    @rpc(READ)
    async def List(  # type: ignore[override]
        self, request: image_service_pb2.ListImagesRequest, context: Context
    ) -> bytes:
        docs, token = await self.images.list_docs(list_request(request))
        return self.cache.page(docs, token)

    @rpc(READ)
    async def Get(  # type: ignore[override]
        self, request: image_service_pb2.GetImageRequest, context: Context
    ) -> bytes:
        image_id = validate_resource_id("imageId", request.image_id)
        return self.cache.image(await image_doc(self.images, image_id))

    @rpc(ADMIN)
    async def Delete(
        self, request: image_service_pb2.DeleteImageRequest, context: Context
    ) -> operation_pb2.Operation:
        image_id = validate_resource_id("imageId", request.image_id)
        # As over REST: only an image the index holds is forwarded (the mirror vouches for it).
        if not await self.images.holds(image_id):
            raise NotFound(f"Image {image_id} not found")
        operation = await self.deletes.start_delete(image_id, actor_of(context))
        return from_dict(operation, operation_pb2.Operation())


def _serialize(answer: bytes | Message) -> bytes:
    return answer if isinstance(answer, bytes) else answer.SerializeToString()


def add_image_service(service: ImageService, server: grpc.aio.Server) -> None:
    """``add_ImageServiceServicer_to_server``, but an answer in bytes goes out as it is."""
    requests: dict[str, Any] = {
        "List": image_service_pb2.ListImagesRequest,
        "Get": image_service_pb2.GetImageRequest,
        "Delete": image_service_pb2.DeleteImageRequest,
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(service, name),
            request_deserializer=message.FromString,
            response_serializer=_serialize,
        )
        for name, message in requests.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(IMAGE_SERVICE, handlers),)
    )
    server.add_registered_method_handlers(IMAGE_SERVICE, handlers)


class OperationService(operation_service_pb2_grpc.OperationServiceServicer):
    def __init__(self, deletes: DeleteTracker, guard: Guard) -> None:
        self.deletes = deletes
        self.guard = guard

    @rpc(READ)
    async def Get(
        self, request: operation_service_pb2.GetOperationRequest, context: Context
    ) -> operation_pb2.Operation:
        operation_id = validate_resource_id("operationId", request.operation_id)
        return from_json(await self.deletes.get(operation_id), operation_pb2.Operation())

    @rpc(ADMIN)
    async def Cancel(
        self, request: operation_service_pb2.CancelOperationRequest, context: Context
    ) -> operation_pb2.Operation:
        validate_resource_id("operationId", request.operation_id)
        raise Unimplemented("Cancel is not supported: the mirror's operations run upstream")


class ApiEndpointService(api_endpoint_service_pb2_grpc.ApiEndpointServiceServicer):
    """Endpoint discovery: every service the SDK asks the mirror for is at the mirror."""

    def __init__(self, address: str, ids: Sequence[str] = SERVED_ENDPOINTS) -> None:
        self.guard = Guard(None)
        self.endpoints = [api_endpoint_pb2.ApiEndpoint(id=i, address=address) for i in ids]

    @rpc(None)
    async def List(
        self, request: api_endpoint_service_pb2.ListApiEndpointsRequest, context: Context
    ) -> api_endpoint_service_pb2.ListApiEndpointsResponse:
        return api_endpoint_service_pb2.ListApiEndpointsResponse(endpoints=self.endpoints)

    @rpc(None)
    async def Get(
        self, request: api_endpoint_service_pb2.GetApiEndpointRequest, context: Context
    ) -> api_endpoint_pb2.ApiEndpoint:
        for endpoint in self.endpoints:
            if endpoint.id == request.api_endpoint_id:
                return endpoint
        raise NotFound(f"Api endpoint {request.api_endpoint_id} not found")
