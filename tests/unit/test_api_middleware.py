"""The error middleware: every failure in the upstream's error shape, with a fresh request id."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.middleware import error_middleware
from mirror.errors import InvalidArgument, NotFound, UpstreamError, UpstreamStatusError

FAILURES: dict[str, BaseException] = {
    "invalid": InvalidArgument("invalid pageSize: must be at most 1000"),
    "upstream-says": UpstreamStatusError(NotFound("Image crp1 not found"), 404),
    "upstream-down": UpstreamError("upstream GET failed: ClientConnectorError"),
    "db-down": ConnectionRefusedError("connect to 10.1.2.3:5432 password=hunter2"),
    "db-gone": asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    "bug": KeyError("secret-internal-detail"),
}


async def fail(request: web.Request) -> web.Response:
    raise FAILURES[request.match_info["what"]]


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/fail/{what}", fail)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize(
    ("what", "status", "code", "message"),
    [
        ("invalid", 400, 3, "invalid pageSize: must be at most 1000"),
        ("upstream-says", 404, 5, "Image crp1 not found"),
        ("upstream-down", 503, 14, "the upstream is unavailable"),
        ("db-down", 503, 14, "the index database is unavailable"),
        ("db-gone", 503, 14, "the index database is unavailable"),
        ("bug", 500, 13, "Internal error"),
    ],
)
async def test_failures_answer_in_the_upstream_shape(
    client: TestClient, what: str, status: int, code: int, message: str
) -> None:
    response = await client.get(f"/fail/{what}")
    text = await response.text()
    assert response.status == status
    assert response.content_type == "application/json"
    body = orjson.loads(text)
    assert body == {
        "code": code,
        "message": message,
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.RequestInfo",
                "requestId": response.headers["X-Request-Id"],
            }
        ],
    }
    assert "secret" not in text and "hunter2" not in text and "10.1.2.3" not in text


async def test_request_ids_are_fresh(client: TestClient) -> None:
    first = await client.get("/fail/invalid")
    second = await client.get("/fail/invalid")
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nowhere", 404, 5), ("POST", "/fail/invalid", 501, 12)],
)
async def test_routing_errors_are_the_gateways(
    client: TestClient, method: str, path: str, status: int, code: int
) -> None:
    response = await client.request(method, path)
    assert response.status == status
    assert (await response.json())["code"] == code
