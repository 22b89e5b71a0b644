"""Concurrent writers and the folder: nobody waits on an aggregate row, and nothing is lost or
counted twice."""

from __future__ import annotations

import asyncio

import asyncpg

from mirror.model import Event, EventType, Scope
from mirror.stats.folder import fold_once
from mirror.stats.queries import fetch_stats
from mirror.stats.reference import ReferenceIndex
from mirror.store.outbox import append_events
from tests.integration.stats_world import IndexWriter, make_image
from tests.integration.test_stats_property import assert_served_equals_reference, settle

SHARED = ("sha256:" + "5" * 64, 7000)


def image(n: int, registry: str) -> object:
    return make_image(
        f"crp{n:017d}",
        f"{registry}/app",
        ("sha256:" + f"{n:064x}", 100),
        [SHARED, (f"sha256:u{n:063x}", 10 * n)],
    )


async def test_a_writer_never_waits_for_the_folder(db_pool: asyncpg.Pool) -> None:
    """A fold pass held open inside its batch does not block a writer, which touches
    only the change log; the next pass folds what it wrote."""
    async with db_pool.acquire() as first, db_pool.acquire() as second:
        one = IndexWriter(first)
        two = IndexWriter(second, one.reference)
        await one.set_folder("crpreg1", "b1gfolder")
        await one.set_folder("crpreg2", "b1gfolder")
        await one.push([image(1, "crpreg1")])  # type: ignore[list-item]
        inside = asyncio.Event()
        release = asyncio.Event()

        async def hold(conn: asyncpg.Connection) -> None:
            inside.set()
            await release.wait()

        async with db_pool.acquire() as folder_conn:
            fold = asyncio.create_task(fold_once(folder_conn, before_commit=hold))
            await asyncio.wait_for(inside.wait(), timeout=10)
            # the pass holds its batch and the aggregates' rows; a page commits meanwhile
            await asyncio.wait_for(two.push([image(2, "crpreg2")]), timeout=10)  # type: ignore[list-item]
            assert await second.fetchval("SELECT count(*) FROM stats_changes") > 0
            # a second folder does not run beside the first
            async with db_pool.acquire() as other:
                assert await fold_once(other) is None
            release.set()
            assert await fold == 3  # two registries rows, the first image with its blob references
        whole = await fetch_stats(db_pool, None)
        assert (whole.images, whole.blobs) == (1, 3)
        assert whole.freshness is not None and whole.freshness.pending_changes == 1
        await assert_served_equals_reference(first, one.reference)


async def test_concurrent_pages_in_one_folder_count_a_shared_digest_once(
    db_pool: asyncpg.Pool, database_url: str
) -> None:
    async with db_pool.acquire() as conn:
        setup = IndexWriter(conn)
        for registry in ("crpreg1", "crpreg2", "crpreg3"):
            await setup.set_folder(registry, "b1gfolder")
    reference = setup.reference

    async def writer(registry: str, start: int) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            w = IndexWriter(conn, reference)
            for n in range(start, start + 5):
                await w.push([image(n, registry)])  # type: ignore[list-item]
            await w.delete([f"crp{start:017d}"])
        finally:
            await conn.close()

    await asyncio.gather(writer("crpreg1", 100), writer("crpreg2", 200), writer("crpreg3", 300))
    async with db_pool.acquire() as conn:
        await settle(conn)
        folder = await fetch_stats(conn, Scope.parse("folder:b1gfolder"))
        assert folder == ReferenceIndex.of(
            reference.images.values(), reference.history.values(), reference.folder_of
        ).stats(Scope.parse("folder:b1gfolder"))
        assert folder.images == 12
        await assert_served_equals_reference(conn, reference)


async def test_an_idle_fold_touches_no_table_and_still_moves_the_mark(
    db_pool: asyncpg.Pool,
) -> None:
    """An idle mirror folds every second: with nothing in the change log a pass writes
    nothing, not even its session's temporary batch table (whose TRUNCATE would rewrite
    a catalog row each time); an event that changed no figure still moves the mark."""
    async with db_pool.acquire() as conn:
        writer = IndexWriter(conn)
        await writer.set_folder("crpreg1", "b1gfolder")
        await writer.push([image(1, "crpreg1")])  # type: ignore[list-item]
        assert await fold_once(conn)  # folds what the push wrote
    async with db_pool.acquire() as conn:
        await conn.execute("DISCARD TEMP")  # a session that has not folded yet
        mark = await conn.fetchrow("SELECT event_id, batches FROM stats_folded")
        assert await fold_once(conn) == 0
        assert await conn.fetchval("SELECT to_regclass('pg_temp.stats_batch')") is None
        assert await conn.fetchrow("SELECT event_id, batches FROM stats_folded") == mark
        # an event with no figure behind it (as a re-tag writes) moves the mark alone
        async with conn.transaction():
            tag = {
                "repository": "crpreg1/app",
                "tag": "v2",
                "imageId": f"crp{1:017d}",
                "digest": "sha256:" + f"{1:064x}",
            }
            await append_events(conn, [Event(EventType.TAG_ADDED, "crpreg1/app:v2", tag)])
        assert await fold_once(conn) == 0
        moved = await conn.fetchrow("SELECT event_id, batches FROM stats_folded")
        assert moved["event_id"] > mark["event_id"] and moved["batches"] == mark["batches"] + 1
        assert await conn.fetchval("SELECT to_regclass('pg_temp.stats_batch')") is None
