"""The blobs row with its columns reordered and a 4-byte count (sql/119), against real
PostgreSQL: the upgrade keeps every row, index and the stats' TRUNCATE trigger."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from mirror.store.migrate import apply_migrations
from tests.integration.stats_world import IndexWriter, make_image
from tests.postgres_fixture import schema_before, scratch_database

ROWS = "SELECT digest, size, ref_count, first_seen, orphaned_at FROM blobs ORDER BY digest"
INDEXES = (
    "SELECT array_agg(indexname::text ORDER BY indexname) FROM pg_indexes WHERE tablename = 'blobs'"
)
TRIGGERS = (
    "SELECT array_agg(tgname::text) FROM pg_trigger"
    " WHERE tgrelid = 'blobs'::regclass AND NOT tgisinternal"
)


async def test_the_upgrade_keeps_every_blob_its_indexes_and_trigger(
    postgres_dsn: str, tmp_path: Path
) -> None:
    old_sql = schema_before(tmp_path / "sql", 119)
    async with scratch_database(postgres_dsn, "blobs_119", sql_dir=old_sql) as conn:
        writer = IndexWriter(conn)
        shared, own = ("sha256:" + "5" * 64, 30), ("sha256:" + "a" * 64, 7)
        await writer.push(
            [
                make_image("crp1", "rega/app", None, [shared, own]),
                make_image("crp2", "rega/web", None, [shared]),
            ]
        )
        await writer.delete(["crp1"])  # `own` orphaned, `shared` held once
        before = [tuple(r) for r in await conn.fetch(ROWS)]
        shape = (await conn.fetchval(INDEXES), await conn.fetchval(TRIGGERS))
        assert [r[2] for r in before] == [1, 0] and before[1][4] is not None

        await apply_migrations(conn)

        assert [tuple(r) for r in await conn.fetch(ROWS)] == before
        assert (await conn.fetchval(INDEXES), await conn.fetchval(TRIGGERS)) == shape
        assert shape[1] == ["stats_log_blobs_truncate"]
        columns = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
            " WHERE attrelid = 'blobs'::regclass AND attnum > 0 ORDER BY attnum"
        )
        assert [(c["attname"], c["type"]) for c in columns] == [
            ("size", "bigint"),
            ("first_seen", "timestamp with time zone"),
            ("orphaned_at", "timestamp with time zone"),
            ("ref_count", "integer"),
            ("digest", "bytea"),
        ]
        # the writers go on: a new reference, the orphan held again
        await writer.push([make_image("crp3", "regb/app", None, [own, shared])])
        counts = await conn.fetch("SELECT ref_count, orphaned_at FROM blobs ORDER BY digest")
        assert [(r["ref_count"], r["orphaned_at"]) for r in counts] == [(2, None), (1, None)]


async def test_a_new_index_has_the_trigger_too(db_pool: asyncpg.Pool) -> None:
    assert await db_pool.fetchval(TRIGGERS) == ["stats_log_blobs_truncate"]
