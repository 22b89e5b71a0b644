"""The stats tables without their rows' registry (sql/110), against real PostgreSQL.

A repository's registry is its name's first segment: the upgrade drops the column
that repeated it, and refuses (changing nothing) an index whose rows say otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mirror.store.migrate import MigrationError, apply_migrations
from tests.postgres_fixture import ROUTINES_113, schema_before, scratch_database

INSERT_LONE = (
    "INSERT INTO stats_lone_digests (digest, registry_id, repository, size) VALUES ($1, $2, $3, 5)"
)
COLUMNS = """
SELECT attrelid::regclass::text AS tab FROM pg_attribute
WHERE attname = 'registry_id' AND NOT attisdropped
  AND attrelid IN ('stats_lone_digests'::regclass, 'stats_images'::regclass)
ORDER BY 1
"""


@pytest.fixture
async def stats_before_110(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to sql/109 (its rows carry their registry)."""
    old_sql = schema_before(tmp_path / "sql", 110, routines=ROUTINES_113)
    async with scratch_database(postgres_dsn, "stats_110", sql_dir=old_sql) as conn:
        yield conn


async def test_rows_of_another_registry_stop_the_upgrade_and_change_nothing(
    stats_before_110: asyncpg.Connection,
) -> None:
    conn = stats_before_110
    await conn.execute(INSERT_LONE, b"\x01" * 32, "reg1", "reg1/app")
    await conn.execute(INSERT_LONE, b"\x02" * 32, "reg9", "reg1/web")
    with pytest.raises(MigrationError, match="first segment of their repository"):
        await apply_migrations(conn)
    assert await conn.fetch(COLUMNS) != []
    assert await conn.fetchval("SELECT count(*) FROM stats_lone_digests") == 2

    await conn.execute("UPDATE stats_lone_digests SET registry_id = 'reg1'")
    await apply_migrations(conn)
    assert await conn.fetch(COLUMNS) == []
    rows = await conn.fetch(
        "SELECT l.digest, p.name, l.size FROM stats_lone_digests l"
        " JOIN stats_repositories p ON p.id = l.repository_id ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [
        (b"\x01" * 32, "reg1/app", 5),
        (b"\x02" * 32, "reg1/web", 5),
    ]
