"""Load benchmark: ``mirror serve`` under 50 concurrent clients with a mixed load, for a fixed time.

Budget (PRODUCT.md): >= 3,000 requests/s on 2 cores with Get p99 <= 25 ms and
List p99 <= 50 ms, on an index of 1,000,000 images.

Setup: the database of ``bench/api_bench.py`` (the simulator's registry loaded
by COPY with the ingest's own record builders, ``bench/api_dataset.py``; the
stats aggregates rebuilt by ``stats_rebuild()`` so the stats and blob routes
read what an ingested index holds), then ``mirror serve --workers 2`` (two
processes on the port; ``--workers`` sets how many) apart from this process.

The mix, each request picked at random by weight:

- Get 40 %: ``GET /container-registry/v1/images/{id}``, random ids;
- List 50 %, page of 100, over the folder and registry scopes and four orders
  (default, ``created_at desc``, ``name, digest desc``, ``name desc,
  created_at``): ``first`` pages 30 %; ``next`` 10 %, the next page of the
  client's own last List answer (its nextPageToken); ``deep`` 10 %, a page at a
  token saved beforehand by walking every listing ``--deep-pages`` pages deep;
- blobs 7 %: ``GET /mirror/v1/blobs/{digest}``, random digests;
- stats 3 %: ``GET /mirror/v1/stats``, whole index, per folder, per registry.

The load generator is ``wrk`` (C, one connection a thread, the mix in
``bench/load_mix.lua``; LuaJIT's clock gives each request's latency, so the
figures are per kind). It runs on the same cores as the server and PostgreSQL,
so it is kept lean: the script has no ``response()`` callback, for which wrk
would buffer every answer (a List page is ~137 KB) and copy it into Lua (that
took ~0.27 ms of CPU a request, more than PostgreSQL's share). A client's
``next`` page is instead looked up in a table of each List page's next page,
made beforehand by walking the listings (``listing_targets``): page tokens are a
function of the page (``mirror.api.page_tokens``, no nonce) and the index does
not change during a run, so the requests are the ones a client following its
answers would send. Without the callback wrk does not tell which kind an error
answer was of: errors are counted in all (answers of status 400 and above, socket errors). Each
row gives the generator's CPU share. Install it with ``apt-get install wrk``
(Debian/Ubuntu). ``--client python`` is an aiohttp fallback in this process,
following its answers' tokens, for the smoke run where wrk is missing: it is
itself a bound at these rates, its figures are not the benchmark's.

    python -m bench.load_bench                           # 1,000,000 images, 3 runs of 30 s a rate
    python -m bench.load_bench --images 100000 --seconds 20 --no-record
    python -m bench.load_bench --database-url postgresql://postgres@/postgres?host=/tmp/pg --keep

Two measures, one row each (``--rate``, default ``max,3200``): ``max``, each client
asking again as soon as it is answered (50 requests always in flight: the server's
ceiling, where by Little's law a request takes 50 / the rate and its p99 is a wait for
a core); and paced, the clients sending 3,200 requests a second in all, each on its
own schedule and waiting for its answers (``load_mix.lua``'s ``delay()``), so that the
budget's rate is delivered and its latencies read at that rate.

Figures go to ``bench/RESULTS.md`` with the command, the date and the load
average (the machine may be shared: say so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

import aiohttp
import asyncpg
import orjson

from bench.api_bench import (
    IMAGES,
    child,
    child_env,
    drop_database,
    free_port,
    load_average,
    percentile,
    postgres,
    prepare_database,
)
from bench.results import append_to_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
LUA = HERE / "load_mix.lua"
SECTION = "## Load"
TARGET_RPS = 3000
# The paced measure asks a little more than the budget's rate, so that 3,000 are delivered
# (a client answered late starts its schedule again from there).
PACED_RATE = 3200.0
TARGET_GET_P99_MS = 25.0
TARGET_LIST_P99_MS = 50.0

# kind -> share of the requests (percent)
MIX = {"get": 40, "first": 30, "next": 10, "deep": 10, "blob": 7, "stats": 3}
LIST_KINDS = ("first", "next", "deep")
ORDERS = ("", "created_at desc", "name, digest desc", "name desc, created_at")
PAGE_SIZE = "100"

SELECT_IDS = "SELECT id FROM images TABLESAMPLE SYSTEM (2) LIMIT $1"
SELECT_FIRST_IDS = "SELECT id FROM images ORDER BY id LIMIT $1"  # a tiny index samples nothing
# digests are stored as 32-byte keys (sql/090): the API takes their text
SELECT_DIGESTS = (
    "SELECT mirror_digest_text(digest) AS digest FROM blobs TABLESAMPLE SYSTEM (5) LIMIT $1"
)
SELECT_FIRST_DIGESTS = (
    "SELECT mirror_digest_text(digest) AS digest FROM blobs ORDER BY digest LIMIT $1"
)
SELECT_REGISTRIES = (
    "SELECT split_part(name, '/', 1) AS registry_id FROM images"
    " GROUP BY 1 ORDER BY count(*) DESC LIMIT $1"
)
SELECT_FOLDERS = (
    "SELECT folder_id FROM images WHERE folder_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC"
)
HAS_STATS_REBUILD = "SELECT to_regprocedure('stats_rebuild()') IS NOT NULL"
STATS_EMPTY = "SELECT NOT EXISTS (SELECT 1 FROM stats_images)"
STATS_REBUILD = "SELECT stats_rebuild()"
SELECT_BACKEND_PID = "SELECT pg_backend_pid()"


def wrk_missing_line() -> str:
    return (
        "load bench: wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), "
        "or --client python for a slower, client-bound run"
    )


# -- the targets ------------------------------------------------------------------------

# A List request: its listing's path and its page token (None: the listing's first page).
ListPage = tuple[str, str | None]

# How many pages past each first or saved page the table of next pages reaches. After a
# List answer a client pages on with a chance of 1 in 5 (``next`` is 10 of the 50 List
# percent), so it follows 5 next pages in a row about once in 3,000 chains; past the
# table it starts again at a first page, as it does at a listing's end.
NEXT_DEPTH = 5
DEEP_EVERY = 10  # a saved page every 10 pages of a listing


@dataclass
class Targets:
    """What the clients request, by kind: (path, page token or None); and the page after each
    List page a client can reach by paging on from a first or a saved page (its token)."""

    by_kind: dict[str, list[ListPage]] = field(default_factory=dict)
    after: dict[ListPage, str] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        """The targets file of ``bench/load_mix.lua`` (its header gives the format)."""
        lines = [f"weight\t{kind}\t{share}" for kind, share in MIX.items()]
        numbers: dict[ListPage, int] = {}
        pages: list[ListPage] = []

        def number(page: ListPage) -> int:  # from 1, as Lua's arrays count
            if page not in numbers:
                pages.append(page)
                numbers[page] = len(pages)
            return numbers[page]

        for kind, targets in self.by_kind.items():
            if kind in LIST_KINDS:
                lines += [f"pick\t{kind}\t{number(t)}" for t in targets]
            else:
                lines += [f"{kind}\t{p}" for p, _ in targets]
        done = 0
        while done < len(pages):  # numbering a page's next page appends it
            page = pages[done]
            done += 1
            token = self.after.get(page)
            after = number((page[0], token)) if token else 0
            lines.append(f"page\t{numbers[page]}\t{request_path(page)}\t{after}")
        path.write_text("\n".join(lines) + "\n")


def request_path(page: ListPage) -> str:
    path, token = page
    return path + (f"&pageToken={quote(token, safe='')}" if token else "")


def list_path(scope: tuple[str, str], order: str) -> str:
    query = {scope[0]: scope[1], "pageSize": PAGE_SIZE}
    if order:
        query["orderBy"] = order
    return f"{IMAGES}?{urlencode(query)}"


def listing_targets(
    path: str, tokens: Sequence[str], deep_pages: int
) -> tuple[list[ListPage], dict[ListPage, str]]:
    """A listing's saved pages (11, 21, ... up to ``deep_pages`` + 1) and the next page of
    each page up to ``NEXT_DEPTH`` past the first page and each saved page, from the
    tokens of its pages 2, 3, ... (``tokens[0]`` is page 2's)."""

    def page(number: int) -> ListPage:
        return (path, None if number == 1 else tokens[number - 2])

    last = len(tokens) + 1  # the deepest page known
    saved = list(range(DEEP_EVERY + 1, min(deep_pages + 1, last) + 1, DEEP_EVERY))
    after: dict[ListPage, str] = {}
    for start in [1, *saved]:
        for number in range(start, min(start + NEXT_DEPTH, last)):
            after[page(number)] = tokens[number - 1]  # page number + 1's
    return [page(n) for n in saved], after


async def fill_stats(dsn: str) -> None:
    """The stats aggregates the COPY load skipped (its triggers were off), when empty."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval(HAS_STATS_REBUILD) and await conn.fetchval(STATS_EMPTY):
            print("load bench: rebuilding the stats aggregates", flush=True)
            started = time.perf_counter()
            await conn.execute(STATS_REBUILD)
            await conn.execute("VACUUM ANALYZE")
            print(f"load bench: rebuilt in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        await conn.close()


async def collect_targets(dsn: str, base: str, deep_pages: int) -> Targets:
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r["id"] for r in await conn.fetch(SELECT_IDS, 20_000)]
        ids = ids or [r["id"] for r in await conn.fetch(SELECT_FIRST_IDS, 20_000)]
        digests = [r["digest"] for r in await conn.fetch(SELECT_DIGESTS, 2_000)]
        digests = digests or [r["digest"] for r in await conn.fetch(SELECT_FIRST_DIGESTS, 2_000)]
        registries = [r["registry_id"] for r in await conn.fetch(SELECT_REGISTRIES, 8)]
        folders = [r["folder_id"] for r in await conn.fetch(SELECT_FOLDERS)]
    finally:
        await conn.close()
    scopes = [("folderId", f) for f in folders] + [("registryId", r) for r in registries]
    firsts = [list_path(scope, order) for scope in scopes for order in ORDERS]
    deep: list[ListPage] = []
    after: dict[ListPage, str] = {}
    async with aiohttp.ClientSession() as session:
        for path in firsts:
            tokens = await listing_tokens(session, base, path, deep_pages + NEXT_DEPTH)
            saved, following = listing_targets(path, tokens, deep_pages)
            deep += saved
            after.update(following)
    stats = ["/mirror/v1/stats"] + [f"/mirror/v1/stats?{urlencode(dict([s]))}" for s in scopes]
    by_kind: dict[str, list[ListPage]] = {
        "get": [(f"{IMAGES}/{i}", None) for i in ids],
        "first": [(p, None) for p in firsts],
        "deep": deep or [(p, None) for p in firsts],
        "blob": [(f"/mirror/v1/blobs/{d}", None) for d in digests],
        "stats": [(p, None) for p in stats],
    }
    print(
        f"load bench: {len(ids):,} ids, {len(firsts)} listings ({len(scopes)} scopes x "
        f"{len(ORDERS)} orders), {len(deep):,} deep tokens, {len(after):,} next pages, "
        f"{len(digests):,} digests",
        flush=True,
    )
    return Targets(by_kind, after)


async def listing_tokens(
    session: aiohttp.ClientSession, base: str, path: str, pages: int
) -> list[str]:
    """The page tokens of a listing's pages 2, 3, ..., walked ``pages`` pages deep (fewer
    when it ends before)."""
    tokens: list[str] = []
    for _ in range(pages):
        url = base + request_path((path, tokens[-1] if tokens else None))
        async with session.get(url) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        token = orjson.loads(body).get("nextPageToken", "")
        if not token:
            break
        tokens.append(token)
    return tokens


# -- the server process --------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """The pid and its descendants (what the server process started counts with it)."""
    pids = [pid]
    for p in pids:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            children = []
        pids += [int(c) for c in children]
    return pids


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident and peak resident MB of the process tree (summed)."""
    rss = peak = 0.0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) / 1024
        except OSError:
            pass
    return rss, peak


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process tree (system: the kernel's share, e.g.
    sending the answers through the loopback TCP stack), with those of its children that
    exited (PostgreSQL's backends: a connection closed during the measure still counts)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += (int(fields[11]) + int(fields[13])) / ticks
        system += (int(fields[12]) + int(fields[14])) / ticks
    return user, system


async def postmaster_pid(dsn: str) -> int | None:
    """The PostgreSQL server's main process when it runs on this machine (its backends are its
    children), else None: its CPU is then not measured."""
    conn = await asyncpg.connect(dsn)
    try:
        backend = await conn.fetchval(SELECT_BACKEND_PID)
        return await asyncio.to_thread(parent_process, backend)  # while the backend lives
    finally:
        await conn.close()


def parent_process(backend: int) -> int | None:
    try:
        fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        parent = int(fields[1])
        command = Path(f"/proc/{parent}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    return parent if b"postgres" in command else None


# -- the clients ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one measured run saw: latencies (ms) and statuses by kind, over ``seconds``."""

    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "kind status"
    socket_errors: int = 0
    # answers wrk counted as errors (status >= 400) without saying their kind (their
    # latencies are among the kind's; load_mix.lua sees no statuses)
    status_errors: int = 0
    client_cpu: float = 0.0  # seconds of CPU the load generator used

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.socket_errors + self.status_errors

    def add(self, kind: str, ms: float, status: int) -> None:
        if status == 200:
            self.latencies[kind].append(ms)
        else:
            self.errors[f"{kind} {status or 'no answer'}"] += 1

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values()) + sum(self.errors.values())

    def of(self, kinds: Sequence[str]) -> list[float]:
        return [ms for kind in kinds for ms in self.latencies.get(kind, [])]


def run_wrk(
    base: str, targets: Path, clients: int, seconds: float, seed: int, rate: float | None = None
) -> Outcome:
    """One run of wrk; with ``rate``, the clients pace themselves to that many requests a
    second in all (``bench/load_mix.lua``, LOAD_MIX_INTERVAL_US)."""
    out = targets.with_suffix(".out")
    env = {**os.environ, "LOAD_MIX_OUT": str(out)}
    if rate:
        env["LOAD_MIX_INTERVAL_US"] = str(round(clients * 1e6 / rate))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [
        "wrk", f"-t{clients}", f"-c{clients}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(LUA), base, "--", str(targets), str(seed),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
    outcome = Outcome(seconds)
    for line in out.read_text().splitlines():
        fields = line.split()
        if fields[0] == "wrk":
            outcome.seconds = int(fields[2]) / 1e6
            outcome.socket_errors = sum(int(x) for x in fields[3:7])
            outcome.status_errors = int(fields[7])
            continue
        outcome.add(fields[0], int(fields[1]) / 1000, 200)  # answered; errors counted above
    outcome.client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return outcome


async def run_python(
    base: str, targets: Targets, clients: int, seconds: float, seed: int
) -> Outcome:
    """The same mix from this process with aiohttp: a fallback, itself a bound at high rates."""
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    outcome = Outcome(seconds)
    cpu_before = time.process_time()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            following: tuple[str, str] | None = None
            while time.perf_counter() < deadline:
                kind = rng.choices(kinds, weights)[0]
                if kind == "next" and following is not None:
                    path, token = following
                else:
                    kind = "first" if kind == "next" else kind
                    path, token = rng.choice(targets.by_kind[kind])  # type: ignore[assignment]
                url = base + request_path((path, token))
                started = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        body = await response.read()
                        status = response.status
                except aiohttp.ClientError:
                    outcome.socket_errors += 1
                    continue
                outcome.add(kind, (time.perf_counter() - started) * 1000, status)
                if kind in LIST_KINDS and status == 200:
                    next_token = orjson.loads(body).get("nextPageToken")
                    following = (path, next_token) if next_token else None

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        outcome.seconds = time.perf_counter() - started
    outcome.client_cpu = time.process_time() - cpu_before
    return outcome


# -- results -------------------------------------------------------------------------------


def p50_p99(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}"


@dataclass
class Run:
    outcome: Outcome
    server_rss: tuple[float, float]
    server_cpu: tuple[float, float]  # user, system CPU seconds during the measure
    database_cpu: tuple[float, float] | None  # the same for PostgreSQL (None: not on this machine)
    page_cache: tuple[float, float] = (0.0, 0.0)  # List page cache hits, misses during the measure

    @property
    def page_cache_hits(self) -> str:
        hits, misses = self.page_cache
        return f"{hits / (hits + misses):.0%}" if hits + misses else "-"

    @property
    def server_share(self) -> str:
        user, system = self.server_cpu
        seconds = self.outcome.seconds
        return f"{(user + system) / seconds:.0%} ({system / seconds:.0%} system)"

    @property
    def database_share(self) -> str:
        if self.database_cpu is None:
            return "not measured"
        return f"{sum(self.database_cpu) / self.outcome.seconds:.0%}"

    @property
    def cpu_per_request(self) -> str:
        """CPU milliseconds a request: server, PostgreSQL, load generator (the 2 cores' budget
        at 3,000 requests/s is 0.67 ms for all three)."""
        requests = max(1, self.outcome.requests)
        parts = [f"server {sum(self.server_cpu) / requests * 1000:.2f}"]
        if self.database_cpu is not None:
            parts.append(f"PostgreSQL {sum(self.database_cpu) / requests * 1000:.2f}")
        parts.append(f"client {self.outcome.client_cpu / requests * 1000:.2f}")
        return ", ".join(parts) + " ms"

    def line(self) -> str:
        o = self.outcome
        errors = o.error_count
        return (
            f"{o.requests / o.seconds:,.0f} requests/s; Get {p50_p99(o.of(['get']))} ms, "
            f"List {p50_p99(o.of(LIST_KINDS))} ms (first {p50_p99(o.of(['first']))}, "
            f"next {p50_p99(o.of(['next']))}, deep {p50_p99(o.of(['deep']))}), "
            f"blobs {p50_p99(o.of(['blob']))} ms, stats {p50_p99(o.of(['stats']))} ms (p50 / p99); "
            f"errors {errors} {dict(o.errors)}; server RSS {self.server_rss[0]:.0f} MB (peak {self.server_rss[1]:.0f}), "
            f"server CPU {self.server_share} of a core, "
            f"PostgreSQL CPU {self.database_share}, "
            f"client CPU {o.client_cpu / o.seconds:.0%}; CPU a request: {self.cpu_per_request}; "
            f"List pages from the page cache {self.page_cache_hits}"
        )


PAGE_CACHE_LOOKUPS = re.compile(
    r'^mirror_api_list_page_cache_lookups_total\{result="(hit|miss)"\} (\S+)$', re.MULTILINE
)


def page_cache_lookups(base: str) -> tuple[float, float]:
    """The server's List page cache hits and misses so far (its /metrics, summed over the
    processes of ``--workers``)."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
        found = dict(PAGE_CACHE_LOOKUPS.findall(response.read().decode()))
    return float(found.get("hit", 0)), float(found.get("miss", 0))


def server_processes(workers: int) -> str:
    return "one server process" if workers == 1 else f"{workers} server processes (--workers)"


def page_cache(args: argparse.Namespace) -> str:
    if args.page_cache_mb is None:
        return "the default (64 MB)"
    return f"{args.page_cache_mb} MB" if args.page_cache_mb else "off"


def median_run(runs: Sequence[Run]) -> Run:
    """The run of the median rate (of an even count, the lower middle one)."""
    ranked = sorted(runs, key=lambda r: r.outcome.requests / r.outcome.seconds)
    return ranked[(len(ranked) - 1) // 2]


def rates(runs: Sequence[Run]) -> str:
    return " / ".join(f"{r.outcome.requests / r.outcome.seconds:,.0f}" for r in runs)


def record(
    command: str,
    run: Run,
    args: argparse.Namespace,
    rate: float | None,
    load_before: str,
    runs: Sequence[Run],
) -> str:
    o = run.outcome
    errors = o.error_count
    get_p99 = percentile(o.of(["get"]), 99) if o.of(["get"]) else float("inf")
    list_p99 = percentile(o.of(LIST_KINDS), 99) if o.of(LIST_KINDS) else float("inf")
    rps = o.requests / o.seconds
    met = (
        rps >= TARGET_RPS
        and get_p99 <= TARGET_GET_P99_MS
        and list_p99 <= TARGET_LIST_P99_MS
        and not errors
    )
    return (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} UTC | `{command}` | {args.images:,} "
        f"| {client_label(args.client, rate)} | {args.clients} x {o.seconds:.0f} s | {rps:,.0f} "
        f"| {p50_p99(o.of(['get']))} | {p50_p99(o.of(LIST_KINDS))} "
        f"| {p50_p99(o.of(['first']))} | {p50_p99(o.of(['next']))} | {p50_p99(o.of(['deep']))} "
        f"| {p50_p99(o.of(['blob']))} | {p50_p99(o.of(['stats']))} | {errors} "
        f"| {run.server_rss[0]:.0f} ({run.server_rss[1]:.0f}) "
        f"| {run.server_share} / {o.client_cpu / o.seconds:.0%} "
        f"| {'yes' if met else 'no'} "
        f"| {os.cpu_count()} cores, load average {load_before} before / {load_average()} after; "
        f"the median of {len(runs)} run(s) (requests/s {rates(runs)}); "
        f"PostgreSQL CPU {run.database_share}; CPU a request: {run.cpu_per_request}; "
        f"{server_processes(args.workers)}; List page cache {page_cache(args)} "
        f"({run.page_cache_hits} of the pages from it); "
        f"Python {sys.version.split()[0]} |"
    )


def client_label(client: str, rate: float | None) -> str:
    """The load generator, and the rate its clients pace themselves to (``--rate``)."""
    if rate is not None:
        return f"{client}, paced: {rate:,.0f} requests/s asked"
    return client


TABLE_HEADER = (
    "| date | command | images | client | clients x time | requests/s | Get | List "
    "| List first | List next | List deep | blobs | stats | errors | server RSS MB (peak) "
    "| CPU server / client | budget met | notes |"
)


def write_row(row: str) -> None:
    header = (
        f"{SECTION}\n\n"
        "`bench/load_bench.py`: `mirror serve` under 50 concurrent clients, each request picked "
        "at random: Get 40 %, List 50 % (page of 100 over the folder and registry scopes and 4 "
        "orders: first pages 30 %, the client's next page 10 %, saved deep pages 10 %), blobs 7 %, "
        "stats 3 % (whole index, per folder, per registry). Latencies in ms (p50 / p99) measured "
        "by the client, per kind; errors = answers of status >= 400 and socket errors (wrk counts "
        "them without their kind); RSS of the server "
        "process(es) at the end (peak); CPU = the server's (its kernel share in brackets) and the "
        "load generator's share of one core during the measure (notes: PostgreSQL's, and the CPU "
        "milliseconds a request of each). Load generator: `wrk` (C; `apt-get install wrk`) with "
        "`bench/load_mix.lua`, one connection a thread. Budget: >= 3,000 requests/s, Get p99 "
        "<= 25 ms, List p99 <= 50 ms.\n\n"
        f"{TABLE_HEADER}\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "| --- | --- | --- | --- |\n"
    )
    # the bench's own table, not a comparison written under it by hand
    append_to_section(SECTION, header, [row], under=TABLE_HEADER)


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0, help="each measured run")
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="measured runs (one after the other on the same server); the row is the "
        "median's, the note gives each run's rate",
    )
    parser.add_argument(
        "--rate",
        type=rates_arg,
        help="comma-separated: `max` (each client asks again as soon as it is answered, "
        "as fast as the server goes) or a rate (requests a second the clients send in all, "
        "each on its own schedule and waiting for its answers; wrk only); one row each "
        f"(default: max,{PACED_RATE:.0f} with wrk, max with python)",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="an unmeasured run first")
    parser.add_argument("--deep-pages", type=int, default=100, help="how deep to save tokens")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="mirror serve --workers: server processes (2: one process answers at most a "
        "core's worth, and the two cores are then full)",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk",
        help="the load generator (python: a client-bound fallback for smoke runs)",
    )
    parser.add_argument(
        "--database-url", help="admin DSN of a PostgreSQL server (default: embedded)"
    )
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the filled database")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument(
        "--page-cache-mb",
        type=int,
        help="the server's MIRROR_API_PAGE_CACHE_MB (default: the mirror's own, 64; 0: none)",
    )
    return parser.parse_args(argv)


def rates_arg(text: str) -> list[float | None]:
    """``--rate``: ``max`` (None) or requests a second above 0, comma-separated."""
    rates: list[float | None] = []
    for part in text.split(","):
        if part.strip() == "max":
            rates.append(None)
            continue
        try:
            rate = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is neither max nor a rate") from None
        if not rate > 0:
            raise argparse.ArgumentTypeError(f"a rate must be above 0, not {part}")
        rates.append(rate)
    return rates


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.rate is None:
        args.rate = [None, PACED_RATE] if args.client == "wrk" else [None]
    if args.client != "wrk" and any(args.rate):
        print("load bench: a paced --rate needs --client wrk", file=sys.stderr)
        return 2
    if args.client == "wrk" and shutil.which("wrk") is None:
        print(wrk_missing_line(), file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "bench.load_bench", *argv])
    load_before = load_average()
    by_rate: list[tuple[float | None, list[Run]]] = []
    with postgres(args.database_url) as admin_dsn:
        dsn = asyncio.run(prepare_database(admin_dsn, args.images, args.seed, args.keep))
        try:
            asyncio.run(fill_stats(dsn))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            serve = ["serve", "--port", str(port), "--database-url", dsn, "--log-level", "WARNING"]
            serve += ["--workers", str(args.workers)]
            env = child_env()
            if args.page_cache_mb is not None:
                env["MIRROR_API_PAGE_CACHE_MB"] = str(args.page_cache_mb)
            with (
                child(serve, base + "/readyz", env=env) as server,
                tempfile.TemporaryDirectory() as tmp,
            ):
                targets = asyncio.run(collect_targets(dsn, base, args.deep_pages))
                targets_file = Path(tmp) / "targets.tsv"
                targets.write(targets_file)

                def measure(seconds: float, rate: float | None) -> Outcome:
                    if args.client == "wrk":
                        return run_wrk(base, targets_file, args.clients, seconds, args.seed, rate)
                    return asyncio.run(run_python(base, targets, args.clients, seconds, args.seed))

                database = asyncio.run(postmaster_pid(dsn))
                for rate in args.rate:
                    if args.warmup > 0:
                        measure(args.warmup, rate)
                    runs = measure_runs(args, rate, server.pid, database, base, measure)
                    by_rate.append((rate, runs))
        finally:
            if not args.keep:
                asyncio.run(drop_database(admin_dsn, args.images, args.seed))
    answered = True
    for rate, runs in by_rate:
        run = median_run(runs)
        print(f"load bench: {run_label(rate)}: {run.line()}", flush=True)
        row = record(command, run, args, rate, load_before, runs)
        print(row)
        if not args.no_record:
            write_row(row)
        answered = answered and bool(run.outcome.requests)
    return 0 if answered else 1


def run_label(rate: float | None) -> str:
    return "as fast as answered" if rate is None else f"paced at {rate:,.0f} requests/s asked"


def measure_runs(
    args: argparse.Namespace,
    rate: float | None,
    server_pid: int,
    database: int | None,
    base: str,
    measure: Callable[[float, float | None], Outcome],
) -> list[Run]:
    """``args.runs`` measured runs at one rate, each with the processes' CPU and RSS."""
    runs: list[Run] = []
    for number in range(args.runs):
        user, system = cpu_seconds(server_pid)
        db_before = cpu_seconds(database) if database else (0.0, 0.0)
        cache_before = page_cache_lookups(base)
        outcome = measure(args.seconds, rate)
        user_after, system_after = cpu_seconds(server_pid)
        db_after = cpu_seconds(database) if database else (0.0, 0.0)
        cache_after = page_cache_lookups(base)
        runs.append(
            Run(
                outcome,
                rss_mb(server_pid),
                (user_after - user, system_after - system),
                (db_after[0] - db_before[0], db_after[1] - db_before[1]) if database else None,
                (cache_after[0] - cache_before[0], cache_after[1] - cache_before[1]),
            )
        )
        print(
            f"load bench: {run_label(rate)}, run {number + 1}/{args.runs}: {runs[-1].line()}",
            flush=True,
        )
    return runs


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
