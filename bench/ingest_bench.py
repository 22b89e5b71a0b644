"""Ingest benchmark: first mirror and unchanged re-sync from the simulator.

For each size, each run: a fresh database, the simulator (``mirror simulate``) in
its own process, then ``mirror ingest --once --json`` twice in a child process
(first mirror, then the unchanged re-sync). Figures per pass: images/s from the
pass's own clock (the JSON summary's ``seconds``; process start-up and
migrations excluded) and the child's peak RSS. The footprint is measured after
the first mirror's events are recorded sent as the relay does (``mark_relayed``). Medians over the runs go to
``bench/RESULTS.md`` with the exact command line.

    python -m bench.ingest_bench                       # 100,000 x3 and 1,000,000 x1
    python -m bench.ingest_bench --sizes 100000 --runs 5 --no-record

The database is an embedded PostgreSQL in a temporary folder unless
``--database-url`` names a server (an admin DSN: a database is created per run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.results import append_to_section
from tests.postgres_fixture import dsn_with_database, new_database_name

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## Ingest"
TARGET_FIRST = 20_000
TARGET_RESYNC = 100_000


@dataclass(frozen=True)
class Pass:
    images: int
    seconds: float
    peak_rss_mb: float
    created: int
    errors: int
    wall: float = 0.0  # the child's whole life: start-up, the pass, folding the stats to the end
    cpu_seconds: float = 0.0  # the child's user + system CPU time (wait4)

    @property
    def settled_rate(self) -> float:
        return self.images / self.wall if self.wall else 0.0

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def simulator(images: int, seed: int, latency_ms: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """A simulator process (``latency_ms`` added to each answer, on average); yields its
    URL and its folder ids."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirror", "simulate", "--port", str(port),
         "--images", str(images), "--seed", str(seed), "--latency-ms", str(latency_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        state: dict[str, Any] | None = None
        for _ in range(600):
            try:
                with urllib.request.urlopen(url + "/_simulator/state", timeout=5) as resp:
                    state = orjson.loads(resp.read())
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("the simulator exited at start") from None
                time.sleep(0.1)
        if state is None:
            raise RuntimeError("the simulator did not answer")
        assert int(state["images"]) == images, state["images"]
        yield url, [f["id"] for f in state["folders"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def replay(source: str, folder: str) -> Iterator[str]:
    """A replay upstream recorded from the simulator at ``source`` (bench/ingest_replay.py)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest_replay", "--from", source, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(6000):
            try:
                probe = f"{url}/container-registry/v1/images?folderId={folder}"
                with urllib.request.urlopen(probe, timeout=5):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("the replay upstream exited at start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ingest_pass(url: str, dsn: str, scopes: list[str]) -> Pass:
    """One `mirror ingest --once --json` child; its summary and peak RSS (wait4)."""
    cmd = [sys.executable, "-m", "mirror", "ingest", "--once", "--json", "--upstream-url", url,
           "--database-url", dsn, "--log-level", "WARNING"]  # fmt: skip
    for scope in scopes:
        cmd += ["--scope", scope]
    # A local simulator: the cloud's default request budget would be the bound, not the ingest.
    env = child_env(MIRROR_UPSTREAM_RPS="2000", MIRROR_UPSTREAM_CONCURRENCY="8")
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = out.read().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"ingest exited {proc.returncode}")
    summary = orjson.loads(lines[-1])
    return Pass(
        images=summary["images"],
        seconds=summary["seconds"],
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        created=summary["created"],
        errors=summary["errors"],
        wall=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )


# What the index and its stats hold: the folded whole-index image count, the
# change-log rows not folded, fold passes that folded something, outbox events.
INDEX_STATE = """
SELECT (SELECT count(*) FROM images) AS images,
       (SELECT images FROM stats_totals WHERE scope_key = 'all') AS stats_images,
       (SELECT count(*) FROM stats_changes) AS pending,
       (SELECT batches FROM stats_folded) AS batches,
       (SELECT count(*) FROM outbox) AS events
"""


async def index_state(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(INDEX_STATE)
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


# The biggest relations of the index: each table with its indexes and TOAST.
BIGGEST_RELATIONS = """
SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY bytes DESC, name
LIMIT $1
"""
DATABASE_SIZE = "SELECT pg_database_size(current_database())"
TOP_RELATIONS = 5


@dataclass(frozen=True)
class Footprint:
    """The database's size without WAL after the first mirror, and its biggest tables."""

    database_bytes: int
    images: int
    biggest: tuple[tuple[str, int], ...]

    @property
    def kb_per_image(self) -> float:
        return self.database_bytes / 1024 / self.images if self.images else 0.0

    def relations_text(self) -> str:
        return ", ".join(f"{name} {size / 2**20:.0f}" for name, size in self.biggest)


async def mark_relayed(conn: asyncpg.Connection) -> None:
    """Record every event sent, batch by batch, as ``mirror run``'s relay does once
    Kafka has them (no broker here): the index a user has after a first mirror."""
    from mirror.events.pending import mark_sent
    from mirror.events.relay import RelayOptions

    batch = RelayOptions().batch_size
    last = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
    for up_to in range(batch, last + batch, batch):
        await mark_sent(conn, min(up_to, last))


async def footprint(dsn: str, images: int) -> Footprint:
    """Mark the events relayed, vacuum and checkpoint as ``mirror run`` does after a
    first mirror, then measure."""
    from mirror.store.embedded import release_wal

    conn = await asyncpg.connect(dsn)
    try:
        await mark_relayed(conn)
        await release_wal(conn)
        size = await conn.fetchval(DATABASE_SIZE)
        rows = await conn.fetch(BIGGEST_RELATIONS, TOP_RELATIONS)
    finally:
        await conn.close()
    return Footprint(int(size), images, tuple((r["name"], int(r["bytes"])) for r in rows))


async def create_database(admin_dsn: str) -> str:
    name = new_database_name("bench")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn_with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, dsn: str) -> None:
    name = dsn.rsplit("/", 1)[-1].split("?")[0]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.contextmanager
def bench_server(database_url: str | None) -> Iterator[str]:
    if database_url:
        yield database_url
        return
    from mirror.store.embedded import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix="mirror-bench-pg-"))
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def run_size(
    admin_dsn: str, images: int, runs: int, *, use_replay: bool = False, latency_ms: float = 0.0
) -> tuple[list[Pass], list[Pass], list[Footprint]]:
    firsts: list[Pass] = []
    resyncs: list[Pass] = []
    sizes: list[Footprint] = []
    for run in range(runs):
        dsn = asyncio.run(create_database(admin_dsn))
        try:
            with contextlib.ExitStack() as stack:
                url, folders = stack.enter_context(
                    simulator(images, seed=run + 1, latency_ms=latency_ms)
                )
                if use_replay:
                    url = stack.enter_context(replay(url, folders[0]))
                scopes = [f"folder:{f}" for f in folders]
                first = ingest_pass(url, dsn, scopes)
                assert first.images == images == first.created, (first, images)
                # `--once` folds the stats to the end before it exits: exact now
                state = asyncio.run(index_state(dsn))
                assert state["pending"] == 0 and state["stats_images"] == images, state
                size = asyncio.run(footprint(dsn, images))
                resync = ingest_pass(url, dsn, scopes)
                assert resync.created == 0 and resync.errors == 0
                # an unchanged re-sync writes no change, no event, no fold
                assert asyncio.run(index_state(dsn)) == state
        finally:
            asyncio.run(drop_database(admin_dsn, dsn))
        firsts.append(first)
        resyncs.append(resync)
        sizes.append(size)
        print(
            f"{images:>9,} run {run + 1}/{runs}: first {first.rate:>9,.0f}/s "
            f"({first.seconds:.1f}s, {first.peak_rss_mb:.0f} MB; settled {first.settled_rate:,.0f}/s, "
            f"{first.wall:.1f}s wall)  re-sync {resync.rate:>9,.0f}/s "
            f"({resync.seconds:.1f}s, {resync.peak_rss_mb:.0f} MB)\n"
            f"{'':>9} database {size.database_bytes / 2**20:,.1f} MB without WAL, "
            f"{size.kb_per_image:.2f} KB per image; biggest (MB): {size.relations_text()}",
            flush=True,
        )
    return firsts, resyncs, sizes


def median(passes: list[Pass], attr: str) -> float:
    return statistics.median(getattr(p, attr) for p in passes)


OLD_HEADER = (
    "| date | command | images | runs | first mirror images/s | first peak RSS MB "
    "| re-sync images/s | re-sync peak RSS MB | load avg (1 min) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
HEADER = (
    "| date | command | images | runs | first mirror images/s | first peak RSS MB "
    "| re-sync images/s | re-sync peak RSS MB | load avg (1 min) "
    "| database after the first mirror, MB without WAL (KB per image) | biggest relations MB |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def record(rows: list[str], command: str) -> None:
    # rows from before the footprint columns keep empty cells under the new header
    if RESULTS.exists() and OLD_HEADER in (text := RESULTS.read_text()):
        RESULTS.write_text(text.replace(OLD_HEADER, HEADER, 1))
    intro = (
        f"{SECTION}\n\n`bench/ingest_bench.py`: simulator in its own process, "
        "`mirror ingest --once --json` in a child process, fresh database per run; "
        f"medians. Targets: first mirror >= {TARGET_FIRST:,} images/s, unchanged re-sync "
        f">= {TARGET_RESYNC:,} images/s, memory flat.\n\n" + HEADER
    )
    # under the results table (other tables in the section are left alone)
    append_to_section(SECTION, intro, rows, RESULTS, under=HEADER.split("\n")[0])
    print(f"recorded in {RESULTS} ({command})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated image counts")
    parser.add_argument("--runs", default="3,1", help="runs per size (one value, or one per size)")
    parser.add_argument("--database-url", default=os.environ.get("MIRROR_BENCH_DATABASE_URL"))
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="serve the simulator's pages from memory (bench/ingest_replay.py): the ingest's own bound",
    )
    parser.add_argument(
        "--upstream-latency-ms",
        type=float,
        default=0.0,
        help="mean latency the simulator adds to each answer, as a cloud's round trip would",
    )
    args = parser.parse_args(argv)
    if args.replay and args.upstream_latency_ms:
        parser.error("--replay serves pages from memory: it has no latency to add")
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [int(r) for r in args.runs.split(",")]
    runs = runs * len(sizes) if len(runs) == 1 else runs
    command = "python -m bench.ingest_bench " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    rows = []
    with bench_server(args.database_url) as admin_dsn:
        for size, n in zip(sizes, runs, strict=True):
            firsts, resyncs, footprints = run_size(
                admin_dsn, size, n, use_replay=args.replay, latency_ms=args.upstream_latency_ms
            )
            load = os.getloadavg()[0]
            middle = sorted(footprints, key=lambda f: f.database_bytes)[len(footprints) // 2]
            rows.append(
                f"| {datetime.now(UTC):%Y-%m-%d} | `{command.strip()}` "
                f"| {size:,}{' (replay)' if args.replay else ''}"
                f"{f' ({args.upstream_latency_ms:g} ms upstream)' if args.upstream_latency_ms else ''} | {n} "
                f"| {median(firsts, 'rate'):,.0f} | {median(firsts, 'peak_rss_mb'):.0f} "
                f"| {median(resyncs, 'rate'):,.0f} | {median(resyncs, 'peak_rss_mb'):.0f} | {load:.1f} "
                f"| {middle.database_bytes / 2**20:,.0f} ({middle.kb_per_image:.2f}) "
                f"| {middle.relations_text()} |"
            )
            print(rows[-1], flush=True)
    if not args.no_record:
        record(rows, command)


if __name__ == "__main__":
    main()
