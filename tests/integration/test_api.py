"""The local API over a real index (PostgreSQL) filled by the real ingest from the simulator:
stable paging while the index changes (invariant 5), page tokens, auth, Delete end to end,
blobs, sync, the events feed, probes, metrics and errors."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.app import create_app
from mirror.api.auth import token_id
from mirror.api.image_list import ImageReader
from mirror.api.page_cache import LOOKUPS
from mirror.ingest.loop import ingest_once
from mirror.ingest.merge import delete_images
from mirror.ingest.summary import WalkStatus
from mirror.listing import NameFilter, image_sort_key, matches, parse_list_request
from mirror.model import Scope, ScopeKind
from mirror.settings import Settings
from mirror.stats.folder import fold_to_end
from mirror.store.pool import create_pool
from mirror.upstream.client import UpstreamClient
from mirror.upstream.retry import RetryPolicy
from mirror.upstream.simulator import RunningSimulator, SimulatorConfig, serve_simulator
from tests.integration.db_writes import (
    assert_nothing_written,
    database_state,
    rows_written_since,
    settle,
)
from tests.postgres_fixture import dsn_with_database, new_database_name

IMAGES = "/container-registry/v1/images"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01, max_retry_after=0.01)


@dataclass
class World:
    upstream: RunningSimulator
    client: UpstreamClient
    pool: asyncpg.Pool
    settings: Settings
    scopes: list[Scope]

    async def ingest(self, scopes: list[Scope] | None = None) -> None:
        summary = await ingest_once(self.pool, self.client, scopes or self.scopes)
        assert all(r.status is WalkStatus.COMPLETE for r in summary.scopes), summary
        await fold_to_end(self.pool)  # the stats, as `mirror ingest --once` leaves them

    def api(self, settings: Settings | None = None, upstream: Any = None) -> TestClient:
        app = create_app(
            settings or self.settings, pool=self.pool, upstream=upstream or self.client
        )
        return TestClient(TestServer(app))


@pytest.fixture
async def world(settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[World]:
    config = SimulatorConfig(images=900, seed=11, operation_delay=0.05)
    async with serve_simulator(config) as upstream, aiohttp.ClientSession() as session:
        settings = settings.with_(upstream_url=upstream.url, operation_url=upstream.url)
        client = UpstreamClient(session, settings, retry=FAST_RETRY)
        scopes = [Scope(ScopeKind.FOLDER, f) for f in upstream.registry.model.folder_ids]
        world = World(upstream, client, db_pool, settings, scopes)
        await world.ingest()
        yield world


@pytest.fixture
async def api(world: World) -> AsyncIterator[TestClient]:
    async with world.api() as client:
        yield client


async def get_json(api: TestClient, path: str, params: Any = None, status: int = 200) -> Any:
    response = await api.get(path, params=params)
    body = await response.read()
    assert response.status == status, body
    return orjson.loads(body)


async def indexed_ids(
    pool: asyncpg.Pool, column: str, value: str, name_filter: NameFilter | None = None
) -> set[str]:
    """The ids the index holds in a scope (and passing a name filter)."""
    sql = {
        "registry_id": "SELECT id, name FROM images WHERE split_part(name, '/', 1) = $1",
        "folder_id": "SELECT id, name FROM images WHERE folder_id = $1",
    }[column]
    return {r["id"] for r in await pool.fetch(sql, value) if matches(name_filter, r["name"])}


def biggest_registry(world: World) -> str:
    model = world.upstream.registry.model
    return max(
        model.registry_ids,
        key=lambda r: world.upstream.registry.count(Scope(ScopeKind.REGISTRY, r)),
    )


# -- invariant 5 -------------------------------------------------------------------


async def change_registry(
    world: World, registry_id: str, rng: random.Random, cursor_image: str
) -> None:
    """Pushes, deletions (the page's last image, the cursor, among them) and tag moves
    upstream, then an ingest applies them to the index."""
    truth = world.upstream.registry
    repos = [repo.name for repo in truth.repositories(registry_id)]
    if truth.get(cursor_image) is not None:
        truth.delete(cursor_image)
    live = list(truth.ids(Scope(ScopeKind.REGISTRY, registry_id)))
    for name in rng.sample(repos, 3):
        truth.push(name)
    for image_id in rng.sample(live, 3):
        truth.delete(image_id)
    for image_id in rng.sample([i for i in live if truth.get(i) is not None], 2):
        truth.retag(image_id, add=[f"moved-{rng.randrange(10**6)}"])
    model = truth.model
    folder = model.folder_ids[model.folder_of_registry(model.registry_index(registry_id) or 0)]
    await world.ingest([Scope(ScopeKind.FOLDER, folder)])


@pytest.mark.parametrize(
    ("scope_param", "order_by", "filter_op"),
    [
        ("registryId", "", ""),
        ("registryId", "name desc", ""),
        ("registryId", "created_at desc, name", ""),
        ("registryId", "name, digest desc", ""),
        ("folderId", "digest", ""),
        ("folderId", "name desc, created_at", ""),
        ("folderId", "created_at desc", "IN"),
        ("registryId", "name", "NOT IN"),
    ],
)
async def test_invariant_5_stable_paging_while_the_index_changes(
    world: World, api: TestClient, scope_param: str, order_by: str, filter_op: str
) -> None:
    """Paging while the ingest changes the index never skips or repeats an image that exists
    throughout, and every page continues the order exactly where the last one stopped."""
    rng = random.Random(f"{scope_param}:{order_by}")
    registry_id = biggest_registry(world)
    if scope_param == "registryId":
        column, value = "registry_id", registry_id
    else:
        column = "folder_id"
        value = world.upstream.registry.model.folder_ids[
            world.upstream.registry.model.folder_of_registry(
                world.upstream.registry.model.registry_index(registry_id) or 0
            )
        ]
    params = {scope_param: value, "pageSize": "37"}
    if order_by:
        params["orderBy"] = order_by
    if filter_op:
        repos = sorted(
            world.upstream.registry.repositories(registry_id),
            key=lambda repo: -world.upstream.registry.repo_image_count(repo.index),
        )
        names = ", ".join(f'"{repo.name}"' for repo in repos[:3])
        params["filter"] = f"name {filter_op} ({names})"
    name_filter = parse_list_request(params).filter
    before = await indexed_ids(world.pool, column, value, name_filter)
    key = image_sort_key(parse_list_request(params).order)
    walked: list[dict[str, Any]] = []
    token = ""
    for _ in range(1000):
        page = await get_json(api, IMAGES, {**params, "pageToken": token} if token else params)
        walked.extend(page.get("images", []))
        token = page.get("nextPageToken", "")
        if not token:
            break
        await change_registry(world, registry_id, rng, walked[-1]["id"])
    else:
        raise AssertionError("the walk did not end")
    after = await indexed_ids(world.pool, column, value, name_filter)
    ids = [image["id"] for image in walked]
    assert len(ids) == len(set(ids)), "an image was listed twice"
    assert before & after <= set(ids), "an image present throughout was skipped"
    assert after != before, "the index did change during the walk"
    assert not after & {image["id"] for image in walked[36::37]}, "cursor rows were deleted"
    keys = [key(image) for image in walked]
    assert all(a < b for a, b in itertools.pairwise(keys)), "out of order"


# -- page tokens -------------------------------------------------------------------


async def test_forged_tampered_and_foreign_tokens_are_400(world: World, api: TestClient) -> None:
    registry_id = biggest_registry(world)
    params = {"registryId": registry_id, "pageSize": "5", "orderBy": "created_at desc"}
    token = (await get_json(api, IMAGES, params))["nextPageToken"]
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    tampered = bytearray(raw)
    tampered[3] ^= 0x10
    stale = bytes([9]) + raw[1:]  # a format version this service never issued
    bad = [
        base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode(),
        base64.urlsafe_b64encode(stale).rstrip(b"=").decode(),
        token[:-2],
        token + "A",
        "x" * 100,
        "",  # empty is no token: the first page again, not an error
    ]
    for candidate in bad[:-1]:
        error = await get_json(api, IMAGES, {**params, "pageToken": candidate}, status=400)
        assert error["code"] == 3 and "pageToken" in error["message"]
    # the same token with another listing
    for other in ({"orderBy": "created_at"}, {"filter": 'name!="x/y"'}, {"registryId": "crpother"}):
        error = await get_json(api, IMAGES, {**params, **other, "pageToken": token}, status=400)
        assert error["code"] == 3
    assert "images" in await get_json(api, IMAGES, {**params, "pageToken": bad[-1]})


async def test_a_key_too_long_for_a_token_names_the_last_rows(
    world: World, api: TestClient
) -> None:
    """orderBy name, digest: the key (name + digest + id) does not fit 100 characters, so
    the token names the page's last rows and the next page re-reads their key by id."""
    params = {"folderId": world.upstream.registry.model.folder_ids[0], "orderBy": "name, digest"}
    request = parse_list_request(params)
    expected = sorted(
        (i.to_json() for i in world.upstream.registry.all_images(request.scope)),
        key=image_sort_key(request.order),
    )
    walked: list[dict[str, Any]] = []
    token = ""
    while True:
        page = await get_json(
            api, IMAGES, {**params, "pageSize": "250", **({"pageToken": token} if token else {})}
        )
        walked += page.get("images", [])
        token = page.get("nextPageToken", "")
        if not token:
            break
        assert len(token) <= 100
    assert walked == expected
    assert await world.pool.fetchval("SELECT to_regclass('api_page_keys')") is None

    # The page's last row is deleted: the next page resumes after the row before it,
    # neither repeating nor skipping any image.
    first = await get_json(api, IMAGES, {**params, "pageSize": "6"})
    assert [i["id"] for i in first["images"]] == [i["id"] for i in expected[:6]]
    async with world.pool.acquire() as conn, conn.transaction():
        await delete_images(conn, [expected[5]["id"]], "upstream-gone", source="/test")
    second = await get_json(
        api, IMAGES, {**params, "pageSize": "3", "pageToken": first["nextPageToken"]}
    )
    assert [i["id"] for i in second["images"]] == [i["id"] for i in expected[6:9]]

    # Every row the token names is gone: a clean 400, nothing guessed.
    async with world.pool.acquire() as conn, conn.transaction():
        await delete_images(conn, [i["id"] for i in expected[:5]], "upstream-gone", source="/test")
    error = await get_json(
        api, IMAGES, {**params, "pageSize": "3", "pageToken": first["nextPageToken"]}, status=400
    )
    assert error["code"] == 3 and "expired" in error["message"]


async def test_reading_pages_writes_nothing(world: World, api: TestClient) -> None:
    """3,000 Lists, each with its own filter and a key too long to inline (so each issues a
    row token), and their next pages: no transaction id is assigned, no row written."""
    registry_id = biggest_registry(world)
    await settle(world.pool)
    before = await database_state(world.pool)
    tokens: list[tuple[dict[str, str], str]] = []
    for n in range(3_000):
        params = {
            "registryId": registry_id,
            "filter": f'name NOT IN ("{registry_id}/none-{n}")',
            "orderBy": "name desc, digest" if n % 2 else "name, created_at desc",
            "pageSize": "1",
        }
        page = await get_json(api, IMAGES, params)
        assert len(page["images"]) == 1
        tokens.append((params, page["nextPageToken"]))
    for params, token in tokens[:200]:
        page = await get_json(api, IMAGES, {**params, "pageToken": token})
        assert len(page["images"]) == 1
    await assert_nothing_written(world.pool, before)


async def test_the_write_check_sees_an_update_and_a_delete(db_pool: asyncpg.Pool) -> None:
    """The check above can fail: a same-value UPDATE and a DELETE are both seen."""
    await settle(db_pool)
    before = await database_state(db_pool)
    await db_pool.execute("UPDATE api_secrets SET created_at = created_at")
    assert await rows_written_since(db_pool, before["next_xid"]) == {"api_secrets": 1}
    before = await database_state(db_pool)
    await db_pool.execute("DELETE FROM api_secrets")
    with pytest.raises(AssertionError, match="a table's rows changed"):
        await assert_nothing_written(db_pool, before)


async def test_tokens_work_across_api_processes(world: World, api: TestClient) -> None:
    """The signing secret lives in the database: another app on it accepts the token."""
    params = {"registryId": biggest_registry(world), "pageSize": "4", "orderBy": "name desc"}
    first = await get_json(api, IMAGES, params)
    expected = await get_json(api, IMAGES, {**params, "pageToken": first["nextPageToken"]})
    async with world.api() as other:
        again = await get_json(other, IMAGES, {**params, "pageToken": first["nextPageToken"]})
    assert again == expected


# -- the page cache (mirror/api/page_cache.py) ------------------------------------------

VERSION = "SELECT sum(n)::bigint FROM images_version"


def lookups(result: str) -> float:
    return LOOKUPS.labels(result)._value.get()


async def raw_page(api: TestClient, params: dict[str, str]) -> bytes:
    response = await api.get(IMAGES, params=params)
    body = await response.read()
    assert response.status == 200, body
    return body


async def test_the_index_version_moves_once_a_writing_transaction_commits(
    world: World,
) -> None:
    pool = world.pool
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM images ORDER BY id LIMIT 3")]
    start = await pool.fetchval(VERSION)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE images SET compressed_size = compressed_size WHERE id = ANY($1)", ids[:2]
        )
        await conn.execute("DELETE FROM images WHERE id = $1", ids[2])
        # not before the commit: another snapshot sees neither the writes nor the addition
        assert await pool.fetchval(VERSION) == start
    assert await pool.fetchval(VERSION) == start + 1  # three rows, two statements: once
    await pool.execute("UPDATE images SET compressed_size = compressed_size WHERE false")
    await pool.fetch("SELECT * FROM images LIMIT 5")
    assert await pool.fetchval(VERSION) == start + 1  # no row written: no change
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("DELETE FROM images WHERE id = $1", ids[0])
        await tx.rollback()
    assert await pool.fetchval(VERSION) == start + 1  # rolled back: no change
    await pool.execute("UPDATE images SET compressed_size = compressed_size WHERE id = $1", ids[1])
    assert await pool.fetchval(VERSION) == start + 2
    async with pool.acquire() as conn:  # a bulk load's or a logical replica's writes
        await conn.execute("SET session_replication_role = replica")
        try:
            await conn.execute(
                "UPDATE images SET compressed_size = compressed_size WHERE id = $1", ids[1]
            )
        finally:
            await conn.execute("RESET session_replication_role")
    assert await pool.fetchval(VERSION) == start + 3


async def test_a_page_read_again_comes_from_memory_until_the_index_changes(
    world: World, api: TestClient
) -> None:
    registry_id = biggest_registry(world)
    params = {"registryId": registry_id, "pageSize": "20", "orderBy": "name desc"}
    first = await raw_page(api, params)
    hits = lookups("hit")
    assert await raw_page(api, params) == first
    assert lookups("hit") == hits + 1
    next_params = {**params, "pageToken": orjson.loads(first)["nextPageToken"]}
    second = await raw_page(api, next_params)
    assert await raw_page(api, next_params) == second and lookups("hit") == hits + 2

    # a write outside the API (as the ingest, or an administrator, makes them)
    gone = orjson.loads(first)["images"][0]["id"]
    await world.pool.execute("DELETE FROM images WHERE id = $1", gone)
    misses = lookups("miss")
    changed = await raw_page(api, params)
    assert lookups("miss") == misses + 1 and lookups("hit") == hits + 2
    assert gone not in {image["id"] for image in orjson.loads(changed)["images"]}
    # the ingest's writes: pushes, deletions and tag moves upstream, then a pass
    await change_registry(world, registry_id, random.Random(5), gone)
    async with world.api() as fresh:  # an empty cache
        for page_params in (params, next_params):
            assert await raw_page(api, page_params) == await raw_page(fresh, page_params)


async def test_a_write_committed_right_after_the_page_was_read_is_never_served_stale(
    world: World, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The riskiest moment: the page is read, then a write commits before the page is kept.
    The page is kept at the version read before it, which the write moved past."""
    params = {"registryId": biggest_registry(world), "pageSize": "10"}
    first_id = orjson.loads(await raw_page(api, params))["images"][0]["id"]
    read_page = ImageReader._read_page
    landed: list[str] = []

    async def read_then_write(self: ImageReader, conn: Any, request: Any) -> Any:
        page = await read_page(self, conn, request)
        if not landed:
            await world.pool.execute("DELETE FROM images WHERE id = $1", first_id)
            landed.append(first_id)
        return page

    await world.pool.execute(
        "UPDATE images SET compressed_size = compressed_size WHERE id = (SELECT max(id) FROM images)"
    )  # a new version: the next request reads the page again
    monkeypatch.setattr(ImageReader, "_read_page", read_then_write)
    before_write = orjson.loads(await raw_page(api, params))
    assert landed == [first_id]  # the hook ran between the read and the keeping
    assert before_write["images"][0]["id"] == first_id  # read before the delete
    after_write = orjson.loads(await raw_page(api, params))
    assert first_id not in {image["id"] for image in after_write["images"]}


async def test_an_answer_sees_every_write_committed_before_its_request(
    world: World, api: TestClient
) -> None:
    """Read-your-writes end to end: while eight clients keep listing the same page (version
    reads in flight and shared, the page served from memory), a write commits and the next
    request must see it. The exact race (a read sent before the write) is driven
    deterministically in test_version_reads.py."""
    params = {"registryId": biggest_registry(world), "pageSize": "10"}
    stop = asyncio.Event()
    served = 0

    async def keep_listing() -> None:
        nonlocal served
        while not stop.is_set():
            await raw_page(api, params)
            served += 1

    others = [asyncio.create_task(keep_listing()) for _ in range(8)]
    hits = lookups("hit")
    try:
        for _ in range(25):
            first = orjson.loads(await raw_page(api, params))["images"][0]["id"]
            await world.pool.execute("DELETE FROM images WHERE id = $1", first)
            page = orjson.loads(await raw_page(api, params))
            assert first not in {image["id"] for image in page["images"]}
    finally:
        stop.set()
        await asyncio.gather(*others)
    assert served > 25 and lookups("hit") > hits  # the page was served from memory meanwhile


async def test_with_no_page_cache_every_page_is_read(world: World) -> None:
    params = {"registryId": biggest_registry(world), "pageSize": "5"}
    counted = (lookups("hit"), lookups("miss"))
    async with world.api(world.settings.with_(api_page_cache_mb=0)) as uncached:
        first = await raw_page(uncached, params)
        assert await raw_page(uncached, params) == first
    assert (lookups("hit"), lookups("miss")) == counted  # not even looked up


# -- auth ------------------------------------------------------------------------------


async def test_roles(world: World) -> None:
    settings = world.settings.with_(
        api_tokens=Settings.load(env={"MIRROR_API_TOKENS": "r-token:read,a-token:admin"}).api_tokens
    )
    victim = next(world.upstream.registry.ids(world.scopes[0]))
    async with world.api(settings) as api:
        assert (await api.get("/healthz")).status == 200
        assert (await api.get("/openapi.json")).status == 200
        assert (await api.get(IMAGES, params={"folderId": "b1gx"})).status == 401
        reader = {"Authorization": "Bearer r-token"}
        admin = {"Authorization": "Bearer a-token"}
        assert (await api.get(IMAGES, params={"folderId": "b1gx"}, headers=reader)).status == 200
        assert (await api.get("/metrics", headers=reader)).status == 200
        denied = await api.delete(f"{IMAGES}/{victim}", headers=reader)
        assert denied.status == 403 and (await denied.json())["code"] == 7
        assert world.upstream.registry.get(victim) is not None, "a denied Delete reaches nothing"
        allowed = await api.delete(f"{IMAGES}/{victim}", headers=admin)
        assert allowed.status == 200 and (await allowed.json())["metadata"]["imageId"] == victim


async def test_api_delete_events_say_who_asked(world: World) -> None:
    """Every event of an API Delete carries the operation id and the actor: the token's
    role and non-secret id, the request id, the client address; the token itself never."""
    settings = world.settings.with_(
        api_tokens=Settings.load(env={"MIRROR_API_TOKENS": "r-token:read,a-token:admin"}).api_tokens
    )
    victim, tags = await world.pool.fetchrow(
        "SELECT id, ARRAY(SELECT json_array_elements_text(image_doc(images)::json -> 'tags'))"
        " FROM images WHERE image_doc(images)::json -> 'tags' IS NOT NULL ORDER BY id LIMIT 1"
    )
    assert tags
    name = await world.pool.fetchval("SELECT name FROM images WHERE id = $1", victim)
    mark = await world.pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    admin = {"Authorization": "Bearer a-token"}
    async with world.api(settings) as api:
        response = await api.delete(f"{IMAGES}/{victim}", headers=admin)
        assert response.status == 200
        request_id = response.headers["X-Request-Id"]
        operation = await response.json()
        for _ in range(500):
            polled = await api.get(f"/operations/{operation['id']}", headers=admin)
            answer = await polled.json()
            if answer["done"]:
                break
            await asyncio.sleep(0.01)
    rows = await world.pool.fetch(
        "SELECT type, key, data::text AS data FROM outbox_events WHERE id > $1 ORDER BY id", mark
    )
    actor = {
        "role": "admin",
        "tokenId": token_id("a-token"),
        "requestId": request_id,
        "clientAddress": "127.0.0.1",
    }
    assert {r["type"] for r in rows} >= {"registry.image.deleted", "registry.tag.removed"}
    for row in rows:
        assert "a-token" not in row["data"]
        data = orjson.loads(row["data"])
        assert data["actor"] == actor and data["operationId"] == operation["id"]
    removed = sorted(
        (r["key"], orjson.loads(r["data"])["reason"])
        for r in rows
        if r["type"] == "registry.tag.removed"
    )
    assert removed == sorted((f"{name}:{t}", "image-deleted") for t in tags)


# -- Delete ------------------------------------------------------------------------------


async def test_delete_end_to_end(world: World, api: TestClient) -> None:
    """Delete -> Operation -> done -> the image leaves the index with its events, once."""
    truth = world.upstream.registry
    victim = next(truth.ids(world.scopes[0]))
    last_known = await world.pool.fetchval(
        "SELECT image_doc(images) FROM images WHERE id = $1", victim
    )
    unique_digests = {
        r["digest"]
        for r in await world.pool.fetch(
            "SELECT mirror_digest_text(b.digest) AS digest FROM images i, unnest(i.blob_digests) d"
            " JOIN blobs b ON b.digest = d WHERE i.id = $1 AND b.ref_count = 1",
            victim,
        )
    }
    outbox_before = await world.pool.fetchval("SELECT coalesce(max(id), 0) FROM outbox")

    response = await api.delete(f"{IMAGES}/{victim}")
    assert response.status == 200
    operation = await response.json()
    assert operation["done"] is False and operation["metadata"]["imageId"] == victim
    for _ in range(500):
        answer = await get_json(api, f"/operations/{operation['id']}")
        if answer["done"]:
            break
        await asyncio.sleep(0.01)
    assert answer["done"] is True and "response" in answer
    assert truth.get(victim) is None
    await get_json(api, f"{IMAGES}/{victim}", status=404)
    assert await world.pool.fetchval("SELECT count(*) FROM images WHERE id = $1", victim) == 0

    events = await world.pool.fetch(
        "SELECT type, key, source, data::text AS data FROM outbox_events WHERE id > $1 ORDER BY id",
        outbox_before,
    )
    assert {e["source"] for e in events} == {"/registry-mirror/api"}
    deleted = [e for e in events if e["type"] == "registry.image.deleted"]
    assert len(deleted) == 1 and deleted[0]["key"] == victim
    data = orjson.loads(deleted[0]["data"])
    assert data["reason"] == "api" and data["image"] == orjson.loads(last_known)
    assert data["operationId"] == operation["id"] and data["actor"]["role"] == "anonymous"
    assert data["actor"]["requestId"] == response.headers["X-Request-Id"]
    orphaned = {e["key"] for e in events if e["type"] == "registry.blob.orphaned"}
    assert orphaned == unique_digests
    for digest in unique_digests:
        assert (
            await world.pool.fetchval(
                "SELECT ref_count FROM blobs WHERE digest = mirror_digest_key($1)", digest
            )
            == 0
        )

    # idempotent: asking again changes nothing; a second Delete is the upstream's 404
    await get_json(api, f"/operations/{operation['id']}")
    again = await get_json(api, f"{IMAGES}/{victim}", status=404)
    assert again["code"] == 5
    response = await api.delete(f"{IMAGES}/{victim}")
    assert response.status == 404 and (await response.json())["code"] == 5
    assert await world.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE id > $1", outbox_before
    ) == len(events)


async def test_index_converges_without_anyone_asking(world: World, api: TestClient) -> None:
    victim = next(world.upstream.registry.ids(world.scopes[1]))
    response = await api.delete(f"{IMAGES}/{victim}")
    assert response.status == 200
    for _ in range(1000):  # the app's background poll settles it (every 2 s)
        if await world.pool.fetchval("SELECT count(*) FROM images WHERE id = $1", victim) == 0:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the index did not follow the Delete")
    applied = await world.pool.fetchval(
        "SELECT applied FROM operations WHERE image_id = $1", victim
    )
    assert applied is True


class BrokenUpstream:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def delete_image(self, image_id: str) -> dict[str, Any]:
        raise self.error

    async def get_operation(self, operation_id: str) -> dict[str, Any]:
        raise self.error


async def test_upstream_failures_are_mapped(world: World) -> None:
    from mirror.errors import UpstreamError

    indexed = await world.pool.fetchval("SELECT id FROM images ORDER BY id LIMIT 1")
    async with world.api(upstream=BrokenUpstream(UpstreamError("connection refused"))) as api:
        response = await api.delete(f"{IMAGES}/{indexed}")
        body = await response.json()
        assert response.status == 503 and body["code"] == 14
    async with world.api(upstream=BrokenUpstream(RuntimeError("secret /etc/passwd detail"))) as api:
        response = await api.delete(f"{IMAGES}/{indexed}")
        text = await response.text()
        assert response.status == 500 and orjson.loads(text)["code"] == 13
        assert "secret" not in text and "passwd" not in text and "Traceback" not in text
        assert orjson.loads(text)["details"][0]["requestId"] == response.headers["X-Request-Id"]


# -- beyond the upstream -------------------------------------------------------------------


async def test_blob_lookup(world: World, api: TestClient) -> None:
    digest, refs = await world.pool.fetchrow(
        "SELECT mirror_digest_text(digest), ref_count FROM blobs"
        " ORDER BY ref_count DESC, digest LIMIT 1"
    )
    holders = {
        r["image_id"]
        for r in await world.pool.fetch(
            "SELECT i.id AS image_id FROM images i, unnest(i.blob_digests) d"
            " WHERE d = mirror_digest_key($1)",
            digest,
        )
    }
    seen: list[str] = []
    token = ""
    while True:
        params = {"pageSize": "50", **({"pageToken": token} if token else {})}
        blob = await get_json(api, f"/mirror/v1/blobs/{digest}", params)
        assert blob["digest"] == digest and blob["refCount"] == str(refs)
        assert int(blob["size"]) > 0 and int(blob["repositoryCount"]) >= 1
        seen += [image["id"] for image in blob.get("images", [])]
        token = blob.get("nextPageToken", "")
        if not token:
            break
    assert seen == sorted(holders)
    assert set(blob["repositories"]) <= {
        r["name"] for r in await world.pool.fetch("SELECT DISTINCT name FROM images")
    }
    # a layer of one image only: its repository all the same
    lone, holder = await world.pool.fetchrow(
        "SELECT mirror_digest_text(b.digest), i.name FROM images i, unnest(i.blob_digests) d"
        " JOIN blobs b ON b.digest = d WHERE b.ref_count = 1 LIMIT 1"
    )
    blob = await get_json(api, f"/mirror/v1/blobs/{lone}")
    assert blob["refCount"] == "1" and blob["repositories"] == [holder]
    assert blob["repositoryCount"] == "1" and len(blob["images"]) == 1
    await get_json(api, "/mirror/v1/blobs/sha256:" + "0" * 64, status=404)
    await get_json(api, "/mirror/v1/blobs/not-a-digest", status=400)
    await get_json(api, f"/mirror/v1/blobs/{digest}", {"pageToken": "junk"}, status=400)


async def test_sync_status(world: World, api: TestClient) -> None:
    sync = await get_json(api, "/mirror/v1/sync")
    scopes = {s["scope"]: s for s in sync["scopes"]}
    assert set(scopes) == {str(s) for s in world.scopes}
    for scope in world.scopes:
        entry = scopes[str(scope)]
        assert entry["lastCompleteAt"].endswith("Z") and entry["lagSeconds"] >= 0
        assert int(entry["lastImages"]) == world.upstream.registry.count(scope)
        assert entry["lastRun"]["status"] == "complete" and "lastError" not in entry


async def test_events_feed(world: World, api: TestClient) -> None:
    total = await world.pool.fetchval("SELECT count(*) FROM outbox")
    assert total > 0
    seen: list[dict[str, Any]] = []
    after = "0"
    for _ in range(10_000):
        page = await get_json(api, "/mirror/v1/events", {"after": after, "limit": "333"})
        seen += page.get("events", [])
        if page["next"] == after:
            break
        after = page["next"]
    assert len(seen) == total and len({e["id"] for e in seen}) == total
    first = seen[0]
    assert first["specversion"] == "1.0" and first["type"] == "registry.image.created"
    assert first["subject"] == first["data"]["id"] and first["time"].endswith("Z")
    assert {e["type"] for e in seen} <= {
        "registry.image.created",
        "registry.blob.added",
        "registry.tag.added",
    }
    await get_json(api, "/mirror/v1/events", {"after": "-1"}, status=400)
    await get_json(api, "/mirror/v1/events", {"limit": "1001"}, status=400)


async def test_probes_and_metrics(world: World, api: TestClient) -> None:
    assert (await get_json(api, "/healthz"))["status"] == "ok"
    assert (await get_json(api, "/readyz"))["status"] == "ready"
    await get_json(api, IMAGES, {"folderId": world.scopes[0].id})
    text = await (await api.get("/metrics")).text()
    assert (
        'mirror_api_request_duration_seconds_count{method="GET",route="/container-registry/v1/images",status="200"}'
        in text
    )
    assert "mirror_db_outbox_unsent_events" in text
    assert "mirror_db_scope_last_complete_age_seconds{scope=" in text


async def test_not_ready_until_migrated(postgres_dsn: str, settings: Settings) -> None:
    name = new_database_name("api_unmigrated")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        pool = await create_pool(dsn_with_database(postgres_dsn, name), max_size=2)
        try:
            app = create_app(settings, pool=pool, upstream=BrokenUpstream(RuntimeError()))
            app.cleanup_ctx.clear()  # nothing to open: probe the bare database
            from mirror.api.appkeys import POOL

            app[POOL] = pool
            async with TestClient(TestServer(app)) as api:
                assert (await get_json(api, "/healthz"))["status"] == "ok"
                error = await get_json(api, "/readyz", status=503)
                assert error["code"] == 14 and "migration" in error["message"]
        finally:
            await pool.close()
    finally:
        admin = await asyncpg.connect(postgres_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
