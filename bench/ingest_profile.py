"""Where a first mirror's time and bytes go: one pass, profiled.

One fresh embedded PostgreSQL with ``pg_stat_statements`` (nested statements
included: triggers and the stats fold), the simulator and one
``mirror ingest --once`` child, as ``bench/ingest_bench.py`` runs them. Prints:

- the pass's images/s (its own clock) and the CPU each process spent per image,
  from ``/proc`` (PostgreSQL: the postmaster with its exited backends and the
  live ones; the ingest child: wait4; the simulator: its own ``/proc`` entry
  before it stops);
- the top statements by total time, per 1,000 images;
- the database's size (``pg_database_size``, no WAL) per image and each table
  with its indexes (``pg_total_relation_size``), and the ``images`` indexes;
- the latency of "which images hold this blob" (the blob endpoint's page query
  of the code on ``PYTHONPATH``) for a rare, a middling and the most common digest.

Runs against whichever tree ``PYTHONPATH`` names (the query and the digest form
are taken from it), so a before/after pair is the same command twice:

    PYTHONPATH=$PWD python -m bench.ingest_profile --images 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.ingest_bench import create_database, ingest_pass, simulator

TOP_STATEMENTS = """
SELECT calls, rows, total_exec_time AS ms, toplevel, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS q
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
LIMIT $1
"""
TABLE_SIZES = """
SELECT c.relname, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm')
ORDER BY 2 DESC
"""
IMAGE_INDEXES = """
SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS bytes
FROM pg_index WHERE indrelid = 'images'::regclass ORDER BY 2 DESC
"""
TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds of a process (and its waited-for children) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + ((cutime + cstime) if children else 0)) / TICKS


def postgres_cpu(postmaster: int) -> float:
    """The postmaster, its exited children (backends it reaped) and its live children."""
    total = proc_cpu(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                total += proc_cpu(int(entry.name))
        except (OSError, ValueError):
            continue
    return total


def simulator_pid(url: str) -> int | None:
    """The simulator child listening at ``url`` (its command line names the port)."""
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"simulate" in cmdline and port.encode() in cmdline and int(entry.name) != os.getpid():
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                return int(entry.name)
    return None


async def blob_lookups(dsn: str) -> list[str]:
    """The blob endpoint's page query (this tree's) for a rare, a middling and the top digest."""
    from mirror.api import blobs as endpoint

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        top = await conn.fetchval("SELECT max(ref_count) FROM blobs")
        picks = {
            "rare (1 image)": 1,
            f"middling (~{max(2, top // 100)} images)": max(2, top // 100),
            f"most common ({top} images)": top,
        }
        lines = []
        for label, refs in picks.items():
            digest = await conn.fetchval(
                "SELECT digest FROM blobs WHERE ref_count >= $1 ORDER BY ref_count, digest LIMIT 1",
                refs,
            )
            timings = []
            for _ in range(15):
                started = time.perf_counter()
                rows = await conn.fetch(endpoint.SELECT_IMAGES, digest, "", 101)
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            lines.append(
                f"  {label}: {len(rows)} rows, median {timings[7]:.2f} ms, max {timings[-1]:.2f} ms"
            )
        return lines
    finally:
        await conn.close()


async def report(dsn: str, images: int, top: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        print("top statements by total time (ms per 1,000 images; calls, rows per 1,000 images):")
        for r in await conn.fetch(TOP_STATEMENTS, top):
            k = images / 1000
            print(
                f"  {r['ms'] / k:8.1f} ms {r['calls'] / k:8.1f} calls {r['rows'] / k:9.1f} rows "
                f"{'top' if r['toplevel'] else 'nested'}  {r['q']}"
            )
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        print(f"database size {size / 2**20:,.1f} MB = {size / images:,.0f} bytes per image")
        for r in await conn.fetch(TABLE_SIZES):
            if r["bytes"] >= 1 << 20:
                print(
                    f"  {r['relname']:<28} {r['bytes'] / 2**20:9.1f} MB {r['bytes'] / images:8.0f} B/image"
                )
        print("images indexes:")
        for r in await conn.fetch(IMAGE_INDEXES):
            print(
                f"  {r['name']:<36} {r['bytes'] / 2**20:9.1f} MB {r['bytes'] / images:8.0f} B/image"
            )
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--top", type=int, default=15, help="statements to show")
    parser.add_argument("--keep", type=Path, help="keep the server's data in this new folder")
    args = parser.parse_args(argv)

    from mirror.store.embedded import EmbeddedPostgres

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="mirror-profile-pg-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedPostgres(data_dir)
    try:
        admin = server.start()
        asyncio.run(
            _execute(admin, "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        )
        asyncio.run(_execute(admin, "ALTER SYSTEM SET pg_stat_statements.track = 'all'"))
        server.stop()
        admin = server.start()
        dsn = asyncio.run(create_database(admin))
        asyncio.run(_execute(dsn, "CREATE EXTENSION pg_stat_statements"))
        postmaster = int((data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        with simulator(args.images, seed=args.seed) as (url, folders):
            sim = simulator_pid(url)
            asyncio.run(_execute(dsn, "SELECT pg_stat_statements_reset()"))
            pg0, sim0 = postgres_cpu(postmaster), proc_cpu(sim) if sim else 0.0
            first = ingest_pass(url, dsn, [f"folder:{f}" for f in folders])
            pg1, sim1 = postgres_cpu(postmaster), proc_cpu(sim) if sim else 0.0
        n = first.images
        print(
            f"first mirror of {n:,} images: {first.rate:,.0f} images/s "
            f"({first.seconds:.1f} s pass, {first.wall:.1f} s child), load average {os.getloadavg()[0]:.1f}"
        )
        print(
            f"CPU per image: PostgreSQL {(pg1 - pg0) / n * 1e6:.0f} µs, ingest {first.cpu_seconds / n * 1e6:.0f} µs, "
            f"simulator {(sim1 - sim0) / n * 1e6:.0f} µs"
        )
        asyncio.run(report(dsn, n, args.top))
        print("which images hold a blob (first page of 100):")
        for line in asyncio.run(blob_lookups(dsn)):
            print(line)
        if args.keep:
            print(f"kept: {dsn} (data in {data_dir})")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
