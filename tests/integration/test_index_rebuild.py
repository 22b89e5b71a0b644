"""The indexes a bulk write filled out of order are built again, packed, on real PostgreSQL.

10,000 generated images COPied in the generator's order (bench/api_dataset.py): the
List indexes on names and digests receive their keys in random order, as after a
first mirror. A rebuild must leave every index valid and smaller or equal, skip the
tables written in key order and the GIN index, give way to another process's
rebuild, and never leave an invalid copy of an index behind for long: a copy a
failed rebuild could not drop is dropped by the next one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.api_dataset import load_registry
from mirror.store import index_rebuild
from mirror.store.index_rebuild import REBUILD_LOCK, rebuild_indexes
from mirror.store.maintenance import after_pass

IMAGES = 10_000
INDEXES = """
SELECT c.relname AS name, c.relfilenode AS file, pg_relation_size(c.oid) AS bytes,
       i.indisvalid AS valid, a.amname AS kind, t.relname AS "table"
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_am a ON a.oid = c.relam
WHERE t.relnamespace = 'public'::regnamespace
"""
# The rows the index on (registry, name, id) gives in its order.
BY_NAME = """
SELECT id FROM images WHERE registry = (SELECT min(registry) FROM images)
ORDER BY registry, name, id LIMIT 500
"""


@pytest.fixture
async def loaded(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        await load_registry(conn, images=IMAGES, seed=3, workers=1, progress=False)
        yield conn
    finally:
        await conn.close()


async def indexes(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    return {r["name"]: r for r in await conn.fetch(INDEXES)}


async def test_a_rebuild_packs_the_indexes_filled_out_of_order(
    loaded: asyncpg.Connection,
) -> None:
    before = await indexes(loaded)
    rows_before = await loaded.fetch(BY_NAME)

    result = await rebuild_indexes(loaded, min_bytes=0)

    after = await indexes(loaded)
    assert set(after) == set(before)  # no copy left, none lost
    assert all(r["valid"] for r in after.values())
    rebuilt = set(result.indexes)
    assert result.failed == () and not result.skipped
    # every B-tree of the tables filled out of key order; not the GIN, not the outbox's
    expected = {
        name
        for name, r in before.items()
        if r["kind"] == "btree" and r["table"] not in ("outbox", "stats_changes")
    }
    assert rebuilt == expected
    assert before["images_blob_hashes"]["kind"] == "gin"
    assert "images_blob_hashes" not in rebuilt and "outbox_pkey" not in rebuilt
    for name in rebuilt:
        assert after[name]["file"] != before[name]["file"], name  # built again
        assert after[name]["bytes"] <= before[name]["bytes"], name
    for name in set(after) - rebuilt:
        assert after[name]["file"] == before[name]["file"], name
    # the indexes on names and digests were filled in random order: packed, a fifth smaller
    for name in ("images_registry_name", "images_registry_name_digest", "images_registry_digest"):
        assert after[name]["bytes"] <= 0.8 * before[name]["bytes"], (name, before, after)
    assert result.bytes_after < result.bytes_before
    assert await loaded.fetch(BY_NAME) == rows_before


async def test_a_failed_rebuild_leaves_its_index_and_the_next_one_drops_the_copy(
    loaded: asyncpg.Connection, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = await indexes(loaded)
    writer = await asyncpg.connect(database_url)
    try:
        # an open write on images: REINDEX CONCURRENTLY waits for it after making its copy
        tx = writer.transaction()
        await tx.start()
        await writer.execute(
            "UPDATE images SET compressed_size = compressed_size WHERE id = (SELECT min(id) FROM images)"
        )
        with caplog.at_level(logging.WARNING, logger="mirror.store.index_rebuild"):
            failed = await rebuild_indexes(loaded, min_bytes=0, lock_wait_s=0.2)
        during = await indexes(loaded)
        await tx.rollback()
    finally:
        await writer.close()

    assert len(failed.failed) == 1
    (name,) = failed.failed
    assert during[name]["table"] == "images"
    assert during[name]["file"] == before[name]["file"] and during[name]["valid"]
    assert "rebuild stopped" in caplog.text
    # the fault landed after the copy was made: the copy is there, invalid, and its drop
    # waited for the same open transaction
    copies = {n: r for n, r in during.items() if n not in before}
    assert set(copies) == {f"{name}_ccnew"} and not copies[f"{name}_ccnew"]["valid"]
    assert failed.dropped == ()
    # the indexes after it in the order were not touched
    assert all(during[n]["file"] == before[n]["file"] for n in before if n not in failed.indexes)

    again = await rebuild_indexes(loaded, min_bytes=0)
    after = await indexes(loaded)
    assert again.dropped == (f"{name}_ccnew",)
    assert set(after) == set(before) and all(r["valid"] for r in after.values())
    assert name in again.indexes and again.failed == ()


async def test_one_process_rebuilds_at_a_time(
    loaded: asyncpg.Connection, database_url: str
) -> None:
    before = await indexes(loaded)
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK)
        result = await rebuild_indexes(loaded, min_bytes=0)
    finally:
        await other.close()
    assert result.skipped and result.indexes == ()
    assert {n: r["file"] for n, r in (await indexes(loaded)).items()} == {
        n: r["file"] for n, r in before.items()
    }
    # the lock is the session's: released with it, the next rebuild runs
    assert (await rebuild_indexes(loaded, min_bytes=0)).indexes


@pytest.mark.parametrize(
    ("created", "listed", "rebuilt"),
    [(IMAGES, IMAGES, True), (IMAGES, 3 * IMAGES, False), (IMAGES - 1, IMAGES - 1, False)],
)
async def test_after_a_pass_the_indexes_are_rebuilt_when_the_pass_filled_them(
    loaded: asyncpg.Connection,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    created: int,
    listed: int,
    rebuilt: bool,
) -> None:
    monkeypatch.setattr(index_rebuild, "MIN_INDEX_BYTES", 0)
    before = await indexes(loaded)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await after_pass(pool, created=created, listed=listed, changed=created, embedded=False)
    finally:
        await pool.close()
    after = await indexes(loaded)
    assert (
        after["images_registry_name"]["file"] != before["images_registry_name"]["file"]
    ) is rebuilt
