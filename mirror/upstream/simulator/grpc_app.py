"""The simulator's gRPC face: ImageService and OperationService as the cloud serves them.

The same registry, validation and errors as the simulator's REST paths (the
handlers' JSON, parsed into the official SDK's messages), so the contract suite
has a reference gRPC server to run against. Errors end the call with the
cloud's status code, message and request id (``mirror.grpc_status``). Faults
(``/_sim/faults``) act on the REST API only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
from yandex.cloud.containerregistry.v1 import image_pb2, image_service_pb2, image_service_pb2_grpc
from yandex.cloud.operation import operation_pb2, operation_service_pb2, operation_service_pb2_grpc

from mirror.errors import ApiError, Internal, NotFound, Unimplemented
from mirror.grpc_status import abort, new_request_id, set_request_id
from mirror.grpc_wire import from_dict, image_message, list_request, list_response
from mirror.listen import host_port
from mirror.listing import validate_resource_id
from mirror.upstream.simulator.paging import list_body, list_page
from mirror.upstream.simulator.runtime import Simulator

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
S = TypeVar("S")
R = TypeVar("R")


def _rpc(
    method: Callable[[S, Any, Context], Awaitable[R]],
) -> Callable[[S, Any, Context], Awaitable[R]]:
    @functools.wraps(method)
    async def call(self: S, request: Any, context: Context) -> R:
        request_id = new_request_id()
        try:
            answer = await method(self, request, context)
        except ApiError as exc:
            await abort(context, exc, request_id)
        except Exception:
            log.exception("simulator: gRPC %s failed", method.__name__)
            await abort(context, Internal("Internal error"), request_id)
        set_request_id(context, request_id)
        return answer

    return call


class SimulatedImageService(image_service_pb2_grpc.ImageServiceServicer):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @_rpc
    async def List(
        self, request: image_service_pb2.ListImagesRequest, context: Context
    ) -> image_service_pb2.ListImagesResponse:
        sim = self.sim
        refs, token = await list_page(
            sim.registry, list_request(request), sim.faults.page_token_style
        )
        return list_response(list_body(sim.registry, refs, token))

    @_rpc
    async def Get(
        self, request: image_service_pb2.GetImageRequest, context: Context
    ) -> image_pb2.Image:
        image_id = validate_resource_id("imageId", request.image_id)
        image = self.sim.registry.lookup(image_id)
        if image is None:
            raise NotFound(f"Image {image_id} not found")
        return image_message(image.to_json())

    @_rpc
    async def Delete(
        self, request: image_service_pb2.DeleteImageRequest, context: Context
    ) -> operation_pb2.Operation:
        image_id = validate_resource_id("imageId", request.image_id)
        operation = self.sim.operations.start_delete(image_id, self.sim.faults.operation_delay)
        return from_dict(operation.to_json(), operation_pb2.Operation())


class SimulatedOperationService(operation_service_pb2_grpc.OperationServiceServicer):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    @_rpc
    async def Get(
        self, request: operation_service_pb2.GetOperationRequest, context: Context
    ) -> operation_pb2.Operation:
        operation_id = validate_resource_id("operationId", request.operation_id)
        operation = self.sim.operations.get(operation_id)
        if operation is None:
            raise NotFound(f"Operation {operation_id} not found")
        return from_dict(operation.to_json(), operation_pb2.Operation())

    @_rpc
    async def Cancel(
        self, request: operation_service_pb2.CancelOperationRequest, context: Context
    ) -> operation_pb2.Operation:
        raise Unimplemented("Cancel is not supported for image deletions")


@dataclass(slots=True)
class SimulatorGrpc:
    server: grpc.aio.Server
    address: str

    async def stop(self) -> None:
        await self.server.stop(0.5)


async def start_simulator_grpc(sim: Simulator, host: str, port: int) -> SimulatorGrpc:
    """Serve the simulator's gRPC API on ``host:port`` (0: a free port), plain text."""
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    bound = server.add_insecure_port(host_port(host, port))
    image_service_pb2_grpc.add_ImageServiceServicer_to_server(SimulatedImageService(sim), server)
    operation_service_pb2_grpc.add_OperationServiceServicer_to_server(
        SimulatedOperationService(sim), server
    )
    await server.start()
    return SimulatorGrpc(server, host_port(host, bound))
