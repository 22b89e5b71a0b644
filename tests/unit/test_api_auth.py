"""Token auth: roles, constant-time comparison, public paths, upstream-shaped errors."""

from __future__ import annotations

import hmac

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.appkeys import PUBLIC_PATHS
from mirror.api.auth import ADMIN, READ, TokenTable, auth_middleware, required_role
from mirror.api.middleware import error_middleware
from mirror.settings import Settings

TOKENS = Settings.load(env={"MIRROR_API_TOKENS": "reader-token:read,admin-token:admin"}).api_tokens


def test_role_of_each_token() -> None:
    table = TokenTable(TOKENS)
    assert table.role_of("reader-token") == READ
    assert table.role_of("admin-token") == ADMIN
    assert table.role_of("admin-toke") is None
    assert table.role_of("") is None


def test_every_entry_is_compared_as_equal_length_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: the work does not depend on which entry matches, or on the token's length."""
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    table = TokenTable(TOKENS)
    for presented in ("reader-token", "admin-token", "x", "y" * 500):
        seen.clear()
        table.role_of(presented)
        assert seen == [(32, 32), (32, 32)]


def test_a_token_that_is_not_utf8_is_just_wrong() -> None:
    """Header bytes that are not UTF-8 arrive as surrogate escapes: refused, not a crash."""
    table = TokenTable(TOKENS)
    assert table.role_of(b"\xff\xfe".decode("utf-8", "surrogateescape")) is None
    assert table.role_of("reader-token\udcff") is None


def test_changes_need_admin() -> None:
    assert required_role("GET") == READ
    assert required_role("HEAD") == READ
    assert required_role("DELETE") == ADMIN
    assert required_role("POST") == ADMIN


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
async def client() -> TestClient:  # type: ignore[misc]
    app = web.Application(middlewares=[error_middleware, auth_middleware(TokenTable(TOKENS))])
    app[PUBLIC_PATHS] = {"/healthz"}
    app.router.add_get("/healthz", _ok)
    app.router.add_get("/things", _ok)
    app.router.add_delete("/things", _ok)
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "headers", "status", "code"),
    [
        ("GET", {}, 401, 16),
        ("GET", {"Authorization": "Basic cmVhZGVy"}, 401, 16),
        ("GET", {"Authorization": "Bearer wrong"}, 401, 16),
        ("GET", {"Authorization": "Bearer "}, 401, 16),
        ("GET", {"Authorization": "Bearer reader-token"}, 200, None),
        ("GET", {"Authorization": "bearer admin-token"}, 200, None),
        ("DELETE", {"Authorization": "Bearer reader-token"}, 403, 7),
        ("DELETE", {"Authorization": "Bearer admin-token"}, 200, None),
        ("DELETE", {}, 401, 16),
    ],
)
async def test_access(
    client: TestClient, method: str, headers: dict[str, str], status: int, code: int | None
) -> None:
    response = await client.request(method, "/things", headers=headers)
    assert response.status == status
    body = orjson.loads(await response.read())
    if code is not None:
        assert body["code"] == code and body["message"]
        assert body["details"][0]["requestId"] == response.headers["X-Request-Id"]
        assert "reader-token" not in body["message"] and "admin-token" not in body["message"]


async def test_public_paths_need_no_token(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
