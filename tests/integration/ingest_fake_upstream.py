"""A small, fully controllable upstream for the ingest tests.

Offset page tokens like the cloud's (so deleting an image before the cursor
shifts later pages), id order, folder → registry → repository scopes, Get, and
hooks to inject faults between pages. The simulator (``mirror simulate``) is the
faithful fake; this one exists to stage precise races.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from mirror.settings import Settings
from mirror.upstream.client import UpstreamClient
from mirror.upstream.retry import RetryPolicy
from mirror.upstream.throttle import Throttle

LAYER_POOL = 40
# Retries as a walk makes them, without the waits: a fault test's retries end at once.
FAST_RETRY = RetryPolicy(max_attempts=8, base_delay=0.001, max_delay=0.01, max_retry_after=0.05)


def make_image(
    n: int,
    *,
    registry: str = "reg1",
    repo: str | None = None,
    tags: tuple[str, ...] | None = None,
    layers: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """A deterministic image; layers come from a small shared pool, so digests repeat (dedup)."""
    layers = layers if layers is not None else (n % 3, 3 + n % 5, 8 + n % LAYER_POOL)
    return {
        "id": f"crp{n:017d}",
        "name": f"{registry}/{repo or f'app{n % 4}'}",
        "digest": f"sha256:{n:064x}",
        "compressedSize": str(sum(1000 + x for x in layers)),
        "config": {"id": f"cfg-{registry}-{n}", "digest": f"sha256:c{n:063x}", "size": "1234"},
        "layers": [
            {"id": f"{registry}-l{x}", "digest": f"sha256:a{x:063x}", "size": str(1000 + x)}
            for x in layers
        ],
        "tags": list(tags if tags is not None else (f"v{n}",)),
        "createdAt": f"2024-01-{1 + n % 28:02d}T10:00:{n % 60:02d}.123456789Z",
    }


class FakeUpstream:
    def __init__(self, folders: dict[str, str] | None = None) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.folders = folders or {"reg1": "f1", "reg2": "f1", "reg3": "f2"}  # registry -> folder
        self.list_calls = 0
        self.get_calls = 0
        # before answering a List request: may mutate self.images or return a response
        self.before_list: Callable[[int], web.Response | None] | None = None
        self.before_get: Callable[[str], web.Response | None] | None = None
        self.list_delay = 0.0  # seconds before each List answer (to catch a walk mid-way)
        self.url = ""

    def put(self, *images: dict[str, Any]) -> None:
        for image in images:
            self.images[image["id"]] = image

    def delete(self, *ids: str) -> None:
        for image_id in ids:
            self.images.pop(image_id, None)

    def in_scope(self, image: dict[str, Any], query: Any) -> bool:
        registry, _, _ = image["name"].partition("/")
        if query.get("repositoryName"):
            return bool(image["name"] == query["repositoryName"])
        if query.get("registryId"):
            return registry == query["registryId"]
        return self.folders.get(registry) == query.get("folderId")

    async def list_images(self, request: web.Request) -> web.Response:
        self.list_calls += 1
        if self.list_delay:
            await asyncio.sleep(self.list_delay)
        if self.before_list is not None:
            answer = self.before_list(self.list_calls)
            if answer is not None:
                return answer
        size = int(request.query.get("pageSize") or 100)
        offset = int(request.query.get("pageToken") or 0)
        matching = [
            self.images[k]
            for k in sorted(self.images)
            if self.in_scope(self.images[k], request.query)
        ]
        page = matching[offset : offset + size]
        body: dict[str, Any] = {"images": page} if page else {}
        if offset + size < len(matching):
            body["nextPageToken"] = str(offset + size)
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def get_image(self, request: web.Request) -> web.Response:
        self.get_calls += 1
        image_id = request.match_info["id"]
        if self.before_get is not None:
            answer = self.before_get(image_id)
            if answer is not None:
                return answer
        if image_id in self.images:
            return web.Response(
                body=orjson.dumps(self.images[image_id]), content_type="application/json"
            )
        return error(404, 5, f"Image {image_id} not found")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/container-registry/v1/images", self.list_images)
        app.router.add_get("/container-registry/v1/images/{id}", self.get_image)
        return app


def error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"code": code, "message": message, "details": []}),
        content_type="application/json",
        headers=headers,
    )


@asynccontextmanager
async def serving(fake: FakeUpstream) -> AsyncIterator[FakeUpstream]:
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


@asynccontextmanager
async def fast_client(upstream_url: str) -> AsyncIterator[UpstreamClient]:
    """A client of the upstream at ``upstream_url`` (List and operations) that retries
    with ``FAST_RETRY`` and is never throttled."""
    settings = Settings.load(env={}, upstream_url=upstream_url, operation_url=upstream_url)
    async with aiohttp.ClientSession() as session:
        yield UpstreamClient(
            session, settings, retry=FAST_RETRY, throttle=Throttle(rate=100_000, concurrency=8)
        )
