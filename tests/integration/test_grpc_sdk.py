"""The official Python SDK, pointed at the mirror, works unchanged but for its endpoint and token.

``mirror run``'s composition (``start_mirror``) mirrors a simulator, then the SDK
(``yandexcloud.SDK``) is given the mirror's gRPC address, a mirror API token and
the test CA: its endpoint discovery leads back to the mirror, every page of
every scope equals the REST walk and the upstream, a Delete completes through
``wait_operation_and_get_result`` and leaves both APIs with one event. The plain
form (``insecure=True``, no tokens, loopback) works too.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yandexcloud
from google.protobuf import descriptor_pool, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from yandex.cloud.containerregistry.v1 import image_service_pb2
from yandex.cloud.containerregistry.v1.image_service_pb2_grpc import ImageServiceStub
from yandex.cloud.endpoint import api_endpoint_service_pb2
from yandex.cloud.endpoint.api_endpoint_service_pb2_grpc import ApiEndpointServiceStub
from yandex.cloud.operation import operation_service_pb2
from yandex.cloud.operation.operation_service_pb2_grpc import OperationServiceStub

from mirror.listing import parse_list_request
from mirror.runner.app import Mirror, RunOptions, start_mirror
from mirror.settings import Secret, Settings
from mirror.upstream.simulator import RunningSimulator, SimulatorConfig, serve_simulator
from tests.contract.harness import ContractTarget, expected_images, walk
from tests.integration.test_runner import FirstPass, mirror_settings
from tests.tls_support import CertificateFiles, make_certificates

pytestmark = pytest.mark.timeout(240)

IMAGES = 700
READ_TOKEN = "read-token-for-the-sdk-test"
ADMIN_TOKEN = "admin-token-for-the-sdk-test"
PAGE = 37
COUNT_DELETED_EVENTS = (
    "SELECT count(*) FROM outbox_events WHERE type = 'registry.image.deleted' AND key = $1"
)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with serve_simulator(
        SimulatorConfig(images=IMAGES, seed=11, operation_delay=0.05)
    ) as running:
        yield running


@pytest.fixture
def certificates(tmp_path: Path) -> CertificateFiles:
    return make_certificates(tmp_path)


@asynccontextmanager
async def running_mirror(settings: Settings) -> AsyncIterator[Mirror]:
    stop = asyncio.Event()
    first = FirstPass()
    async with start_mirror(
        settings, RunOptions(port=0, interval=3600), stop, hooks=first.hooks()
    ) as mirror:
        summary = await first.wait()
        assert summary.images == IMAGES and not summary.failed
        yield mirror


def scopes(simulator: RunningSimulator) -> Iterator[dict[str, str]]:
    """Every scope of the registry: folders, registries and repositories."""
    model = simulator.registry.model
    for folder_id in model.folder_ids:
        yield {"folderId": folder_id}
    for registry_id in model.registry_ids:
        yield {"registryId": registry_id}
        for repository in simulator.registry.repositories(registry_id):
            yield {"repositoryName": repository.name}


FIELDS = {"folderId": "folder_id", "registryId": "registry_id", "repositoryName": "repository_name"}


def sdk_walk(images: Any, scope: dict[str, str]) -> list[dict[str, Any]]:
    """Every image of a scope through the SDK's stub, page by page."""
    found: list[dict[str, Any]] = []
    token = ""
    fields = {FIELDS[name]: value for name, value in scope.items()}
    while True:
        page = images.List(
            image_service_pb2.ListImagesRequest(page_size=PAGE, page_token=token, **fields)
        )
        found += [json_format.MessageToDict(image) for image in page.images]
        assert len(page.images) == PAGE or not page.next_page_token
        token = page.next_page_token
        if not token:
            return found


async def test_the_sdk_lists_gets_and_deletes_through_the_mirror(
    settings: Settings, simulator: RunningSimulator, certificates: CertificateFiles
) -> None:
    configured = mirror_settings(settings, simulator).with_(
        grpc_port=0,
        tls_cert=certificates.cert_file,
        tls_key=certificates.key_file,
        api_tokens={Secret(READ_TOKEN): "read", Secret(ADMIN_TOKEN): "admin"},
    )
    async with running_mirror(configured) as mirror:
        assert mirror.grpc_address and mirror.api_url.startswith("https://")
        sdk = yandexcloud.SDK(
            endpoint=mirror.grpc_address,
            iam_token=ADMIN_TOKEN,
            root_certificates=certificates.ca_pem,
        )
        # The SDK blocks (its endpoint discovery too): off the loop the mirror serves on.
        images = await asyncio.to_thread(sdk.client, ImageServiceStub)
        client_ssl = ssl.create_default_context(cafile=str(certificates.ca_file))
        async with aiohttp.ClientSession(
            base_url=mirror.api_url, connector=aiohttp.TCPConnector(ssl=client_ssl)
        ) as session:
            rest = ContractTarget(
                client=session,
                truth=simulator.registry,
                headers={"Authorization": f"Bearer {READ_TOKEN}"},
            )
            walked = 0
            for scope in scopes(simulator):
                over_grpc = await asyncio.to_thread(sdk_walk, images, scope)
                over_rest = await walk(rest, {**scope, "pageSize": str(PAGE)})
                upstream = expected_images(simulator.registry, parse_list_request(scope))
                assert over_grpc == over_rest == upstream, scope
                walked += len(over_grpc)
            assert walked == 3 * IMAGES  # each image in its folder, registry and repository

            victim = next(iter(simulator.registry.ids()))
            got = await asyncio.to_thread(
                images.Get, image_service_pb2.GetImageRequest(image_id=victim)
            )
            assert json_format.MessageToDict(got) == simulator.registry.get(victim).to_json()

            operation = await asyncio.to_thread(
                images.Delete, image_service_pb2.DeleteImageRequest(image_id=victim)
            )
            result = await asyncio.to_thread(
                sdk.wait_operation_and_get_result,
                operation,
                meta_type=image_service_pb2.DeleteImageMetadata,
                timeout=60,
            )
            assert result.meta.image_id == victim
            assert simulator.registry.get(victim) is None
            with pytest.raises(grpc.RpcError) as missing:
                await asyncio.to_thread(
                    images.Get, image_service_pb2.GetImageRequest(image_id=victim)
                )
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND
            assert missing.value.details() == f"Image {victim} not found"
            async with session.get(
                f"/container-registry/v1/images/{victim}", headers=rest.headers
            ) as response:
                assert response.status == 404
            async with mirror.pool.acquire() as conn:
                assert await conn.fetchval(COUNT_DELETED_EVENTS, victim) == 1


def resolve_by_reflection(address: str, ca_pem: bytes) -> list[str]:
    """The ImageService's methods, from descriptors fetched by reflection alone."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(address, credentials) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("yandex.cloud.containerregistry.v1.ImageService")
        assert service.methods_by_name["List"].input_type.fields_by_name["page_size"]
        return sorted(service.methods_by_name)


async def test_tokens_roles_tls_health_reflection_and_discovery(
    settings: Settings, simulator: RunningSimulator, certificates: CertificateFiles
) -> None:
    configured = mirror_settings(settings, simulator).with_(
        grpc_port=0,
        tls_cert=certificates.cert_file,
        tls_key=certificates.key_file,
        api_tokens={Secret(READ_TOKEN): "read", Secret(ADMIN_TOKEN): "admin"},
    )
    async with running_mirror(configured) as mirror:
        assert mirror.grpc_address
        credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca_pem)
        async with grpc.aio.secure_channel(mirror.grpc_address, credentials) as channel:
            images = ImageServiceStub(channel)
            folder = simulator.registry.model.folder_ids[0]
            request = image_service_pb2.ListImagesRequest(folder_id=folder, page_size=5)

            async def status_of(call: Any) -> grpc.StatusCode:
                try:
                    await call
                except grpc.aio.AioRpcError as exc:
                    keys = [k for k, _ in exc.trailing_metadata() or ()]
                    assert "x-request-id" in keys and "grpc-status-details-bin" in keys
                    return exc.code()
                return grpc.StatusCode.OK

            read = (("authorization", f"Bearer {READ_TOKEN}"),)
            assert await status_of(images.List(request)) is grpc.StatusCode.UNAUTHENTICATED
            wrong = (("authorization", "Bearer not-a-token"),)
            assert await status_of(images.List(request, metadata=wrong)) is (
                grpc.StatusCode.UNAUTHENTICATED
            )
            assert await status_of(images.List(request, metadata=read)) is grpc.StatusCode.OK
            victim = next(iter(simulator.registry.ids()))
            delete = image_service_pb2.DeleteImageRequest(image_id=victim)
            assert await status_of(images.Delete(delete, metadata=read)) is (
                grpc.StatusCode.PERMISSION_DENIED
            )
            assert simulator.registry.get(victim) is not None
            operations = OperationServiceStub(channel)
            cancel = operation_service_pb2.CancelOperationRequest(operation_id="crp" + "0" * 17)
            admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
            assert await status_of(operations.Cancel(cancel, metadata=admin)) is (
                grpc.StatusCode.UNIMPLEMENTED
            )
            missing = operation_service_pb2.GetOperationRequest(operation_id="crp" + "0" * 17)
            assert await status_of(operations.Get(missing, metadata=read)) is (
                grpc.StatusCode.NOT_FOUND
            )

            # public: health, reflection and endpoint discovery need no token
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "yandex.cloud.containerregistry.v1.ImageService"):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            listed = set()
            async for reply in reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            ):
                listed |= {s.name for s in reply.list_services_response.service}
            assert {
                "yandex.cloud.containerregistry.v1.ImageService",
                "yandex.cloud.operation.OperationService",
                "yandex.cloud.endpoint.ApiEndpointService",
                "grpc.health.v1.Health",
            } <= listed
            # what grpcurl does: resolve a service and its files' dependencies by reflection
            resolved = await asyncio.to_thread(
                resolve_by_reflection, mirror.grpc_address, certificates.ca_pem
            )
            assert resolved == ["Delete", "Get", "List"]
            endpoints = ApiEndpointServiceStub(channel)
            found = await endpoints.Get(
                api_endpoint_service_pb2.GetApiEndpointRequest(api_endpoint_id="container-registry")
            )
            assert found.address == mirror.grpc_address
            unknown = api_endpoint_service_pb2.GetApiEndpointRequest(api_endpoint_id="compute")
            assert await status_of(endpoints.Get(unknown)) is grpc.StatusCode.NOT_FOUND

        # TLS only: a plain-text client does not get an answer
        async with grpc.aio.insecure_channel(mirror.grpc_address) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ImageServiceStub(plain).List(request, metadata=read)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_page_tokens_cross_protocols(settings: Settings, simulator: RunningSimulator) -> None:
    """A token from a REST page continues over gRPC, and a gRPC page's token over REST."""
    async with running_mirror(mirror_settings(settings, simulator).with_(grpc_port=0)) as mirror:
        assert mirror.grpc_address
        registry = simulator.registry.model.registry_ids[0]
        params = {"registryId": registry, "orderBy": "name desc, created_at", "pageSize": "10"}
        expected = expected_images(simulator.registry, parse_list_request(params))
        assert len(expected) > 30
        async with (
            aiohttp.ClientSession(base_url=mirror.api_url) as session,
            grpc.aio.insecure_channel(mirror.grpc_address) as channel,
        ):
            images = ImageServiceStub(channel)
            async with session.get("/container-registry/v1/images", params=params) as response:
                first = await response.json()
            second = await images.List(
                image_service_pb2.ListImagesRequest(
                    registry_id=registry,
                    order_by=params["orderBy"],
                    page_size=10,
                    page_token=first["nextPageToken"],
                )
            )
            page = {**params, "pageToken": second.next_page_token}
            async with session.get("/container-registry/v1/images", params=page) as response:
                third = await response.json()
        got = [
            *first["images"],
            *(json_format.MessageToDict(image) for image in second.images),
            *third["images"],
        ]
        assert got == expected[:30]


async def test_the_sdk_plain_form_on_loopback(
    settings: Settings, simulator: RunningSimulator
) -> None:
    """No tokens, no TLS, loopback: ``sdk.client(..., endpoint=..., insecure=True)``."""
    async with running_mirror(mirror_settings(settings, simulator).with_(grpc_port=0)) as mirror:
        assert mirror.grpc_address and mirror.grpc_address.startswith("127.0.0.1:")
        sdk = yandexcloud.SDK(iam_token="unused")
        images = sdk.client(ImageServiceStub, endpoint=mirror.grpc_address, insecure=True)
        repository = next(simulator.registry.repositories(simulator.registry.model.registry_ids[0]))
        scope = {"repositoryName": repository.name}
        listed = await asyncio.to_thread(sdk_walk, images, scope)
        assert listed == expected_images(simulator.registry, parse_list_request(scope))
        got = await asyncio.to_thread(
            images.Get, image_service_pb2.GetImageRequest(image_id=listed[0]["id"])
        )
        assert json_format.MessageToDict(got) == listed[0]
        operation = await asyncio.to_thread(
            images.Delete, image_service_pb2.DeleteImageRequest(image_id=listed[0]["id"])
        )
        operations = sdk.client(OperationServiceStub, endpoint=mirror.grpc_address, insecure=True)
        for _ in range(200):
            done = await asyncio.to_thread(
                operations.Get, operation_service_pb2.GetOperationRequest(operation_id=operation.id)
            )
            if done.done:
                break
            await asyncio.sleep(0.05)
        assert done.done and not done.HasField("error")
        assert simulator.registry.get(listed[0]["id"]) is None
