"""The gRPC listener's health follows the database as ``/readyz`` does; its calls show on ``/metrics``.

The health test kills a PostgreSQL of its own (SIGKILL to every postgres process
of it), never the session's shared server, then starts it again on the same
data dir: ``grpc.health.v1`` Check and Watch go NOT_SERVING and back to SERVING,
``/readyz`` 503 and back to 200, each awaited by polling with a deadline.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from yandex.cloud.containerregistry.v1 import image_service_pb2, image_service_pb2_grpc

from mirror.api.app import create_app
from mirror.grpc_api.server import SERVICE_NAMES, start_for_app
from mirror.settings import Settings
from mirror.store.database import open_database
from mirror.store.embedded import EmbeddedPostgres
from tests.integration.test_ingest_database_loss import kill_postgres

pytestmark = pytest.mark.timeout(180)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
IMAGE_SERVICE, OPERATION_SERVICE, ENDPOINT_SERVICE = SERVICE_NAMES
DEADLINE_S = 60.0
POLL_S = 0.1


@dataclass
class Stack:
    api: TestClient
    channel: grpc.aio.Channel


@asynccontextmanager
async def serving(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Stack]:
    """The HTTP API (test client) and the gRPC listener over ``pool``, as ``mirror serve`` runs them."""
    app = create_app(settings.with_(grpc_port=0), pool=pool)
    async with TestClient(TestServer(app)) as api:
        listener = await start_for_app(app, "127.0.0.1")
        assert listener is not None
        try:
            async with grpc.aio.insecure_channel(listener.address) as channel:
                yield Stack(api, channel)
        finally:
            await listener.stop()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls ``check`` until it holds; fails after ``DEADLINE_S``."""
    for _ in range(int(DEADLINE_S / POLL_S)):
        if await check():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"not within {DEADLINE_S} s: {what}")


async def test_grpc_health_follows_the_database_down_and_back() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mirror-test-pg-"))
    server = EmbeddedPostgres(data_dir)
    try:
        dsn = await server.astart()
        settings = Settings.load(env={"MIRROR_DATABASE_URL": dsn})
        async with open_database(settings) as pool, serving(settings, pool) as stack:
            health = health_pb2_grpc.HealthStub(stack.channel)

            async def status(service: str = "") -> Any:
                request = health_pb2.HealthCheckRequest(service=service)
                return (await health.Check(request, timeout=10)).status

            async def ready() -> int:
                async with stack.api.get("/readyz") as response:
                    return response.status

            watched: list[Any] = []
            watch = health.Watch(health_pb2.HealthCheckRequest(service=IMAGE_SERVICE))

            async def follow() -> None:
                async for answer in watch:
                    watched.append(answer.status)

            follower = asyncio.create_task(follow())
            try:
                assert [await status(s) for s in ("", *SERVICE_NAMES)] == [SERVING] * 4
                assert await ready() == 200
                await until(lambda: _holds(SERVING in watched), "Watch heard SERVING")

                assert kill_postgres(server) >= 1
                await until(
                    lambda: _is(status(), NOT_SERVING), "NOT_SERVING once the database died"
                )
                assert await status(IMAGE_SERVICE) == await status(OPERATION_SERVICE) == NOT_SERVING
                assert await status(ENDPOINT_SERVICE) == SERVING  # discovery needs no database
                assert await ready() == 503  # the HTTP probe agrees
                await until(lambda: _holds(NOT_SERVING in watched), "Watch heard NOT_SERVING")
                with pytest.raises(grpc.aio.AioRpcError) as down:
                    await image_service_pb2_grpc.ImageServiceStub(stack.channel).List(
                        image_service_pb2.ListImagesRequest(folder_id="b1gfolder"), timeout=10
                    )
                assert down.value.code() is grpc.StatusCode.UNAVAILABLE

                await server.astop()  # forgets the dead server (nothing left to stop)
                assert await EmbeddedPostgres(data_dir).astart() == dsn  # same socket, same pool
                await until(lambda: _is(status(), SERVING), "SERVING once the database is back")
                assert await status(IMAGE_SERVICE) == SERVING and await ready() == 200
                await until(lambda: _holds(watched[-1] == SERVING), "Watch heard SERVING again")
                heard = [s for s in watched if s != UNKNOWN]  # UNKNOWN: before the first probe
                assert heard == [SERVING, NOT_SERVING, SERVING], watched
            finally:
                watch.cancel()
                await asyncio.gather(follower, return_exceptions=True)
    finally:
        await EmbeddedPostgres(data_dir, delete_on_stop=True).astop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _holds(condition: bool) -> bool:
    return condition


def grpc_counts(text: str) -> dict[tuple[str, str], float]:
    """``(method, code)`` -> calls, from the gRPC histogram's ``_count`` samples."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "mirror_grpc_request_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    key = (sample.labels["method"], sample.labels["code"])
                    assert sample.labels["service"] in (*SERVICE_NAMES, "grpc.health.v1.Health")
                    counts[key] = counts.get(key, 0) + sample.value
    return counts


async def test_grpc_calls_show_on_metrics(settings: Settings, db_pool: asyncpg.Pool) -> None:
    async with serving(settings, db_pool) as stack:

        async def scrape() -> dict[tuple[str, str], float]:
            async with stack.api.get("/metrics") as response:
                assert response.status == 200
                return grpc_counts(await response.text())

        before = await scrape()
        images = image_service_pb2_grpc.ImageServiceStub(stack.channel)
        for _ in range(3):
            page = await images.List(image_service_pb2.ListImagesRequest(folder_id="b1gfolder"))
            assert not page.images
        for request in (
            image_service_pb2.GetImageRequest(image_id="crpnosuchimage"),
            image_service_pb2.ListImagesRequest(folder_id="b1gfolder", page_size=-1),
        ):
            call = (
                images.Get
                if isinstance(request, image_service_pb2.GetImageRequest)
                else images.List
            )
            with pytest.raises(grpc.aio.AioRpcError):
                await call(request)  # type: ignore[operator]
        await health_pb2_grpc.HealthStub(stack.channel).Check(health_pb2.HealthCheckRequest())
        after = await scrape()

        moved = {
            key: after[key] - before.get(key, 0)
            for key in after
            if after[key] != before.get(key, 0)
        }
        assert moved == {
            ("List", "OK"): 3,
            ("Get", "NOT_FOUND"): 1,
            ("List", "INVALID_ARGUMENT"): 1,
            ("Check", "OK"): 1,
        }
