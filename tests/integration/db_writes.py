"""What a write to the test database would change, to prove that requests wrote nothing."""

from __future__ import annotations

from typing import Any

import asyncpg

SNAPSHOT = """
SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS next_xid,
       (SELECT count(*) FROM images) AS images,
       (SELECT md5(string_agg(id || ':' || md5(doc::text), ',' ORDER BY id)) FROM images) AS docs,
       (SELECT coalesce(max(id), 0) FROM outbox) AS outbox,
       (SELECT count(*) FROM outbox) AS events,
       (SELECT count(*) FROM operations) AS operations
"""


async def settle(pool: asyncpg.Pool) -> None:
    """Analyze now, so that no autoanalyze (which takes a transaction id) falls in a window."""
    await pool.execute("ANALYZE")


async def database_writes(pool: asyncpg.Pool) -> dict[str, Any]:
    """The next transaction id (any write transaction anywhere in the cluster takes one),
    and the index, outbox and operations as they stand."""
    row = await pool.fetchrow(SNAPSHOT)
    return dict(row)
