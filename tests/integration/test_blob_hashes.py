"""The images that hold a blob, found through the hashes of the digests (sql/112).

The GIN index is over each digest's CRC-32C, which two digests may share: whatever
plan a lookup takes (the index, or the primary key in id order), an image that holds
only the other digest of such a pair is never answered, by the SQL or by the API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mirror.api.app import create_app
from mirror.api.blobs import SELECT_IMAGES
from mirror.ingest.merge import PageWriter
from mirror.ingest.staging import page_images
from mirror.model import digest_key
from mirror.settings import Settings
from mirror.store.migrate import apply_migrations
from tests.integration.ingest_before_120 import ingest_before_120
from tests.integration.test_ingest_merge import img
from tests.postgres_fixture import ROUTINES_113, schema_before, scratch_database

# Two sha256 digests with the same CRC-32C (found among sha256(int8send(n)) for n up
# to 300,000; the test checks that PostgreSQL hashes them alike).
SHARED = "sha256:d44948f8fe5a5d575c4c478dd6263686f5dfccf2f4c117bd915a14b05b12b4f4"
OTHER = "sha256:892d954d458bd18b54fa832ae6df8f1d81f6bf5f76390642d33fd1bf8c29e027"
# forcing each plan the blob lookup can take
PLANS = {
    "gin": ("SET LOCAL enable_indexscan = off", "SET LOCAL enable_seqscan = off"),
    "primary key": ("SET LOCAL enable_bitmapscan = off", "SET LOCAL enable_seqscan = off"),
}


def holding(n: int, *digests: str, registry: str = "reg1") -> dict[str, Any]:
    """Image n with a layer of each of the given digests."""
    image = img(n, registry=registry)
    image["layers"] = [
        {"id": f"l{n}.{k}", "digest": d, "size": "100"} for k, d in enumerate(digests)
    ]
    return image


@pytest.fixture
async def api(settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings, pool=db_pool, upstream=None))) as c:
        yield c


async def test_a_digest_sharing_its_hash_with_another_finds_only_its_own_images(
    db_pool: asyncpg.Pool, api: TestClient
) -> None:
    shared, other = digest_key(SHARED), digest_key(OTHER)
    # the two keys collide: the index cannot tell them apart
    assert await db_pool.fetchval("SELECT crc32c($1::bytea) = crc32c($2::bytea)", shared, other)
    # images 1 and 3 hold SHARED, 2 OTHER, 4 both, 5 and more neither (enough of them
    # that the planner reads a rare digest's images through the GIN index)
    page = [holding(1, SHARED), holding(2, OTHER, registry="reg2"), holding(3, SHARED)]
    page += [holding(4, SHARED, OTHER), *(img(n) for n in range(5, 500))]
    async with db_pool.acquire() as conn:
        writer = PageWriter(conn, folder_id="f1")
        await writer.prepare()
        await writer.apply(page_images(page))
        await conn.execute("ANALYZE images")
    ids = {n: img(n)["id"] for n in range(1, 6)}

    for plan, settings in PLANS.items():
        async with db_pool.acquire() as conn, conn.transaction():
            for setting in settings:
                await conn.execute(setting)
            explained = "\n".join(
                r[0] for r in await conn.fetch("EXPLAIN " + SELECT_IMAGES, shared, "", 100)
            )
            assert ("images_blob_hashes" in explained) == (plan == "gin"), explained
            for key, holders in ((shared, [1, 3, 4]), (other, [2, 4])):
                rows = await conn.fetch(SELECT_IMAGES, key, "", 100)
                assert [r["id"] for r in rows] == [ids[n] for n in holders], plan
            # after a cursor, as the next page reads
            rows = await conn.fetch(SELECT_IMAGES, shared, ids[1], 100)
            assert [r["id"] for r in rows] == [ids[3], ids[4]], plan

    # the API: the images and, before the stats have folded them, the repositories
    # read from the images themselves
    response = await api.get(f"/mirror/v1/blobs/{OTHER}")
    assert response.status == 200
    blob = orjson.loads(await response.read())
    assert [i["id"] for i in blob["images"]] == [ids[2], ids[4]]
    assert blob["refCount"] == "2"
    assert blob["repositories"] == sorted({img(2, registry="reg2")["name"], img(4)["name"]})
    response = await api.get(f"/mirror/v1/blobs/{SHARED}", params={"pageSize": "2"})
    blob = orjson.loads(await response.read())
    assert [i["id"] for i in blob["images"]] == [ids[1], ids[3]] and blob["nextPageToken"]


@pytest.fixture
async def index_before_112(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to sql/111 (the GIN index over the 32-byte keys)."""
    old_sql = schema_before(tmp_path / "sql", 112, routines=ROUTINES_113)
    async with scratch_database(postgres_dsn, "blobs_112", sql_dir=old_sql) as conn:
        yield conn


async def test_the_upgrade_leaves_the_planner_the_statistics_it_needs(
    index_before_112: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without statistics for the index's expression the planner walked the primary key
    for every digest (~460 ms a lookup at 1,000,000 images): the upgrade gathers them,
    and a digest few images hold is read through the new index."""
    conn = index_before_112
    ingest_before_120(monkeypatch)
    writer = PageWriter(conn, folder_id="f1")
    await writer.prepare()
    # untagged: today's tag writers need the tables of sql/116
    page = [holding(1, SHARED), *(img(n) for n in range(5, 500))]
    await writer.apply(page_images([{**image, "tags": []} for image in page]))
    await conn.execute("ANALYZE images")  # the old index's statistics, as a mirror has them

    await apply_migrations(conn)

    stats = await conn.fetchval(
        "SELECT count(*) FROM pg_stats WHERE tablename = 'images_blob_hashes'"
    )
    assert stats == 1
    explained = "\n".join(
        r[0] for r in await conn.fetch("EXPLAIN " + SELECT_IMAGES, digest_key(SHARED), "", 100)
    )
    assert "images_blob_hashes" in explained, explained
    rows = await conn.fetch(SELECT_IMAGES, digest_key(SHARED), "", 100)
    assert [r["id"] for r in rows] == [img(1)["id"]]
