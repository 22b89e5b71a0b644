"""Lineage chain keys of 4 bytes a layer (sql/109), against real PostgreSQL.

The upgrade cuts every stored key to the parts the new ``stats_chain_part`` makes,
without reading the images, and lineage lookups (Python's chain parts) find the
same keys.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from mirror.stats.queries import CHAIN_LAYERS, CHAIN_PART_BYTES, chain_key_part
from mirror.store.migrate import SQL_DIR, apply_migrations, find_migrations
from tests.postgres_fixture import dsn_with_database, new_database_name

NEW_PART = "RETURN substring(decode(md5(digest), 'hex') FROM 1 FOR 4);"
OLD_PART = "RETURN substring(decode(md5(digest), 'hex') FROM 1 FOR 8);"
# images with 0, 1, 3 and 300 layers (over the 256 a chain keeps), a config or not
INSERT_IMAGES = """
INSERT INTO images (id, name, registry_id, digest, doc, content_hash, created_ns,
                    blob_digests, blob_sizes, blob_config)
SELECT 'crp' || n, 'reg/app', 'reg', 'sha256:' || encode(sha256(n::text::bytea), 'hex'),
       '{}', '\\x00', 0,
       ARRAY(SELECT sha256((n * 1000 + k)::text::bytea) FROM generate_series(1, blobs) AS k),
       ARRAY(SELECT 10::bigint FROM generate_series(1, blobs)), n % 2 = 0
FROM unnest(ARRAY[1, 2, 3, 4], ARRAY[0, 2, 3, 301]) AS x(n, blobs)
"""
CHAINS = "SELECT image_id, chain, layer_count FROM stats_images ORDER BY image_id"
LAYERS = "SELECT id, blob_digests[1 + blob_config::int :] AS layers FROM images ORDER BY id"


@pytest.fixture
async def stats_before_109(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to sql/108, its stats routines making 8-byte parts."""
    old_sql = tmp_path / "sql"
    shutil.copytree(SQL_DIR / "routines", old_sql / "routines")
    stats = old_sql / "routines" / "stats.sql"
    assert NEW_PART in stats.read_text()
    stats.write_text(stats.read_text().replace(NEW_PART, OLD_PART))
    for migration in find_migrations():
        if migration.version < 109:
            shutil.copy(migration.path, old_sql / migration.path.name)
    name = new_database_name("chain_109")
    admin = await asyncpg.connect(postgres_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(dsn_with_database(postgres_dsn, name))
    try:
        await apply_migrations(conn, old_sql)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def _chain(layers: list[bytes]) -> bytes:
    return b"".join(chain_key_part(d) for d in layers[:CHAIN_LAYERS])


async def test_upgrade_cuts_every_chain_key_to_the_new_parts(
    stats_before_109: asyncpg.Connection,
) -> None:
    conn = stats_before_109
    await conn.execute(INSERT_IMAGES)
    await conn.execute("SELECT stats_rebuild()")
    before = await conn.fetch(CHAINS)
    assert [len(r["chain"]) for r in before] == [8 * min(r["layer_count"], 256) for r in before]
    assert max(r["layer_count"] for r in before) == 300

    await apply_migrations(conn)

    after = await conn.fetch(CHAINS)
    layers = {r["id"]: list(r["layers"]) for r in await conn.fetch(LAYERS)}
    assert [r["image_id"] for r in after] == [r["image_id"] for r in before]
    assert CHAIN_PART_BYTES == 4
    for row in after:
        # what a lookup computes, and what the fold now writes for the same image
        assert row["chain"] == _chain(layers[row["image_id"]])
        assert row["chain"] == await conn.fetchval(
            "SELECT stats_chain(blob_digests, blob_config) FROM images WHERE id = $1",
            row["image_id"],
        )
    assert sum(len(r["chain"]) for r in after) * 2 == sum(len(r["chain"]) for r in before)
