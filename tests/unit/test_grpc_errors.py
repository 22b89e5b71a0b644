"""How a failure inside a gRPC method becomes the status the client sees (pure logic)."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from yandex.cloud.containerregistry.v1 import image_service_pb2

from mirror.errors import (
    ApiError,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
    UpstreamError,
    UpstreamStatusError,
)
from mirror.grpc_api.calls import _as_api_error
from mirror.grpc_status import error_trailers, status_code
from mirror.grpc_wire import list_request
from mirror.model import Scope, ScopeKind


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        (InvalidArgument("invalid pageSize: x"), grpc.StatusCode.INVALID_ARGUMENT, "invalid pageSize: x"),
        (UpstreamStatusError(NotFound("Image x not found"), 404), grpc.StatusCode.NOT_FOUND, "Image x not found"),
        (UpstreamError("timed out"), grpc.StatusCode.UNAVAILABLE, "the upstream is unavailable"),
        (ConnectionRefusedError(), grpc.StatusCode.UNAVAILABLE, "the index database is unavailable"),
        (asyncpg.CannotConnectNowError("starting"), grpc.StatusCode.UNAVAILABLE, "the index database is unavailable"),
        (KeyError("secret internals"), grpc.StatusCode.INTERNAL, "Internal error"),
    ],
)  # fmt: skip
def test_failures_map_to_the_clouds_status_codes(
    raised: Exception, code: grpc.StatusCode, message: str
) -> None:
    error = _as_api_error(raised, "List", "req-1")
    assert status_code(error) is code and error.message == message


def test_trailers_carry_the_request_id_and_the_rich_status() -> None:
    trailers = dict(error_trailers(Unavailable("the index database is unavailable"), "req-9"))
    assert trailers["x-request-id"] == "req-9"
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])  # type: ignore[arg-type]
    info = error_details_pb2.RequestInfo()
    assert status.code == 14 and status.details[0].Unpack(info) and info.request_id == "req-9"


@pytest.mark.parametrize("error", [Internal("x"), NotFound("x"), ApiError("x")])
def test_every_code_has_a_grpc_status(error: ApiError) -> None:
    assert status_code(error).value[0] == int(error.code)


def test_a_grpc_list_request_is_validated_as_the_rest_query() -> None:
    request = list_request(
        image_service_pb2.ListImagesRequest(
            registry_id="crpA", folder_id="b1g", page_size=0, order_by="name desc"
        )
    )
    assert request.scope == Scope(ScopeKind.REGISTRY, "crpA") and request.page_size == 100
    with pytest.raises(InvalidArgument, match="invalid pageSize: must not be negative"):
        list_request(image_service_pb2.ListImagesRequest(folder_id="b1g", page_size=-1))
    with pytest.raises(InvalidArgument, match="one of repositoryName, registryId or folderId"):
        list_request(image_service_pb2.ListImagesRequest())


async def test_the_fast_image_path_equals_json_format() -> None:
    """Constructors or json_format: the same messages, and unknown shapes take json_format."""
    from google.protobuf import json_format
    from yandex.cloud.containerregistry.v1 import image_pb2

    from mirror.grpc_wire import image_message, list_response
    from mirror.listing import parse_list_request
    from mirror.upstream.simulator import Simulator, SimulatorConfig
    from mirror.upstream.simulator.paging import list_body, list_page

    sim = Simulator.from_config(SimulatorConfig(images=3000, seed=4))
    folder = sim.registry.model.folder_ids[0]
    request = parse_list_request({"folderId": folder, "pageSize": "1000"})
    refs, token = await list_page(sim.registry, request, sim.faults.page_token_style)
    body = list_body(sim.registry, refs, token)
    slow = json_format.Parse(body, image_service_pb2.ListImagesResponse())
    assert list_response(body) == slow and len(slow.images) == 1000 and slow.next_page_token
    for ref in refs[:50]:
        image = sim.registry.record(ref).to_json()
        assert image_message(image) == json_format.ParseDict(image, image_pb2.Image())
    odd = {**sim.registry.record(refs[0]).to_json(), "someNewField": 1}
    assert image_message(odd) == image_message(sim.registry.record(refs[0]).to_json())
    assert list_response(b"{}") == image_service_pb2.ListImagesResponse()
