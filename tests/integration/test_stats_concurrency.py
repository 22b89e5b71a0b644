"""Concurrent writers: nobody waits on an aggregate row, and nothing is lost or counted twice."""

from __future__ import annotations

import asyncio

import asyncpg

from mirror.model import Scope
from mirror.stats.queries import fetch_stats
from mirror.stats.reference import ReferenceIndex
from tests.integration.stats_world import IndexWriter, make_image
from tests.integration.test_stats_property import assert_served_equals_reference

SHARED = ("sha256:" + "5" * 64, 7000)


def image(n: int, registry: str) -> object:
    return make_image(
        f"crp{n:017d}",
        f"{registry}/app",
        ("sha256:" + f"{n:064x}", 100),
        [SHARED, (f"sha256:u{n:063x}", 10 * n)],
    )


async def test_a_writer_never_waits_for_the_fold_lock_and_reads_see_pending_rows(
    db_pool: asyncpg.Pool,
) -> None:
    async with db_pool.acquire() as first, db_pool.acquire() as second:
        one = IndexWriter(first)
        two = IndexWriter(second, one.reference)
        await one.set_folder("crpreg1", "b1gfolder")
        await one.set_folder("crpreg2", "b1gfolder")
        # the first writer's transaction stays open holding the fold lock...
        tx = first.transaction()
        await tx.start()
        await one.conn.execute("SELECT stats_fold_pending()")
        assert (
            await first.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") >= 1
        )
        # ...while the second writes another registry of the same folder and commits at once
        await asyncio.wait_for(two.push([image(2, "crpreg2")]), timeout=10)  # type: ignore[list-item]
        assert await second.fetchval("SELECT count(*) FROM stats_totals_pending") > 0
        whole = await fetch_stats(db_pool, None)
        assert (whole.images, whole.blobs) == (1, 3)
        await tx.commit()
        # the next write folds what was pending
        await one.push([image(1, "crpreg1")])  # type: ignore[list-item]
        assert await first.fetchval("SELECT count(*) FROM stats_totals_pending") == 0
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
        folder = await fetch_stats(conn, Scope.parse("folder:b1gfolder"))
        assert folder == ReferenceIndex.of(
            reference.images.values(), reference.history.values(), reference.folder_of
        ).stats(Scope.parse("folder:b1gfolder"))
        assert folder.images == 12
        await assert_served_equals_reference(conn, reference)
