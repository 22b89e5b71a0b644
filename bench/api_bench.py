"""Local API benchmark: Get and List latency and throughput over 1,000,000 indexed images,
and the same List walk against the simulator with a cloud-like latency, side by side.

Setup: a database filled with the simulator's generated registry by COPY
(``bench/api_dataset.py``; no HTTP, no ingest), then ``mirror serve`` in its own
process. This process drives it with an aiohttp client:

- Get: random image ids, one at a time (latency) and ``--concurrency`` at a time
  (throughput);
- List, page of 100: first pages of several orders and scopes, and full walks by
  page token (every depth of the listing), one at a time; then random deep pages
  (tokens saved from the walks) ``--concurrency`` at a time;
- the first ``--sim-pages`` pages of the same listing against ``mirror simulate``
  (same images, seed and order) with ``--sim-latency-ms`` of added latency.

Latencies are measured by the client (request sent to body read). Figures are
medians over ``--runs`` runs; they go to ``bench/RESULTS.md`` with the command.

    python -m bench.api_bench                          # 1,000,000 images, 3 runs
    python -m bench.api_bench --images 100000 --runs 1 --no-record
    python -m bench.api_bench --database-url postgresql://postgres@/postgres?host=/tmp/pg --keep

Without ``--database-url`` an embedded PostgreSQL runs in a temporary folder.
With it (an admin DSN), the database ``api_bench_<images>_<seed>`` is created,
or reused when ``--keep`` left it filled by an earlier run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.api_dataset import load_registry
from bench.results import append_to_section
from mirror.store.migrate import apply_migrations
from tests.postgres_fixture import dsn_with_database

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## API"
IMAGES = "/container-registry/v1/images"
TARGET_GET_P99_MS = 5.0
TARGET_LIST_P99_MS = 10.0

BIGGEST_REGISTRY = (
    "SELECT split_part(name, '/', 1) AS registry_id, count(*) AS n FROM images"
    " GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
)
BIGGEST_FOLDER = "SELECT folder_id, count(*) AS n FROM images GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
SAMPLE_IDS = "SELECT id FROM images TABLESAMPLE SYSTEM (2) LIMIT $1"
# a small index (the test suite's smoke run) may sample no page at 2 %
FIRST_IDS = "SELECT id FROM images ORDER BY id LIMIT $1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env["MIRROR_GRPC_PORT"] = "off"  # bench/grpc_bench.py measures the gRPC listener
    env.update(extra)
    return env


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Latencies:
    """Milliseconds of the requests of one measure."""

    samples: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.samples, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @property
    def max(self) -> float:
        return max(self.samples)


# -- processes ------------------------------------------------------------------------


@contextlib.contextmanager
def postgres(admin_dsn: str | None) -> Iterator[str]:
    if admin_dsn:
        yield admin_dsn
        return
    from mirror.store.embedded import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix="mirror-api-bench-pg-"))
    server = EmbeddedPostgres(data_dir, delete_on_stop=True)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def child(
    args: list[str], ready_url: str, *, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, once it answers 200 at ``ready_url``; terminated on exit."""
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "mirror", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env or child_env(),
    )
    try:
        for _ in range(3000):
            try:
                with urllib.request.urlopen(ready_url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"mirror {args[0]} exited at start") from None
                time.sleep(0.1)
        else:
            raise RuntimeError(f"mirror {args[0]} did not become ready")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def prepare_database(admin_dsn: str, images: int, seed: int, keep: bool) -> str:
    name = f"api_bench_{images}_{seed}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not keep:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = False
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = dsn_with_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
        held = await conn.fetchval("SELECT count(*) FROM images")
        if held != images:
            if held:
                await conn.execute("TRUNCATE images, blobs, registries CASCADE")
            print(f"api bench: loading {images:,} images (COPY)", flush=True)
            seconds = await load_registry(conn, images=images, seed=seed)
            print(f"api bench: loaded in {seconds:.0f} s", flush=True)
        await conn.execute("VACUUM ANALYZE images")
    finally:
        await conn.close()
    return dsn


async def drop_database(admin_dsn: str, images: int, seed: int) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "api_bench_{images}_{seed}" WITH (FORCE)')
    finally:
        await admin.close()


# -- the server's own view (its request-latency histogram) --------------------------------

GET_ROUTE = IMAGES + "/{imageId}"
Buckets = dict[float, float]  # upper bound (s) -> cumulative count


async def server_histogram(session: aiohttp.ClientSession, base: str, route: str) -> Buckets:
    """The API's cumulative latency buckets for one route (GET, 200) from ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    async with session.get(base + "/metrics") as response:
        text = await response.text()
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != "mirror_api_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_bucket")
                and labels.get("route") == route
                and labels.get("method") == "GET"
                and labels.get("status") == "200"
            ):
                buckets[float(labels["le"])] = sample.value
    return buckets


@dataclass
class ServerView:
    """Server-side figures of one phase: the share within the budget, and bucketed p50/p99."""

    count: float
    within_budget: float
    p50_le: float
    p99_le: float


def server_view(before: Buckets, after: Buckets, budget_s: float) -> ServerView:
    bounds = sorted(after)
    delta = {b: after[b] - before.get(b, 0.0) for b in bounds}
    total = delta[bounds[-1]] if bounds else 0.0

    def quantile(q: float) -> float:
        for bound in bounds:
            if total and delta[bound] >= q * total:
                return bound * 1000
        return float("inf")

    within = delta.get(budget_s, 0.0) / total if total else 0.0
    return ServerView(total, within, quantile(0.5), quantile(0.99))


# -- the database's own view (EXPLAIN ANALYZE of the page query at several depths) ----------

DEPTHS = (0.0, 0.25, 0.5, 0.75, 0.99)


async def database_page_ms(
    dsn: str, params: dict[str, str], page_ends: list[dict[str, Any]]
) -> list[float]:
    """Planning + execution ms (median of 5) of the page query after the given depths of a walk."""
    from mirror.api.list_query import (
        COLUMNS,
        RegistryNumbers,
        list_params,
        list_sql,
        registries_named,
        shape_of,
    )
    from mirror.listing import SortField, created_at_ns, parse_list_request

    request = parse_list_request({**params, "pageSize": "100"})
    sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + list_sql(shape_of(request, after_cursor=True))
    out: list[float] = []
    conn = await asyncpg.connect(dsn)
    try:
        for depth in DEPTHS:
            image = page_ends[min(len(page_ends) - 1, int(depth * len(page_ends)))]
            cursor: list[str | int | None] = []
            for key in request.order:
                if key.field is SortField.CREATED_AT:
                    cursor.append(created_at_ns(image["createdAt"]))
                else:
                    cursor.append(image[COLUMNS[key.field]])
            cursor.append(image["id"])
            numbers = await RegistryNumbers().of(conn, registries_named(request))
            args = list_params(request, cursor, 101, numbers)
            await conn.fetchval(sql, *args)  # a new session plans its first query cold
            times = []
            for _ in range(5):  # the median of 5: a busy machine adds scheduling spikes
                plan = orjson.loads(await conn.fetchval(sql, *args))[0]
                times.append(plan["Planning Time"] + plan["Execution Time"])
            out.append(statistics.median(times))
    finally:
        await conn.close()
    return out


# -- the client -------------------------------------------------------------------------


async def timed_get(
    session: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None
) -> tuple[float, bytes]:
    started = time.perf_counter()
    async with session.get(url, params=params) as response:
        body = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{url} {params}: {response.status} {body[:200]!r}")
    return (time.perf_counter() - started) * 1000, body


async def get_latency(
    session: aiohttp.ClientSession, base: str, ids: list[str], n: int
) -> Latencies:
    out = Latencies()
    for image_id in random.Random(1).choices(ids, k=n):
        ms, _ = await timed_get(session, f"{base}{IMAGES}/{image_id}")
        out.samples.append(ms)
    return out


async def first_pages(
    session: aiohttp.ClientSession, base: str, listings: list[dict[str, str]], n: int
) -> Latencies:
    out = Latencies()
    for _ in range(n):
        for params in listings:
            ms, _ = await timed_get(session, base + IMAGES, {**params, "pageSize": "100"})
            out.samples.append(ms)
    return out


async def walk(
    session: aiohttp.ClientSession,
    base: str,
    params: dict[str, str],
    *,
    max_pages: int | None = None,
    tokens: list[tuple[dict[str, str], str]] | None = None,
    keep_images: bool = False,
    page_ends: list[dict[str, Any]] | None = None,
) -> tuple[Latencies, list[bytes]]:
    """Pages of a listing one after another; their latencies (and the images' JSON if kept)."""
    out = Latencies()
    images: list[bytes] = []
    token = ""
    while max_pages is None or len(out.samples) < max_pages:
        query = {**params, "pageSize": "100", **({"pageToken": token} if token else {})}
        ms, body = await timed_get(session, base + IMAGES, query)
        out.samples.append(ms)
        page = orjson.loads(body)
        if keep_images:
            images += [orjson.dumps(image) for image in page.get("images", [])]
        if page_ends is not None and page.get("images"):
            page_ends.append(page["images"][-1])
        token = page.get("nextPageToken", "")
        if not token:
            break
        if tokens is not None:
            tokens.append((params, token))
    return out, images


async def throughput(
    session: aiohttp.ClientSession,
    requests: Sequence[tuple[str, dict[str, str] | None]],
    concurrency: int,
    seconds: float,
) -> tuple[float, Latencies]:
    """Requests/s with ``concurrency`` clients for ``seconds``, and their latencies."""
    out = Latencies()
    deadline = time.perf_counter() + seconds
    rng = random.Random(2)

    async def worker() -> int:
        done = 0
        while time.perf_counter() < deadline:
            url, params = rng.choice(requests)
            ms, _ = await timed_get(session, url, params)
            out.samples.append(ms)
            done += 1
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sum(counts) / (time.perf_counter() - started), out


@contextlib.asynccontextmanager
async def client(concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


# -- one run ------------------------------------------------------------------------------


@dataclass
class RunFigures:
    get: Latencies
    first: Latencies
    deep: Latencies
    deep_last_tenth: Latencies
    get_rps: float
    get_loaded: Latencies
    list_rps: float
    list_loaded: Latencies
    walk_pages: int
    server_get: ServerView
    server_list: ServerView
    database_ms: list[float]


async def measure(
    base: str, dsn: str, args: argparse.Namespace
) -> tuple[RunFigures, dict[str, str], dict[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        registry, registry_n = await conn.fetchrow(BIGGEST_REGISTRY)
        folder, folder_n = await conn.fetchrow(BIGGEST_FOLDER)
        ids = [r["id"] for r in await conn.fetch(SAMPLE_IDS, 20_000)]
        ids = ids or [r["id"] for r in await conn.fetch(FIRST_IDS, 20_000)]
    finally:
        await conn.close()
    print(
        f"api bench: registry {registry} ({registry_n:,}), folder {folder} ({folder_n:,})",
        flush=True,
    )
    listings = [
        {"registryId": registry},
        {"registryId": registry, "orderBy": "created_at desc"},
        {"registryId": registry, "orderBy": "name, digest desc"},
        {"folderId": folder},
        {"folderId": folder, "orderBy": "name desc, created_at"},
    ]
    async with client(args.concurrency) as session:
        await get_latency(session, base, ids, 500)  # warm up caches and connections
        before = await server_histogram(session, base, GET_ROUTE)
        get = await get_latency(session, base, ids, args.gets)
        server_get = server_view(
            before, await server_histogram(session, base, GET_ROUTE), TARGET_GET_P99_MS / 1000
        )
        list_before = await server_histogram(session, base, IMAGES)
        first = await first_pages(session, base, listings, args.first_pages)
        deep = Latencies()
        last_tenth = Latencies()
        tokens: list[tuple[dict[str, str], str]] = []
        pages = 0
        database_ms: list[float] = []
        for params in (listings[0], listings[1], listings[2], listings[4]):
            ends: list[dict[str, Any]] = []
            walked, _ = await walk(session, base, params, tokens=tokens, page_ends=ends)
            database_ms += await database_page_ms(dsn, params, ends)
            deep.samples += walked.samples[1:]
            last_tenth.samples += walked.samples[-max(1, len(walked.samples) // 10) :]
            pages += len(walked.samples)
        server_list = server_view(
            list_before, await server_histogram(session, base, IMAGES), TARGET_LIST_P99_MS / 1000
        )
        get_rps, get_loaded = await throughput(
            session, [(f"{base}{IMAGES}/{i}", None) for i in ids], args.concurrency, args.seconds
        )
        deep_requests = [
            (base + IMAGES, {**params, "pageSize": "100", "pageToken": token})
            for params, token in random.Random(3).sample(tokens, min(5000, len(tokens)))
        ]
        list_rps, list_loaded = await throughput(
            session, deep_requests, args.concurrency, args.seconds
        )
    figures = RunFigures(
        get,
        first,
        deep,
        last_tenth,
        get_rps,
        get_loaded,
        list_rps,
        list_loaded,
        pages,
        server_get,
        server_list,
        database_ms,
    )
    return figures, listings[0], {"registry": registry}


async def side_by_side(
    mirror: str, simulator: str, params: dict[str, str], pages: int
) -> tuple[Latencies, Latencies, bool]:
    async with client(1) as session:
        ours, our_images = await walk(session, mirror, params, max_pages=pages, keep_images=True)
        theirs, their_images = await walk(
            session, simulator, params, max_pages=pages, keep_images=True
        )
    return ours, theirs, our_images == their_images


# -- results ------------------------------------------------------------------------------


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def record(
    command: str,
    runs: list[RunFigures],
    sim: tuple[Latencies, Latencies, bool],
    args: argparse.Namespace,
    load_before: str,
) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    ours, theirs, same = sim
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} UTC | `{command}` | {args.images:,} "
        f"| {med([r.get.p50 for r in runs]):.2f} / {med([r.get.p99 for r in runs]):.2f} "
        f"| {med([r.first.p50 for r in runs]):.2f} / {med([r.first.p99 for r in runs]):.2f} "
        f"| {med([r.deep.p50 for r in runs]):.2f} / {med([r.deep.p99 for r in runs]):.2f} "
        f"| {med([r.deep_last_tenth.p99 for r in runs]):.2f} "
        f"| {med([r.get_rps for r in runs]):,.0f} ({med([r.get_loaded.p99 for r in runs]):.1f}) "
        f"| {med([r.list_rps for r in runs]):,.0f} ({med([r.list_loaded.p99 for r in runs]):.1f}) "
        f"| {med([r.server_get.within_budget for r in runs]):.2%} "
        f"(p50 ≤ {med([r.server_get.p50_le for r in runs]):g}, p99 ≤ {med([r.server_get.p99_le for r in runs]):g}) "
        f"| {med([r.server_list.within_budget for r in runs]):.2%} "
        f"(p50 ≤ {med([r.server_list.p50_le for r in runs]):g}, p99 ≤ {med([r.server_list.p99_le for r in runs]):g}) "
        f"| {med([max(r.database_ms) for r in runs]):.2f} "
        f"| {ours.p50:.2f} vs {theirs.p50:.1f} ({theirs.p50 / ours.p50:,.0f}x) "
        f"| {len(runs)} | {runs[0].walk_pages:,} pages walked a run; concurrency {args.concurrency}; "
        f"simulator latency {args.sim_latency_ms:g} ms; same images as the simulator: {'yes' if same else 'NO'}; "
        f"{os.cpu_count()} cores, load average {load_before} before / {load_average()} after; "
        f"Python {sys.version.split()[0]} |"
    )
    return row


def write_row(row: str) -> None:
    header = (
        f"{SECTION}\n\n"
        "Latencies in ms (p50 / p99), measured by a client in another process; List = page of 100. "
        "`first` = first pages of 5 listings (registry and folder scopes, 4 orders); `deep` = every "
        "later page of full walks by page token (4 listings); `last 10%` = the deepest tenth of those "
        "pages; throughput in requests/s with its p99 in brackets; `server` = the API's own request "
        "histogram (`/metrics`, handler and database time, no client or network) for the sequential "
        "Gets and the walks: share within the budget (Get 5 ms, List 10 ms) and bucket bounds of "
        "p50/p99 in ms; `db page max` = the slowest page query (planning + execution by EXPLAIN "
        "ANALYZE, median of 5) at depths 0, 25, 50, 75 and 99% of the 4 walked listings; `vs simulator` = List "
        "page p50 against `mirror simulate` with a cloud-like added latency on the same listing.\n\n"
        "| date | command | images | Get | List first | List deep | deep last 10% p99 "
        "| Get req/s (p99) | List req/s (p99) | server Get ≤ 5 ms | server List ≤ 10 ms "
        "| db page max | vs simulator (p50) | runs | notes |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    append_to_section(SECTION, header, [row])


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gets", type=int, default=5000, help="sequential Gets a run")
    parser.add_argument(
        "--first-pages", type=int, default=100, help="first pages per listing a run"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput measure")
    parser.add_argument("--sim-latency-ms", type=float, default=100.0)
    parser.add_argument("--sim-pages", type=int, default=30)
    parser.add_argument(
        "--database-url", help="admin DSN of a PostgreSQL server (default: embedded)"
    )
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the filled database")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench.api_bench", *argv])
    load_before = load_average()
    with postgres(args.database_url) as admin_dsn:
        dsn = asyncio.run(prepare_database(admin_dsn, args.images, args.seed, args.keep))
        try:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            serve = ["serve", "--port", str(port), "--database-url", dsn, "--log-level", "WARNING"]
            runs: list[RunFigures] = []
            with child(serve, base + "/readyz"):
                for run in range(args.runs):
                    figures, walk_params, _ = asyncio.run(measure(base, dsn, args))
                    runs.append(figures)
                    print(
                        f"api bench: run {run + 1}: Get p50/p99 {figures.get.p50:.2f}/{figures.get.p99:.2f} ms, "
                        f"List first {figures.first.p50:.2f}/{figures.first.p99:.2f} ms, "
                        f"deep {figures.deep.p50:.2f}/{figures.deep.p99:.2f} ms "
                        f"(last tenth p99 {figures.deep_last_tenth.p99:.2f}), "
                        f"Get {figures.get_rps:,.0f}/s, List {figures.list_rps:,.0f}/s; server: "
                        f"Get {figures.server_get.within_budget:.2%} within 5 ms, "
                        f"List {figures.server_list.within_budget:.2%} within 10 ms; "
                        f"database page query max {max(figures.database_ms):.2f} ms",
                        flush=True,
                    )
                sim_port = free_port()
                simulate = [
                    "simulate", "--port", str(sim_port), "--images", str(args.images),
                    "--seed", str(args.seed), "--latency-ms", str(args.sim_latency_ms),
                ]  # fmt: skip
                sim_base = f"http://127.0.0.1:{sim_port}"
                with child(simulate, sim_base + "/_simulator/state"):
                    sim = asyncio.run(side_by_side(base, sim_base, walk_params, args.sim_pages))
            print(
                f"api bench: {args.sim_pages} pages: mirror p50 {sim[0].p50:.2f} ms, "
                f"simulator p50 {sim[1].p50:.1f} ms; same images: {sim[2]}",
                flush=True,
            )
        finally:
            if not args.keep:
                asyncio.run(drop_database(admin_dsn, args.images, args.seed))
    row = record(command, runs, sim, args, load_before)
    print(row)
    if not args.no_record:
        write_row(row)
    return 0 if sim[2] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
