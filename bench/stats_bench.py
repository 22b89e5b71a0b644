"""Stats benchmark: read latencies at 1,000,000 images and what the aggregates cost the ingest.

* **ingest cost**: the same generated registry (``--images``, default 1,000,000)
  is merged through the real page path (``mirror.ingest.merge.PageWriter``: COPY
  + set-based SQL + events, one transaction per page of 1,000, folder walks) into
  a database with every migration and routine, then into one without the stats
  (no ``sql/04*``, ``sql/08*``, ``sql/091`` or ``sql/routines/``: no change log, no stats
  tables or indexes); images/s of each. The database with stats is folded
  (``mirror.stats.folder.fold_once``) every ``FOLD_EVERY`` pages, as the folder
  does beside the ingest: that time is reported apart (the folder's images/s).
* **reads** on the full database: ``--calls`` calls each (after a warm-up) of the
  query functions the API serves: whole-index stats, per-folder, per-registry and
  per-repository stats (random repositories, the largest included), one image's
  usage (unique/shared bytes + base and derived images), top layers, and through
  HTTP (aiohttp server with the stats routes, keep-alive client) when the API
  package is present. Medians and p99 in ms.
* deletes: 1 % of the images are deleted (``delete_images``) before the reads, so
  reclaimable blobs exist.

The registry is generated here (no HTTP): folders -> registries -> repositories
with a heavy-tailed number of images, popular base stacks shared across
registries (Zipf), dependency layers per repository that change every few
versions, one or two layers unique to each image, a config per image, and blob
ids per registry (the same digest has another id in each registry).

    python -m bench.stats_bench                          # 1M images, embedded PostgreSQL
    python -m bench.stats_bench --images 50000 --calls 200 --no-record   # a quick look
    python -m bench.stats_bench --database-url postgresql://...  # an admin DSN (creates/drops DBs)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.results import append_block
from mirror.ingest.merge import PageWriter, delete_images
from mirror.ingest.staging import PageImage, page_images
from mirror.model import Scope, ScopeKind
from mirror.stats.folder import fold_once
from mirror.stats.queries import fetch_image_usage, fetch_layer_report, fetch_stats
from mirror.store.migrate import apply_migrations, find_migrations
from mirror.store.pool import create_pool

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Stats"
PAGE = 1000
FOLDERS = 10
REGISTRIES_PER_FOLDER = 5
IMAGES_PER_REPOSITORY = 50  # on average; heavy-tailed
STACKS = 30
MIB = 1 << 20


# -- the generated registry ------------------------------------------------------------


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _size(rng: random.Random, median: float, sigma: float = 1.2) -> int:
    return max(512, int(rng.lognormvariate(math.log(median), sigma)))


class Universe:
    """A deterministic registry of ``images`` images (see the module docstring)."""

    def __init__(self, images: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.images = images
        self.registries = [
            (f"crp{f:03d}{r:014d}", f"b1g{f:017d}")
            for f in range(FOLDERS)
            for r in range(REGISTRIES_PER_FOLDER)
        ]
        self.stacks = [
            [(_digest(f"stack-{s}-{j}"), _size(rng, 30 * MIB)) for j in range(rng.randint(2, 5))]
            for s in range(STACKS)
        ]
        stack_weights = [1 / (s + 1) for s in range(STACKS)]
        repositories = max(1, images // IMAGES_PER_REPOSITORY)
        weights = [1 / (p + 1) ** 0.8 for p in range(repositories)]
        rng.shuffle(weights)
        total = sum(weights)
        counts = [max(1, int(images * w / total)) for w in weights]
        counts[0] += images - sum(counts)
        while counts[0] < 1:  # rounding gave too many: take from the biggest
            big = max(range(len(counts)), key=counts.__getitem__)
            counts[big] -= 1
            counts[0] += 1
        self.repos: list[tuple[str, str, int, int, int]] = []  # name, registry, stack, deps, count
        for p, count in enumerate(counts):
            registry = self.registries[p % len(self.registries)]
            stack = rng.choices(range(STACKS), stack_weights)[0]
            base_repo = rng.random() < 0.04  # mirrors its stack: images are prefixes of it
            name = f"{registry[0]}/{'base' if base_repo else 'team'}{p % 97}/svc{p}"
            self.repos.append(
                (name, registry[0], stack, -1 if base_repo else rng.randint(1, 3), count)
            )
        # a registry's repositories are contiguous (as the upstream's id order has them)
        self.repos.sort(key=lambda repo: repo[1])

    def folder_of(self, registry_id: str) -> str:
        return dict(self.registries)[registry_id]

    def iter_images(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(folder id, upstream JSON of the image), in id order, repositories contiguous."""
        folders = dict(self.registries)
        n = 0
        for p, (name, registry, stack, deps, count) in enumerate(self.repos):
            rng = random.Random(p)
            base = self.stacks[stack]
            for k in range(count):
                n += 1
                if deps < 0:
                    layers = base[: 1 + k % len(base)]
                else:
                    layers = list(base)
                    layers += [
                        (_digest(f"dep-{p}-{j}-{k // 5}"), _size(rng, 8 * MIB)) for j in range(deps)
                    ]
                    layers += [
                        (_digest(f"own-{p}-{k}-{j}"), _size(rng, 2 * MIB))
                        for j in range(1 + (k % 2))
                    ]
                config = (_digest(f"cfg-{p}-{k}"), 1000 + rng.randrange(9000))
                yield folders[registry], _image_json(n, name, registry, config, layers, k, count)


def _blob(registry: str, digest: str, size: int) -> dict[str, str]:
    return {"id": "crb" + digest[7:24] + registry[-3:], "digest": digest, "size": str(size)}


def _image_json(
    n: int,
    name: str,
    registry: str,
    config: tuple[str, int],
    layers: list[tuple[str, int]],
    k: int,
    count: int,
) -> dict[str, Any]:
    return {
        "id": f"crp{n:017d}",
        "name": name,
        "digest": _digest(f"image-{n}"),
        "compressedSize": str(sum(size for _, size in layers)),
        "config": _blob(registry, *config),
        "layers": [_blob(registry, d, s) for d, s in layers],
        **({"tags": ["latest"] if k == count - 1 else [f"v{k}"]}),
        "createdAt": f"2024-{1 + k % 12:02d}-{1 + k % 28:02d}T10:00:00.{n % 1000:03d}Z",
    }


# -- databases ------------------------------------------------------------------------------


def dsn_with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


async def create_database(admin_dsn: str, *, with_stats: bool) -> str:
    name = f"bench_stats_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_with_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        if with_stats:
            await apply_migrations(conn)
        else:
            for migration in find_migrations():
                if "_stats" in migration.name:  # the stats ones (sql/040_stats ... 115)
                    continue
                async with conn.transaction():
                    await conn.execute(migration.path.read_text())
    finally:
        await conn.close()
    return dsn


async def drop_database(admin_dsn: str, dsn: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(dsn).path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()


FOLD_EVERY = 5


async def ingest_both(dsns: list[str], universe: Universe) -> list[float]:
    """Merge every page through the page path (folder walks) into each database in
    turn, page by page, so both see the same load on a shared machine; returns the
    images/s of each (merge time only: generating the pages is not counted), then
    the stats folder's images/s on the first database."""
    from mirror.store.pool import init_connection

    conns = [await asyncpg.connect(dsn) for dsn in dsns]
    spent = [0.0 for _ in dsns]
    folding = 0.0
    pages = 0
    writers: list[dict[str, PageWriter]] = [{} for _ in dsns]
    done = 0
    try:
        for conn in conns:
            await init_connection(conn)
        # where the stats triggers spend their time (the first database has them)
        await conns[0].execute("SET track_functions = 'pl'")
        for folder, page in _pages(universe):
            items = page_images(page)
            for i, conn in enumerate(conns):
                t = time.perf_counter()
                await _apply(conn, writers[i], folder, items)
                spent[i] += time.perf_counter() - t
            done += len(page)
            pages += 1
            if pages % FOLD_EVERY == 0:
                t = time.perf_counter()
                await fold_once(conns[0], wait=True)
                folding += time.perf_counter() - t
            if done % 100_000 < len(page):
                rates = ", ".join(f"{done / x:,.0f}/s" for x in spent)
                print(f"  {done:,} images: {rates}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        await fold_once(conns[0], wait=True)
        folding += time.perf_counter() - t
        await asyncio.sleep(0.6)  # function statistics reach the collector on idle
        for r in await conns[0].fetch(TRIGGER_TIMES):
            print(
                f"  {r['funcname']}: {r['total'] / 1000:.1f} s in {r['calls']:,} calls "
                f"({100 * r['total'] / 1000 / spent[0]:.0f} % of the merge time)",
                file=sys.stderr,
            )
    finally:
        for conn in conns:
            await conn.close()
    return [done / x for x in spent] + [done / folding]


TRIGGER_TIMES = """
SELECT funcname, calls, total_time AS total FROM pg_stat_user_functions
WHERE funcname LIKE 'stats\\_%' ORDER BY total_time DESC
"""


async def _apply(
    conn: asyncpg.Connection, writers: dict[str, PageWriter], folder: str, items: list[PageImage]
) -> None:
    writer = writers.get(folder)
    if writer is None:
        writer = writers[folder] = PageWriter(conn, folder_id=folder)
        await writer.prepare()
    result = await writer.apply(items)
    assert result.created == len(items), (result.created, len(items))


def _pages(universe: Universe) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Pages of at most 1,000 images of one folder, in id order."""
    page: list[dict[str, Any]] = []
    current = ""
    for folder, image in universe.iter_images():
        if page and (folder != current or len(page) == PAGE):
            yield current, page
            page = []
        current = folder
        page.append(image)
    if page:
        yield current, page


# -- reads -----------------------------------------------------------------------------------


def summarize(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return statistics.median(ordered) * 1000, p99 * 1000


async def timed(calls: int, make: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    for i in range(min(20, calls)):  # warm-up: plans cached, pages in memory
        await make(i)
    samples = []
    for i in range(calls):
        t = time.perf_counter()
        await make(i)
        samples.append(time.perf_counter() - t)
    return summarize(samples)


SAMPLE_IDS = "SELECT id FROM images TABLESAMPLE SYSTEM (1) LIMIT $1"
FIRST_IDS = "SELECT id FROM images ORDER BY id LIMIT $1"


async def read_benchmarks(
    dsn: str, universe: Universe, calls: int
) -> dict[str, tuple[float, float]]:
    pool = await create_pool(dsn, min_size=2, max_size=4)
    rng = random.Random(11)
    out: dict[str, tuple[float, float]] = {}
    try:
        largest = max(universe.repos, key=lambda r: r[4])
        repos = [Scope(ScopeKind.REPOSITORY, largest[0])] + [
            Scope(ScopeKind.REPOSITORY, rng.choice(universe.repos)[0]) for _ in range(calls)
        ]
        registries = [Scope(ScopeKind.REGISTRY, r) for r, _ in universe.registries]
        folders = [Scope(ScopeKind.FOLDER, f) for _, f in universe.registries]
        image_ids = [r["id"] for r in await pool.fetch(SAMPLE_IDS, max(calls, 50))]
        # a small index (the test suite's smoke run) may sample no page at 1 %
        image_ids = image_ids or [r["id"] for r in await pool.fetch(FIRST_IDS, max(calls, 50))]
        # a popular base image too: every image of its stack derives from it
        base_image = await pool.fetchval(
            "SELECT image_id FROM stats_images WHERE layer_count = 1 ORDER BY image_id LIMIT 1"
        )
        usage_ids = [base_image, *image_ids] if base_image else image_ids

        out["stats: whole index"] = await timed(calls, lambda i: fetch_stats(pool, None))
        out["stats: one folder"] = await timed(
            calls, lambda i: fetch_stats(pool, folders[i % len(folders)])
        )
        out["stats: one registry"] = await timed(
            calls, lambda i: fetch_stats(pool, registries[i % len(registries)])
        )
        out["stats: one repository"] = await timed(
            calls, lambda i: fetch_stats(pool, repos[i % len(repos)])
        )
        out["image usage (+ lineage)"] = await timed(
            calls, lambda i: fetch_image_usage(pool, usage_ids[i % len(usage_ids)])
        )
        out["top 10 layers + reclaimable"] = await timed(
            calls, lambda i: fetch_layer_report(pool, limit=10)
        )
        out.update(await http_benchmarks(pool, calls, repos, usage_ids))
    finally:
        await pool.close()
    return out


async def http_benchmarks(
    pool: asyncpg.Pool, calls: int, repos: list[Scope], image_ids: list[str]
) -> dict[str, tuple[float, float]]:
    try:
        from aiohttp import ClientSession
        from aiohttp.test_utils import TestServer

        from mirror.api.app import create_app
        from mirror.settings import Settings
    except ImportError:
        return {}
    # the real app (metrics and error middlewares), on the benchmark's pool
    app = create_app(Settings.load(env={}), pool=pool)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    out: dict[str, tuple[float, float]] = {}
    try:
        base = str(server.make_url("")).rstrip("/")
        async with ClientSession() as session:

            async def get(path: str) -> None:
                async with session.get(base + path) as response:
                    assert response.status == 200, await response.text()
                    await response.read()

            out["HTTP GET /mirror/v1/stats"] = await timed(calls, lambda i: get("/mirror/v1/stats"))
            out["HTTP GET /mirror/v1/stats?repositoryName="] = await timed(
                calls, lambda i: get(f"/mirror/v1/stats?repositoryName={repos[i % len(repos)].id}")
            )
            out["HTTP GET /mirror/v1/images/{id}/usage"] = await timed(
                calls, lambda i: get(f"/mirror/v1/images/{image_ids[i % len(image_ids)]}/usage")
            )
            out["HTTP GET /mirror/v1/stats/layers"] = await timed(
                calls, lambda i: get("/mirror/v1/stats/layers")
            )
    finally:
        await server.close()
    return out


async def delete_some(dsn: str, fraction: float) -> int:
    conn = await asyncpg.connect(dsn)
    from mirror.store.pool import init_connection

    await init_connection(conn)
    try:
        ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM images TABLESAMPLE BERNOULLI ($1) ORDER BY id", fraction * 100
            )
        ]
        for start in range(0, len(ids), PAGE):
            async with conn.transaction():
                await delete_images(conn, ids[start : start + PAGE], "upstream-gone")
        await fold_once(conn, wait=True)  # the reads below see every deletion
        await conn.execute("VACUUM ANALYZE")
        return len(ids)
    finally:
        await conn.close()


# -- recording ---------------------------------------------------------------------------------


def record(command: str, images: int, rows: list[tuple[str, str]]) -> None:
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"### {date}: {images:,} images", "", f"`{command}`", "", "| what | result |"]
    block += ["| --- | --- |", *(f"| {what} | {value} |" for what, value in rows)]
    intro = f"{SECTION}\n\nWritten by `bench/stats_bench.py` (2 cores). Reads: median / p99 over many calls.\n"
    # older runs are kept: this one goes at the end of the section
    append_block(SECTION, intro, block, RESULTS)


async def main(args: argparse.Namespace) -> None:
    universe = Universe(args.images)
    print(
        f"registry: {args.images:,} images, {len(universe.repos):,} repositories, "
        f"{len(universe.registries)} registries in {FOLDERS} folders",
        file=sys.stderr,
    )
    rows: list[tuple[str, str]] = []
    load_at_start = os.getloadavg()[0]
    if args.reads_only:
        # a database an earlier run kept (--keep): the same registry, reads only
        print("reads…", file=sys.stderr)
        for what, (median, p99) in (
            await read_benchmarks(args.reads_only, universe, args.calls)
        ).items():
            rows.append((what, f"{median:.2f} ms / {p99:.2f} ms"))
        _finish(args, rows, load_at_start)
        return
    async with admin_dsn(args.database_url) as admin:
        with_stats = await create_database(admin, with_stats=True)
        try:
            dsns = [with_stats]
            if not args.skip_without:
                dsns.append(await create_database(admin, with_stats=False))
            print("ingest, page by page into each database…", file=sys.stderr)
            try:
                rates = await ingest_both(dsns, universe)
            finally:
                if len(dsns) > 1:
                    await drop_database(admin, dsns[1])
            rows.append(
                (
                    "ingest (page merge, 1,000/page) with the stats change log",
                    f"{rates[0]:,.0f} images/s",
                )
            )
            rows.append(
                (
                    f"stats folder (a pass every {FOLD_EVERY} pages, apart from the merge)",
                    f"{rates[-1]:,.0f} images/s",
                )
            )
            if len(rates) > 2:
                rows.append(
                    (
                        "ingest without stats (no 04x/08x/091/109/110 migrations)",
                        f"{rates[1]:,.0f} images/s",
                    )
                )
                rows.append(
                    (
                        "cost of the stats change log on ingest",
                        f"{(1 - rates[0] / rates[1]) * 100:.0f} % fewer images/s",
                    )
                )
            deleted = await delete_some(with_stats, 0.01)
            rows.append(("images deleted before the reads (reclaimable blobs)", f"{deleted:,}"))
            conn = await asyncpg.connect(with_stats)
            try:
                size = await conn.fetchval(
                    "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_class c "
                    "WHERE c.relname LIKE 'stats\\_%' AND c.relkind = 'r'"
                )
                total = await conn.fetchval(
                    "SELECT pg_size_pretty(pg_database_size(current_database()))"
                )
            finally:
                await conn.close()
            rows.append(("stats tables on disk / whole database", f"{size} / {total}"))
            print("reads…", file=sys.stderr)
            for what, (median, p99) in (
                await read_benchmarks(with_stats, universe, args.calls)
            ).items():
                rows.append((what, f"{median:.2f} ms / {p99:.2f} ms"))
        finally:
            if not args.keep:
                await drop_database(admin, with_stats)
            else:
                print(f"kept: {with_stats}", file=sys.stderr)
    _finish(args, rows, load_at_start)


def _finish(args: argparse.Namespace, rows: list[tuple[str, str]], load_at_start: float) -> None:
    rows.append(
        (
            "load average (1 min) at start / end, on os.cpu_count() = " + str(os.cpu_count()),
            f"{load_at_start:.1f} / {os.getloadavg()[0]:.1f}",
        )
    )
    for what, value in rows:
        print(f"{what:60s} {value}")
    if args.record:
        record(args.command, args.images, rows)


class admin_dsn:
    """The admin DSN given, or an embedded PostgreSQL in a temporary folder for the run."""

    def __init__(self, given: str | None) -> None:
        self.given = given
        self.server: Any = None

    async def __aenter__(self) -> str:
        if self.given:
            return self.given
        from mirror.store.embedded import EmbeddedPostgres

        self.server = EmbeddedPostgres(
            Path(tempfile.mkdtemp(prefix="mirror-bench-stats-")), delete_on_stop=True
        )
        return await self.server.astart()

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            await self.server.astop()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stats_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=1000, help="calls per read measure")
    parser.add_argument("--database-url", help="admin DSN (default: an embedded PostgreSQL)")
    parser.add_argument(
        "--skip-without", action="store_true", help="skip the ingest without triggers"
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--reads-only",
        metavar="DSN",
        help="only the reads, on a database a run with --keep left (same --images)",
    )
    parser.add_argument(
        "--no-record", dest="record", action="store_false", help="do not write bench/RESULTS.md"
    )
    args = parser.parse_args(argv)
    # the command as run, DSNs (which may carry credentials) left out
    shown = ["<admin DSN>" if "://" in a else shlex.quote(a) for a in argv]
    args.command = " ".join(["python -m bench.stats_bench", *shown])
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
