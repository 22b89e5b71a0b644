"""What a write to the test database would change, to prove that requests wrote nothing.

``database_state`` takes every table's row count (and a digest of the index's
documents) and a marker: the next transaction id. ``rows_written_since`` finds
the rows of every table whose ``xmin`` is at or past the marker: any INSERT or
UPDATE leaves one, and a DELETE changes a count. Transaction ids are cluster-wide
(other databases' autovacuum takes some), so the marker is compared row by row,
never as a whole.
"""

from __future__ import annotations

from typing import Any

import asyncpg

TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
NEXT_XID = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
DOCS = "SELECT md5(string_agg(id || ':' || md5(image_doc(images)), ',' ORDER BY id)) FROM images"


async def settle(pool: asyncpg.Pool) -> None:
    """Analyze now, so that no autoanalyze of this database falls in a measured window."""
    await pool.execute("ANALYZE")


async def database_state(pool: asyncpg.Pool) -> dict[str, Any]:
    """Every table's row count, the images' documents digest, and the next transaction id."""
    state: dict[str, Any] = {"next_xid": await pool.fetchval(NEXT_XID)}
    for row in await pool.fetch(TABLES):
        table = row["tablename"]
        state[table] = await pool.fetchval(f'SELECT count(*) FROM "{table}"')
    state["images docs"] = await pool.fetchval(DOCS)
    return state


async def rows_written_since(pool: asyncpg.Pool, marker: int) -> dict[str, int]:
    """Per table, the rows written (inserted or updated) by a transaction at or after ``marker``."""
    written: dict[str, int] = {}
    for row in await pool.fetch(TABLES):
        table = row["tablename"]
        count = await pool.fetchval(
            f'SELECT count(*) FROM "{table}" WHERE xmin::text::bigint >= $1', marker % 2**32
        )
        if count:
            written[table] = count
    return written


async def assert_nothing_written(pool: asyncpg.Pool, before: dict[str, Any]) -> None:
    after = await database_state(pool)
    assert {k: v for k, v in after.items() if k != "next_xid"} == {
        k: v for k, v in before.items() if k != "next_xid"
    }, "a table's rows changed"
    assert await rows_written_since(pool, before["next_xid"]) == {}, "rows were written"
