"""Property-based fuzzing of every route and parameter of the local API (bounded).

The API runs over a real index ingested from the simulator, with tokens, served
through ``ApiRunner`` exactly as ``mirror serve`` serves it. For each route of
the app's router (each method it answers, and a method it does not), hypothesis
draws path parameters and every query parameter the OpenAPI document names for
it (and some it does not), from values that are valid, nearly valid, or hostile:
NUL and line breaks, dots and slashes, non-ASCII, numbers of thousands of digits,
page tokens from another listing. Raw request lines go straight to the socket.

Every answer must be below 500, but for one the cloud gives too: a method a path
does not have is 501 UNIMPLEMENTED (the gRPC gateway's answer, kept identical in
the simulator and checked by tests/contract). Every error must be the upstream's
error JSON with the answer's request id; and afterwards the database has assigned no
transaction id (nothing was written: index, outbox, operations unchanged) and
the upstream was never called.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import asyncpg
import hypothesis
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from yarl import URL

from mirror.api.app import create_app
from mirror.api.openapi import OPENAPI
from mirror.api.server import ApiRunner
from mirror.ingest.loop import ingest_once
from mirror.model import Scope, ScopeKind
from mirror.settings import Settings
from mirror.upstream.client import UpstreamClient
from mirror.upstream.simulator import SimulatorConfig, serve_simulator
from tests.integration.db_writes import assert_nothing_written, database_state, settle
from tests.integration.test_api_edges import RecordingUpstream

EXAMPLES_PER_ROUTE = 60  # about 20 routes: some 1,300 requests
RAW_EXAMPLES = 150  # raw request lines, and as many header lines on valid requests
REQUEST_INFO = "type.googleapis.com/google.rpc.RequestInfo"
TOKENS = "r-token:read,a-token:admin"
AUTH_HEADERS = [
    {"Authorization": "Bearer a-token"},
    {"Authorization": "Bearer r-token"},
    {},
    {"Authorization": "Bearer nope"},
    {"Authorization": "Basic YTpi"},
]
T = TypeVar("T")


@dataclass
class Target:
    url: str
    host: str
    port: int
    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    known: dict[str, list[str]]
    routes: list[Route]
    upstream: RecordingUpstream
    sent: int = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a request on the server's loop from hypothesis' worker thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)


@pytest.fixture
async def target(settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[Target]:
    config = SimulatorConfig(images=300, seed=13, operation_delay=0.05)
    async with serve_simulator(config) as simulator, aiohttp.ClientSession() as session:
        settings = settings.with_(
            upstream_url=simulator.url,
            operation_url=simulator.url,
            api_tokens=Settings.load(env={"MIRROR_API_TOKENS": TOKENS}).api_tokens,
        )
        client = UpstreamClient(session, settings)
        model = simulator.registry.model
        await ingest_once(db_pool, client, [Scope(ScopeKind.FOLDER, f) for f in model.folder_ids])
        rows = await db_pool.fetch("SELECT id, name, digest FROM images ORDER BY id LIMIT 20")
        known = {
            "folderId": list(model.folder_ids),
            "registryId": list(model.registry_ids),
            "repositoryName": sorted({row["name"] for row in rows}),
            "imageId": [row["id"] for row in rows],
            "digest": [row["digest"] for row in rows],
            "operationId": ["crp" + "0" * 17],
        }
        upstream = RecordingUpstream(client)
        app = create_app(settings, pool=db_pool, upstream=upstream, idle_timeout=5.0)
        routes = routes_of(app)
        runner = ApiRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            async with aiohttp.ClientSession() as api_session:
                yield Target(
                    f"http://{host}:{port}",
                    host,
                    port,
                    asyncio.get_running_loop(),
                    api_session,
                    known,
                    routes,
                    upstream,
                )
        finally:
            await runner.cleanup()


# -- values ---------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
hostile = st.sampled_from(
    [
        *("", " ", ".", "..", "/", "%", "\x00", "a\x00b", "\n", "crp\r\nX: y", "é", "😀", "\u2028"),
        *("-1", "+0", "0x10", "1e3", "NaN", "9" * 19, "9" * 20, "0" * 5000 + "7"),
    ]
)
huge_numbers = st.integers(min_value=4_000, max_value=6_000).map(lambda n: "9" * n)
filters = st.sampled_from(
    ['name="a/b"', 'name IN ("a/b", "c")', "name NOT IN ()", 'name="', "name", "digest=x"]
)
orders = st.sampled_from(["name", "name desc, digest", "created_at desc", "id", "name,", ""])


raw_query = st.lists(
    st.sampled_from([*"%&=?+;/azAZ09._-~!$'()*,:@", "%zz", "%", "%0", "%00", "%C3", "%FF"]),
    max_size=20,
).map("".join)


def values_for(name: str, known: dict[str, list[str]]) -> st.SearchStrategy[str]:
    choices: list[st.SearchStrategy[str]] = [any_text, hostile, huge_numbers]
    if known.get(name):
        choices.append(st.sampled_from(known[name]))
    if name == "filter":
        choices.append(filters)
    if name == "orderBy":
        choices.append(orders)
    if name in ("pageSize", "limit", "reclaimableLimit", "after"):
        choices.append(st.integers(min_value=-(2**70), max_value=2**70).map(str))
    return st.one_of(*choices)


def path_values(name: str, known: dict[str, list[str]], method: str) -> st.SearchStrategy[str]:
    choices: list[st.SearchStrategy[str]] = [any_text.filter(bool), hostile.filter(bool)]
    if known.get(name) and method != "DELETE":  # a Delete of an indexed image is no bad input
        choices.append(st.sampled_from(known[name]))
    if name == "imageId":
        choices.append(st.from_regex(r"crp[0-9a-z]{17}", fullmatch=True))
    return st.one_of(*choices)


def encode_path_value(value: str) -> str:
    """Every character escaped, dots too: the server sees exactly this value."""
    return quote(value, safe="").replace(".", "%2E")


# -- routes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # /container-registry/v1/images/{imageId}
    query: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def routes_of(app: web.Application) -> list[Route]:
    """Every (method, path) the router answers, with the query parameters OpenAPI names."""
    routes: set[Route] = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        template = info.get("formatter") or info.get("path") or ""
        if not template:
            continue
        operation = OPENAPI["paths"].get(template, {}).get(route.method.lower(), {})
        query = tuple(p["name"] for p in operation.get("parameters", []) if p["in"] == "query")
        routes.add(Route(route.method, template, query))
    return sorted(routes, key=str)


@st.composite
def requests_for(
    draw: st.DrawFn, route: Route, known: dict[str, list[str]]
) -> tuple[str, URL, dict]:
    method = draw(st.sampled_from([route.method] * 4 + ["POST", "PUT", "PATCH", "OPTIONS", "HEAD"]))
    path = route.template
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        value = draw(path_values(name, known, method))
        path = path.replace("{" + name + "}", encode_path_value(value))
    params: list[tuple[str, str]] = []
    names = [*route.query, "pageSize", "unknownParam"]
    for name in draw(st.lists(st.sampled_from(names), max_size=len(names) + 2)):
        params.append((name, draw(values_for(name, known))))
    query = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in params)
    if draw(st.booleans()):  # and some raw, badly escaped query text
        query += "&" + draw(raw_query)
    headers = draw(st.sampled_from(AUTH_HEADERS))
    target = path + ("?" + query if query else "")
    if method == "HEAD" and len(target) > 8000:
        # Past the parser's line limit the method is never read: the 400 has a body,
        # which a client that sent HEAD takes for garbage after its answer.
        method = "GET"
    return method, URL(target, encoded=True), headers


def check_answer(method: str, status: int, headers: Any, body: bytes, what: str) -> None:
    if status < 400 or method == "HEAD":
        assert status < 500, f"{what} -> {status}"
        return
    assert headers.get("Content-Type", "").startswith("application/json"), (what, headers)
    error = orjson.loads(body)
    assert set(error) == {"code", "message", "details"}, (what, error)
    assert isinstance(error["code"], int) and 0 < error["code"] <= 16, (what, error)
    assert isinstance(error["message"], str) and error["message"], (what, error)
    assert error["details"] == [{"@type": REQUEST_INFO, "requestId": headers["X-Request-Id"]}], (
        what,
        error,
    )
    unimplemented_method = status == 501 and error["code"] == 12
    assert status < 500 or unimplemented_method, f"{what} -> {status}: {body[:300]!r}"


async def send(target: Target, method: str, url: URL, headers: dict) -> None:
    target.sent += 1
    full = URL(target.url + str(url), encoded=True)
    async with target.session.request(method, full, headers=headers) as response:
        if response.status == 200 and response.content_type == "text/event-stream":
            # the event stream never ends: its head is the answer (nothing but 200 here);
            # close the connection, or the stream's next bytes would meet the next request
            response.close()
            return
        body = await response.read()
        check_answer(method, response.status, response.headers, body, f"{method} {url}")


def fuzz_routes(target: Target, routes: list[Route]) -> list[str]:
    failures: list[str] = []
    for route in routes:

        @given(request=requests_for(route, target.known))
        @hypothesis.settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(request: tuple[str, URL, dict]) -> None:
            target.run(send(target, *request))

        try:
            check()
        except Exception as exc:  # every route's failure, reported together
            failures.append(f"{route}: {exc}")
    return failures


# -- raw request lines ------------------------------------------------------------------------

line_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
methods = st.one_of(st.sampled_from([b"GET", b"DELETE", b"BREW", b"get", b"G\x00T"]), line_bytes)
targets = st.one_of(
    st.sampled_from([b"/container-registry/v1/images/..", b"*", b"http://x/", b"/" + b"a" * 9000]),
    line_bytes.map(lambda b: b"/" + b),
)
# Bytes a header may carry but that need not be UTF-8 (no control characters).
high_bytes = st.lists(st.integers(0x20, 0xFF).filter(lambda b: b != 0x7F), max_size=30).map(bytes)
header_lines = st.one_of(
    st.just(b""),
    st.tuples(
        st.sampled_from([b"Authorization", b"X-Request-Id", b"Content-Type", b"Accept", b"X"]),
        st.sampled_from([b"Bearer ", b"Basic ", b""]),
        st.one_of(line_bytes, high_bytes),
    ).map(lambda parts: parts[0] + b": " + parts[1] + parts[2]),
)
versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b""])


async def send_raw(target: Target, line: bytes, header: bytes = b"") -> None:
    target.sent += 1
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        extra = header + b"\r\n" if header else b""
        writer.write(line + b"\r\nHost: x\r\n" + extra + b"Connection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    # (aiohttp answers in the version the request line gave, HTTP/2.0 included)
    assert lines[0].startswith("HTTP/"), (line[:100], raw[:200])
    headers = {}
    for header in lines[1:]:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    method = line.split(b" ", 1)[0].decode("latin-1")
    check_answer(method, int(lines[0].split()[1]), _Headers(headers), body, repr(line[:100]))


class _Headers(dict[str, str]):
    """Case-insensitive lookup, as aiohttp's headers."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        for name, value in self.items():
            if name.lower() == key.lower():
                return value
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)


def fuzz_raw(target: Target) -> list[str]:
    failures: list[str] = []

    @given(method=methods, path=targets, version=versions, header=header_lines)
    @hypothesis.settings(
        max_examples=RAW_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def request_lines(method: bytes, path: bytes, version: bytes, header: bytes) -> None:
        line = b" ".join(p for p in (method, path, version) if p)
        target.run(send_raw(target, line, header))

    # Header bytes on requests that reach the handlers (a valid request line).
    paths = [
        b"/container-registry/v1/images?folderId=" + target.known["folderId"][0].encode(),
        b"/container-registry/v1/images/" + target.known["imageId"][0].encode(),
        b"/mirror/v1/stats",
    ]

    @given(path=st.sampled_from(paths), header=header_lines)
    @hypothesis.settings(
        max_examples=RAW_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def headers(path: bytes, header: bytes) -> None:
        target.run(send_raw(target, b"GET " + path + b" HTTP/1.1", header))

    for check in (request_lines, headers):
        try:
            check()
        except Exception as exc:
            failures.append(f"raw {check.__name__}: {exc}")
    return failures


# -- the test ------------------------------------------------------------------------------


async def test_fuzzing_every_route_finds_no_server_error_and_changes_nothing(
    target: Target, db_pool: asyncpg.Pool
) -> None:
    templates = {route.template for route in target.routes}
    assert {"/container-registry/v1/images/{imageId}", "/mirror/v1/stats"} <= templates
    assert any(r.query for r in target.routes), "the OpenAPI document names query parameters"
    await settle(db_pool)
    before = await database_state(db_pool)

    failures = await asyncio.to_thread(fuzz_routes, target, target.routes)
    failures += await asyncio.to_thread(fuzz_raw, target)

    assert not failures, "\n\n".join(failures)
    assert target.sent >= len(target.routes) * EXAMPLES_PER_ROUTE // 2, target.sent
    print(f"fuzz: {target.sent} requests over {len(target.routes)} routes")
    await assert_nothing_written(db_pool, before)
    assert target.upstream.calls == [], "a request reached the upstream"
