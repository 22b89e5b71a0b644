"""The stats fold alone: replays a first mirror's change log through ``stats_fold()``.

Takes a database a first mirror left behind (``python -m bench.ingest_profile
--images 50000 --keep DIR``), rebuilds from its images the change log the
ingest wrote (one ``i`` row per image, in id order, after one ``r`` row per
registry), empties the aggregates, and folds the log again in batches of
``--batch`` rows, each its own REPEATABLE READ transaction as the folder runs
it. Prints the fold's wall and backend CPU time per 1,000 images, then checks
that the folded aggregates equal ``stats_recompute`` from the same index
(exactness; a mismatch exits 1).

The routines are applied from the tree ``PYTHONPATH`` names (``--routines``
overrides), so an A/B of the fold is the same command on two trees:

    PYTHONPATH=$PWD python -m bench.fold_replay --data /tmp/profile-pg
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg

AGGREGATES = (
    "stats_images",
    "stats_registry_refs",
    "stats_folder_refs",
    "stats_repository_refs",
    "stats_lone_digests",
    "stats_totals",
    "stats_registry_folders",
)
SETUP = """
CREATE TABLE IF NOT EXISTS fold_bench_log AS
SELECT row_number() OVER (ORDER BY o, id) AS n, kind, image_id, registry_id, name, folder_id,
       delta, compressed, digests, sizes, config
FROM (SELECT 0 AS o, ''::text AS id, 'r'::"char" AS kind, NULL::text AS image_id, registry_id,
             NULL::text AS name, folder_id, 0 AS delta, 0::bigint AS compressed,
             NULL::bytea[] AS digests, NULL::bigint[] AS sizes, false AS config
      FROM registries
      UNION ALL
      SELECT 1, id, 'i', id, split_part(name, '/', 1), name, folder_id, 1, compressed_size,
             blob_digests, blob_sizes, blob_config
      FROM images) x
"""
RESET = "TRUNCATE stats_changes, " + ", ".join(AGGREGATES)
FEED = """
INSERT INTO stats_changes (kind, image_id, registry_id, name, folder_id, delta, compressed,
                           digests, sizes, config)
SELECT kind, image_id, registry_id, name, folder_id, delta, compressed, digests, sizes, config
FROM fold_bench_log WHERE n > $1 AND n <= $2 ORDER BY n
"""
HAS_STATEMENTS = "SELECT to_regclass('pg_stat_statements') IS NOT NULL"
TOP_STATEMENTS = """
SELECT total_exec_time AS ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 100) AS q
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND NOT toplevel
ORDER BY total_exec_time DESC LIMIT 12
"""
BACKEND_CPU = "SELECT pg_backend_pid()"
SNAPSHOT = "CREATE TEMP TABLE fold_bench_{t} AS SELECT * FROM {t}"
DIFF = """
SELECT (SELECT count(*) FROM (SELECT * FROM fold_bench_{t} EXCEPT ALL SELECT * FROM {t}) a)
     + (SELECT count(*) FROM (SELECT * FROM {t} EXCEPT ALL SELECT * FROM fold_bench_{t}) b)
"""


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(dsn: str, routines: str, batch: int, runs: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(routines)
        await conn.execute(SETUP)
        total = await conn.fetchval("SELECT count(*) FROM fold_bench_log")
        images = await conn.fetchval("SELECT count(*) FROM images")
        pid = await conn.fetchval(BACKEND_CPU)
        if await conn.fetchval(HAS_STATEMENTS):
            await conn.execute("SELECT pg_stat_statements_reset()")
        for r in range(runs):
            await conn.execute(RESET)
            await conn.execute("VACUUM ANALYZE " + ", ".join(AGGREGATES))
            wall = cpu = 0.0
            for start in range(0, total, batch):
                await conn.execute(FEED, start, start + batch)
                c0, t0 = backend_cpu(pid), time.perf_counter()
                async with conn.transaction(isolation="repeatable_read"):
                    await conn.fetchval("SELECT stats_fold()")
                wall += time.perf_counter() - t0
                cpu += backend_cpu(pid) - c0
            k = images / 1000
            print(
                f"run {r + 1}: {images:,} images in batches of {batch:,} log rows: "
                f"fold {wall / k * 1000:.1f} ms wall, {cpu / k * 1000:.1f} ms CPU per 1,000 images "
                f"(load {os.getloadavg()[0]:.1f})"
            )
        if await conn.fetchval(HAS_STATEMENTS):
            print("the fold's statements (ms per 1,000 images, all runs):")
            for row in await conn.fetch(TOP_STATEMENTS):
                print(f"  {row['ms'] / (images / 1000) / runs:7.1f} ms  {row['q']}")
        for t in AGGREGATES:
            await conn.execute(f"DROP TABLE IF EXISTS fold_bench_{t}")
            await conn.execute(SNAPSHOT.format(t=t))
        await conn.execute("SELECT stats_recompute(false)")
        bad = 0
        for t in AGGREGATES:
            n = await conn.fetchval(DIFF.format(t=t))
            if n:
                print(f"MISMATCH {t}: {n} row(s) differ from stats_recompute")
                bad += 1
        print("exact: folded aggregates equal stats_recompute" if not bad else "NOT EXACT")
        return 1 if bad else 0
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="ingest_profile's --keep folder")
    parser.add_argument("--database", help="database name (default: the one bench_* database)")
    parser.add_argument("--batch", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--routines", type=Path)
    args = parser.parse_args(argv)

    import mirror
    from mirror.store.embedded import EmbeddedPostgres

    routines = args.routines or Path(mirror.__file__).parent.parent / "sql/routines/stats.sql"
    server = EmbeddedPostgres(args.data)
    admin = server.start()
    try:
        name = args.database or asyncio.run(_bench_database(admin))
        base, _, query = admin.partition("?")
        dsn = base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")
        code = asyncio.run(run(dsn, routines.read_text(), args.batch, args.runs))
    finally:
        server.stop()
    sys.exit(code)


async def _bench_database(admin: str) -> str:
    conn = await asyncpg.connect(admin)
    try:
        name: str = await conn.fetchval(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench%' ORDER BY oid DESC LIMIT 1"
        )
        return name
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
