"""Outbox read benchmark: what deriving payloads (sql/100-101) costs the relay's reads.

A first mirror of ``--images`` simulator images is merged with the ingest's own
``PageWriter`` (pages of 500, as a walk writes them) into a fresh database on an
embedded PostgreSQL; then the whole outbox is claimed in batches of 1,000 with
the relay's ``CLAIM_BATCH`` (through ``outbox_events``: image.created payloads
built from the image's doc, blob and tag payloads from their key) and, for
comparison, with the same statement on the table itself reading each row's
stored text as it is (no derivation). Prints rows/s of each, ``--runs`` times.
Nothing is recorded: the figures go to ``bench/RESULTS.md`` by hand.

    python -m bench.outbox_read --images 20000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from mirror.events.pending import CLAIM_BATCH
from mirror.ingest.changes import run_origin
from mirror.ingest.merge import PageWriter
from mirror.ingest.staging import page_images
from mirror.store.embedded import EmbeddedPostgres
from mirror.store.migrate import apply_migrations
from mirror.store.pool import create_pool
from mirror.upstream.simulator.generator import RegistryModel
from tests.postgres_fixture import dsn_with_database

PAGE = 500
BATCH = 1000
# The same rows read as they are stored: the table, each payload's stored text.
CLAIM_AS_STORED = CLAIM_BATCH.replace("FROM outbox_events", "FROM outbox").replace(
    "payload AS data", "coalesce(data::text, data_tail) AS data"
)


async def drain(conn: asyncpg.Connection, statement: str) -> tuple[int, float]:
    """(rows, seconds) of claiming the whole outbox in batches."""
    started = time.perf_counter()
    cursor = rows = 0
    while batch := await conn.fetch(statement, BATCH, cursor):
        cursor = batch[-1]["id"]
        rows += len(batch)
    return rows, time.perf_counter() - started


async def run(dsn: str, images: int, runs: int) -> None:
    pool = await create_pool(dsn, max_size=1)
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn)
            writer = PageWriter(conn, origin=run_origin(1))
            await writer.prepare()
            model = RegistryModel(images=images, seed=7)
            for start in range(0, images, PAGE):
                page = [i.to_json() for i in model.iter_images(start, min(images, start + PAGE))]
                await writer.apply(page_images(page))
            await conn.execute("VACUUM ANALYZE outbox")
            derived = await conn.fetchval("SELECT count(*) FROM outbox WHERE data_tail IS NOT NULL")
            print(f"{images:,} images: {derived:,} derived payloads", flush=True)
            for n in range(runs):
                rows, seconds = await drain(conn, CLAIM_BATCH)
                stored_rows, stored_seconds = await drain(conn, CLAIM_AS_STORED)
                assert rows == stored_rows
                print(
                    f"run {n + 1}: {rows:,} events; outbox_events {rows / seconds:,.0f} rows/s, "
                    f"as stored {rows / stored_seconds:,.0f} rows/s, "
                    f"{(seconds - stored_seconds) / rows * 1e6:.1f} µs more a row",
                    flush=True,
                )
    finally:
        await pool.close()


async def create_database(admin_dsn: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute('CREATE DATABASE "outbox_read_bench"')
    finally:
        await conn.close()
    return dsn_with_database(admin_dsn, "outbox_read_bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="mirror-outbox-read-"))
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        dsn = asyncio.run(create_database(server.start()))
        asyncio.run(run(dsn, args.images, args.runs))
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
