"""Lineage chain keys of 4 bytes a layer (sql/109), against real PostgreSQL.

The upgrade cuts every stored key (8 bytes a layer before) to the parts
``stats_chain_part`` makes now, without reading the images, and lineage lookups
(Python's chain parts) find the same keys.
"""

from __future__ import annotations

import asyncpg

from mirror.stats.queries import CHAIN_LAYERS, CHAIN_PART_BYTES, chain_key_part
from mirror.store.migrate import SQL_DIR

# images with 0, 1, 3 and 300 layers (over the 256 a chain keeps), a config or not
INSERT_IMAGES = """
INSERT INTO images (id, name, registry, digest, doc, content_hash, created_ns,
                    blob_digests, blob_sizes, blob_config)
SELECT 'crp' || n, 'reg/app', image_registry('reg'), sha256(n::text::bytea),
       '{}', '\\x00', 0,
       ARRAY(SELECT sha256((n * 1000 + k)::text::bytea) FROM generate_series(1, blobs) AS k),
       ARRAY(SELECT 10::bigint FROM generate_series(1, blobs)), n % 2 = 0
FROM unnest(ARRAY[1, 2, 3, 4], ARRAY[0, 2, 3, 301]) AS x(n, blobs)
"""
CHAINS = "SELECT image_id, chain, layer_count FROM stats_images ORDER BY image_id"
LAYERS = "SELECT id, blob_digests[1 + blob_config::int :] AS layers FROM images ORDER BY id"


# The keys as sql/109 found them: 8 bytes of the md5 of each of the first 256 layers.
OLD_CHAINS = """
UPDATE stats_images AS s
SET chain = coalesce((SELECT string_agg(substring(decode(md5(u.d), 'hex') FROM 1 FOR 8), ''::bytea
                                        ORDER BY u.o)
                      FROM unnest(i.blob_digests[1 + i.blob_config::int : 256 + i.blob_config::int])
                           WITH ORDINALITY AS u(d, o)), ''::bytea)
FROM images AS i WHERE i.id = s.image_id
"""
MIGRATION_109 = SQL_DIR / "109_stats_chain_parts.sql"


def _chain(layers: list[bytes]) -> bytes:
    return b"".join(chain_key_part(d) for d in layers[:CHAIN_LAYERS])


async def test_upgrade_cuts_every_chain_key_to_the_new_parts(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await conn.execute(INSERT_IMAGES)
        await conn.execute("SELECT stats_rebuild()")
        await conn.execute(OLD_CHAINS)
        before = await conn.fetch(CHAINS)
        assert [len(r["chain"]) for r in before] == [8 * min(r["layer_count"], 256) for r in before]
        assert max(r["layer_count"] for r in before) == 300

        async with conn.transaction():  # as the migrator runs it
            await conn.execute(MIGRATION_109.read_text())
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
