"""gRPC beside REST: Get and List latency and throughput of one ``mirror serve``, both protocols.

Setup as ``bench/api_bench.py``: a database filled with the simulator's generated
registry by COPY (default 1,000,000 images), then ``mirror serve`` in its own
process with its HTTP API and its gRPC listener. This process drives both, in
the same run, the same requests:

- Get: random image ids, one at a time (latency);
- List, page of 100: first pages of 5 listings, then full walks by page token of
  3 listings (every depth; ``last 10%`` = the deepest tenth of the pages);
- throughput: ``--concurrency`` clients (default 16) for ``--seconds`` each, Gets
  of random ids and deep List pages (tokens saved from the walks), with the CPU
  time the ``mirror serve`` process spent per request (Linux ``/proc``): unlike
  latencies, it hardly depends on what else the machine runs.

REST is driven with aiohttp (the body read, not parsed); gRPC with grpc.aio and
the official SDK's stubs (one channel, HTTP/2 streams). Latencies are measured
by the client, request sent to answer read. Targets: gRPC Get p99 <= 5 ms, List
page of 100 p99 <= 10 ms at any depth. Rows go to ``bench/RESULTS.md``.

    python -m bench.grpc_bench                               # 1,000,000 images
    python -m bench.grpc_bench --images 100000 --no-record
    python -m bench.grpc_bench --images 100000 --image-cache-mb 64  # with the image cache
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import orjson
from yandex.cloud.containerregistry.v1 import image_service_pb2, image_service_pb2_grpc

from bench.api_bench import (
    BIGGEST_FOLDER,
    BIGGEST_REGISTRY,
    FIRST_IDS,
    IMAGES,
    SAMPLE_IDS,
    Latencies,
    child,
    child_env,
    drop_database,
    free_port,
    load_average,
    postgres,
    prepare_database,
)
from bench.results import append_to_section

SECTION = "## gRPC and REST"
PAGE = 100
TARGET_GET_P99_MS = 5.0
TARGET_LIST_P99_MS = 10.0
FIELDS = {"registryId": "registry_id", "folderId": "folder_id", "orderBy": "order_by"}

Call = Callable[[], Awaitable[None]]


@dataclass
class Figures:
    protocol: str
    get: Latencies
    first: Latencies
    deep: Latencies
    last_tenth: Latencies
    get_rps: float
    get_loaded: Latencies
    list_rps: float
    list_loaded: Latencies
    pages: int
    get_cpu_ms: float  # the server process's CPU time per request in the throughput measure
    list_cpu_ms: float


class Rest:
    name = "REST"

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, image_id: str) -> None:
        async with self.session.get(f"{self.base}{IMAGES}/{image_id}") as response:
            await response.read()
            assert response.status == 200, response.status

    async def page(self, params: dict[str, str], token: str) -> tuple[int, str]:
        query = {**params, "pageSize": str(PAGE), **({"pageToken": token} if token else {})}
        async with self.session.get(self.base + IMAGES, params=query) as response:
            body = await response.read()
            assert response.status == 200, body[:200]
        page = orjson.loads(body)
        return len(page.get("images", ())), page.get("nextPageToken", "")


class Grpc:
    name = "gRPC"

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = image_service_pb2_grpc.ImageServiceStub(channel)

    async def get(self, image_id: str) -> None:
        await self.stub.Get(image_service_pb2.GetImageRequest(image_id=image_id))

    async def page(self, params: dict[str, str], token: str) -> tuple[int, str]:
        fields = {FIELDS[k]: v for k, v in params.items()}
        answer = await self.stub.List(
            image_service_pb2.ListImagesRequest(page_size=PAGE, page_token=token, **fields)
        )
        return len(answer.images), answer.next_page_token


async def timed(call: Call, out: Latencies) -> None:
    started = time.perf_counter()
    await call()
    out.samples.append((time.perf_counter() - started) * 1000)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(
    calls: Sequence[Call], concurrency: int, seconds: float, server_pid: int
) -> tuple[float, Latencies, float]:
    """Requests/s, their latencies, and the server's CPU milliseconds per request."""
    out = Latencies()
    deadline = time.perf_counter() + seconds
    rng = random.Random(2)

    async def worker() -> int:
        done = 0
        while time.perf_counter() < deadline:
            await timed(rng.choice(calls), out)
            done += 1
        return done

    started, cpu_before = time.perf_counter(), cpu_seconds(server_pid)
    counts = await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu_ms = (cpu_seconds(server_pid) - cpu_before) * 1000 / max(1, sum(counts))
    return sum(counts) / (time.perf_counter() - started), out, cpu_ms


async def measure_one(
    api: Rest | Grpc,
    ids: list[str],
    listings: list[dict[str, str]],
    args: argparse.Namespace,
    server_pid: int,
) -> Figures:
    for image_id in ids[:300]:  # warm up connections and caches
        await api.get(image_id)
    get = Latencies()
    for image_id in random.Random(1).choices(ids, k=args.gets):
        await timed(lambda i=image_id: api.get(i), get)  # type: ignore[misc, arg-type]
    first = Latencies()
    for _ in range(args.first_pages):
        for params in listings:
            await timed(lambda p=params: api.page(p, ""), first)  # type: ignore[misc, arg-type]
    deep, last_tenth = Latencies(), Latencies()
    tokens: list[tuple[dict[str, str], str]] = []
    pages = 0
    for params in listings[:3]:
        walked = Latencies()
        token = ""
        while True:
            started = time.perf_counter()
            _, token = await api.page(params, token)
            walked.samples.append((time.perf_counter() - started) * 1000)
            if not token:
                break
            tokens.append((params, token))
        deep.samples += walked.samples[1:]
        last_tenth.samples += walked.samples[-max(1, len(walked.samples) // 10) :]
        pages += len(walked.samples)
    get_calls = [lambda i=i: api.get(i) for i in ids]
    get_rps, get_loaded, get_cpu = await throughput(
        get_calls,  # type: ignore[arg-type]
        args.concurrency,
        args.seconds,
        server_pid,
    )
    sample = random.Random(3).sample(tokens, min(5000, len(tokens)))
    list_calls = [lambda p=p, t=t: api.page(p, t) for p, t in sample]
    list_rps, list_loaded, list_cpu = await throughput(
        list_calls,  # type: ignore[arg-type]
        args.concurrency,
        args.seconds,
        server_pid,
    )
    return Figures(
        api.name,
        get,
        first,
        deep,
        last_tenth,
        get_rps,
        get_loaded,
        list_rps,
        list_loaded,
        pages,
        get_cpu,
        list_cpu,
    )


async def measure(
    base: str, address: str, dsn: str, args: argparse.Namespace, server_pid: int
) -> list[Figures]:
    conn = await asyncpg.connect(dsn)
    try:
        registry, registry_n = await conn.fetchrow(BIGGEST_REGISTRY)
        folder, folder_n = await conn.fetchrow(BIGGEST_FOLDER)
        ids = [r["id"] for r in await conn.fetch(SAMPLE_IDS, 20_000)]
        ids = ids or [r["id"] for r in await conn.fetch(FIRST_IDS, 20_000)]
    finally:
        await conn.close()
    print(f"grpc bench: registry {registry} ({registry_n:,}), folder {folder} ({folder_n:,})")
    listings = [
        {"registryId": registry},
        {"registryId": registry, "orderBy": "created_at desc"},
        {"folderId": folder, "orderBy": "name desc, created_at"},
        {"registryId": registry, "orderBy": "name, digest desc"},
        {"folderId": folder},
    ]
    figures = []
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        grpc.aio.insecure_channel(address) as channel,
    ):
        for api in (Rest(session, base), Grpc(channel)):
            figures.append(await measure_one(api, ids, listings, args, server_pid))
            print(f"grpc bench: {summary(figures[-1])}", flush=True)
    return figures


def summary(f: Figures) -> str:
    return (
        f"{f.protocol}: Get {f.get.p50:.2f}/{f.get.p99:.2f} ms, List first "
        f"{f.first.p50:.2f}/{f.first.p99:.2f}, deep {f.deep.p50:.2f}/{f.deep.p99:.2f} "
        f"(last tenth p99 {f.last_tenth.p99:.2f}); {f.get_rps:,.0f} Get/s, {f.list_rps:,.0f} List/s; "
        f"server CPU {f.get_cpu_ms:.2f} ms a Get, {f.list_cpu_ms:.2f} ms a List"
    )


def rows(
    command: str, figures: list[Figures], args: argparse.Namespace, load_before: str
) -> list[str]:
    out = []
    now = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    for f in figures:
        out.append(
            f"| {now} | `{command}` | {args.images:,} | {f.protocol} "
            f"| {f.get.p50:.2f} / {f.get.p99:.2f} | {f.first.p50:.2f} / {f.first.p99:.2f} "
            f"| {f.deep.p50:.2f} / {f.deep.p99:.2f} | {f.last_tenth.p99:.2f} "
            f"| {f.get_rps:,.0f} ({f.get_loaded.p99:.1f}) | {f.list_rps:,.0f} ({f.list_loaded.p99:.1f}) "
            f"| {f.pages:,} pages walked; concurrency {args.concurrency}; server CPU "
            f"{f.get_cpu_ms:.2f} ms a Get, {f.list_cpu_ms:.2f} ms a List; load average "
            f"{load_before} before / {load_average()} after |"
        )
    return out


def write_rows(new_rows: list[str]) -> None:
    header = (
        f"{SECTION}\n\n"
        "`bench/grpc_bench.py`: one `mirror serve`, its HTTP API and its gRPC listener driven in "
        "the same run with the same requests, by a client in another process (REST: aiohttp, "
        "body read; gRPC: grpc.aio with the SDK's stubs). Latencies in ms (p50 / p99); List = "
        "page of 100; `first` = first pages of 5 listings; `deep` = later pages of full walks by "
        "page token of 3 listings; `last 10%` = the deepest tenth of those pages; throughput in "
        "requests/s at the given concurrency with its p99 in brackets. Targets (gRPC): Get p99 "
        "<= 5 ms, List p99 <= 10 ms at any depth. 2 cores shared by client, server and "
        "PostgreSQL.\n\n"
        "| date | command | images | protocol | Get | List first | List deep | deep last 10% p99 "
        "| Get req/s (p99) | List req/s (p99) | notes |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    append_to_section(SECTION, header, new_rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.grpc_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gets", type=int, default=3000, help="sequential Gets")
    parser.add_argument("--first-pages", type=int, default=50, help="first pages per listing")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput measure")
    parser.add_argument(
        "--database-url", help="admin DSN of a PostgreSQL server (default: embedded)"
    )
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the filled database")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument(
        "--image-cache-mb",
        type=int,
        help="MIRROR_GRPC_IMAGE_CACHE_MB of the server (default: its default; 0: no cache)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench.grpc_bench", *argv])
    load_before = load_average()
    with postgres(args.database_url) as admin_dsn:
        dsn = asyncio.run(prepare_database(admin_dsn, args.images, args.seed, args.keep))
        try:
            port, grpc_port = free_port(), free_port()
            base = f"http://127.0.0.1:{port}"
            serve = ["serve", "--port", str(port), "--database-url", dsn, "--log-level", "WARNING"]
            env = child_env(MIRROR_GRPC_PORT=str(grpc_port))
            if args.image_cache_mb is not None:
                env["MIRROR_GRPC_IMAGE_CACHE_MB"] = str(args.image_cache_mb)
            with child(serve, base + "/readyz", env=env) as server:
                # This client's own full collections would scan every object its imports
                # made (the SDK, grpc, asyncpg: ~60 ms each, measured) inside a timed call:
                # frozen, they are not scanned again; the server is not touched.
                gc.collect()
                gc.freeze()
                figures = asyncio.run(
                    measure(base, f"127.0.0.1:{grpc_port}", dsn, args, server.pid)
                )
        finally:
            if not args.keep:
                asyncio.run(drop_database(admin_dsn, args.images, args.seed))
    new_rows = rows(command, figures, args, load_before)
    print("\n".join(new_rows))
    if not args.no_record:
        write_rows(new_rows)
    grpc_figures = figures[-1]
    worst_list = max(grpc_figures.first.p99, grpc_figures.deep.p99, grpc_figures.last_tenth.p99)
    met = grpc_figures.get.p99 <= TARGET_GET_P99_MS and worst_list <= TARGET_LIST_P99_MS
    print(
        f"grpc bench: targets {'met' if met else 'MISSED'} (Get p99 {grpc_figures.get.p99:.2f} ms, List p99 {worst_list:.2f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
