"""An image row's digest as its key and its registry as a number (sql/120), against real
PostgreSQL: the upgrade keeps every row's JSON, digest, registry and order; two writers
meeting one new registry draw one number."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from mirror.api.list_query import RegistryNumbers
from mirror.model import digest_text
from mirror.store.migrate import apply_migrations
from tests.integration.stats_world import IndexWriter, make_image
from tests.postgres_fixture import schema_before, scratch_database

# An image an older mirror indexed with a digest the ingest refuses today (not sha256).
ODD = """
INSERT INTO images (id, name, registry_id, digest, doc, content_hash, created_ns)
VALUES ('crpodd', 'regb/app', 'regb', 'sha512:' || repeat('e', 128),
        '{"id":"crpodd","digest":"odd"}', '\\x00', 0)
"""
# Every row as the readers see it, in the order of a List by digest within each registry.
ROWS_BEFORE = """
SELECT id, name, registry_id AS registry, digest, image_doc(images) AS doc FROM images
ORDER BY registry_id, digest, id
"""
ROWS_AFTER = """
SELECT i.id, i.name, r.name AS registry, i.digest, image_doc(i) AS doc
FROM images AS i JOIN image_registries AS r ON r.id = i.registry
ORDER BY i.registry, i.digest, i.id
"""
INDEXES = """
SELECT indexname, regexp_replace(indexdef, '.* USING ', '') AS def
FROM pg_indexes WHERE tablename = 'images' ORDER BY indexname
"""


async def test_the_upgrade_keeps_every_image_as_the_readers_see_it(
    postgres_dsn: str, tmp_path: Path
) -> None:
    old_sql = schema_before(tmp_path / "sql", 120)
    async with scratch_database(postgres_dsn, "images_120", sql_dir=old_sql) as conn:
        writer = IndexWriter(conn)
        shared = ("sha256:" + "5" * 64, 30)
        await writer.push(
            [
                make_image(f"crp{n}", f"reg{'ab'[n % 2]}/app{n % 3}", None, [shared])
                for n in range(12)
            ]
        )
        await conn.execute(ODD)
        before = [dict(r) for r in await conn.fetch(ROWS_BEFORE)]
        indexes_before = [
            (r["indexname"], r["def"].replace("registry_id", "registry"))
            for r in await conn.fetch(INDEXES)
        ]

        await apply_migrations(conn)

        after = [dict(r) for r in await conn.fetch(ROWS_AFTER)]
        # the same rows and JSON; each digest its key, the odd one too. The sha256 digests
        # keep their order (an odd key sorts by its bytes among the 32-byte ones).
        sha256 = [r["id"] for r in before if r["id"] != "crpodd"]
        assert [r["id"] for r in after if r["id"] != "crpodd"] == sha256
        by_id = {r["id"]: r for r in after}
        for old in before:
            new = by_id[old["id"]]
            assert (new["name"], new["registry"], new["doc"]) == (
                old["name"],
                old["registry"],
                old["doc"],
            )
            assert digest_text(new["digest"]) == old["digest"]
        assert {len(r["digest"]) for r in after} == {32, 135}
        assert await conn.fetchval("SELECT array_agg(name ORDER BY id) FROM image_registries") == [
            "rega",
            "regb",
        ]
        assert [(r["indexname"], r["def"]) for r in await conn.fetch(INDEXES)] == indexes_before
        columns = dict(
            await conn.fetch(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'images'::regclass AND attname IN ('digest', 'registry')"
            )
        )
        assert columns == {"digest": "bytea", "registry": "integer"}

        # the writers go on: a new registry draws the next number, a known one keeps its own
        await writer.push([make_image("crpnew", "regc/app", None, [shared])])
        await writer.push([make_image("crpmore", "rega/app0", None, [shared])])
        numbers = await conn.fetch(
            "SELECT i.id, r.name FROM images i JOIN image_registries r ON r.id = i.registry"
            " WHERE i.id IN ('crpnew', 'crpmore', 'crp0') ORDER BY i.id"
        )
        assert [tuple(r) for r in numbers] == [
            ("crp0", "rega"),
            ("crpmore", "rega"),
            ("crpnew", "regc"),
        ]
        assert await conn.fetchval("SELECT max(id) FROM image_registries") == 3


async def test_two_writers_meeting_a_new_registry_draw_one_number(
    db_pool: asyncpg.Pool,
) -> None:
    """The second writer's draw waits for the first's transaction (a lock, seen in
    pg_stat_activity before the first commits), then reads the number it committed."""
    first, second = await db_pool.acquire(), await db_pool.acquire()
    try:
        transaction = first.transaction()
        await transaction.start()
        number = await first.fetchval("SELECT image_registry('crpfresh')")
        pid = await second.fetchval("SELECT pg_backend_pid()")
        drawn = asyncio.create_task(second.fetchval("SELECT image_registry('crpfresh')"))
        for _ in range(500):  # the barrier: the second draw is waiting on the first's lock
            waiting = await db_pool.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
            )
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting and not drawn.done()
        await transaction.commit()
        assert await drawn == number
        assert (
            await db_pool.fetchval("SELECT count(*) FROM image_registries WHERE name = 'crpfresh'")
            == 1
        )
    finally:
        await db_pool.execute("DELETE FROM image_registries WHERE name = 'crpfresh'")
        await db_pool.release(first)
        await db_pool.release(second)


async def test_the_api_remembers_a_registry_only_once_it_has_a_number(
    db_pool: asyncpg.Pool,
) -> None:
    """A registry the index does not hold yet is looked up again: a List asked before the
    first ingest of a registry does not hide its images after it."""
    numbers = RegistryNumbers()
    async with db_pool.acquire() as conn:
        try:
            assert await numbers.of(conn, ["crplater"]) == {"crplater": None}
            drawn = await conn.fetchval("SELECT image_registry('crplater')")
            assert await numbers.of(conn, ["crplater", "crplater"]) == {"crplater": drawn}
            await conn.execute("DELETE FROM image_registries WHERE name = 'crplater'")
            # remembered: a number never changes, so it is not read again
            assert await numbers.of(conn, ["crplater"]) == {"crplater": drawn}
        finally:
            await conn.execute("DELETE FROM image_registries WHERE name = 'crplater'")
