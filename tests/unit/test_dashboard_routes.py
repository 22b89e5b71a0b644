"""The dashboard's routes: the page and its files, public and under a strict content policy."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.appkeys import PUBLIC_PATHS
from mirror.api.dashboard import REGISTRIES_PATH, STATIC_DIR, add_dashboard_routes


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_dashboard_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_the_page_is_served_at_the_root_with_a_same_origin_policy(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "script-src 'self'" in policy
    html = await response.text()
    assert "<title>" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)


async def test_every_file_the_page_names_is_served(
    client: TestClient[web.Request, web.Application],
) -> None:
    html = await (await client.get("/")).text()
    names = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/dashboard.js", "/static/dashboard.css"} <= set(names)
    for name in names:
        response = await client.get(name)
        assert response.status == 200, name
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await response.read() == (STATIC_DIR / name.rsplit("/", 1)[1]).read_bytes()


async def test_no_path_outside_the_static_files_is_served(
    client: TestClient[web.Request, web.Application],
) -> None:
    for path in ("/static/../dashboard.py", "/static/%2e%2e/dashboard.py", "/static/nothing.js"):
        response = await client.get(path)
        assert response.status == 404, path


def test_the_page_and_its_files_are_public_but_the_data_is_not() -> None:
    app = web.Application()
    app[PUBLIC_PATHS] = {"/healthz"}
    add_dashboard_routes(app)
    public = app[PUBLIC_PATHS]
    assert {"/healthz", "/", "/static/dashboard.js", "/static/dashboard.css"} <= public
    assert REGISTRIES_PATH not in public


def test_the_script_reads_only_this_origin() -> None:
    script = (STATIC_DIR / "dashboard.js").read_text()
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", script)
