"""Relay benchmark: throughput (events/s) and commit-to-consumer latency (p50/p99).

* **throughput**: ``--events`` outbox rows (default 100,000; realistic payloads:
  the simulator's images, one event in five a blob event) are written first, then
  ``run_relay(once=True)`` drains them; events/s = rows / wall time, producer start
  and topic creation included.
* **latency**: ``mirror relay`` runs as its own process (as deployed); this process
  commits events with ``append_events`` at a steady ``--rate`` for ``--duration``
  seconds and reads the topics back; latency = consumer receipt − commit of the
  event's transaction (one clock: both happen here).

Each measure is repeated ``--runs`` times on a fresh database and topics; the
medians go to ``bench/RESULTS.md`` (section "Relay").

    python -m bench.relay_bench                       # embedded PostgreSQL, local broker
    python -m bench.relay_bench --events 20000 --runs 1 --no-record   # a quick look

Services: ``--database-url`` (an admin DSN: each run creates and drops a database)
or an embedded PostgreSQL in a temporary folder; ``--kafka-bootstrap`` or a local
broker from ``mirror.devservices.kafka``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.results import append_to_section
from mirror.events.producer import compression_type
from mirror.events.relay import RelayOptions, run_relay
from mirror.model import Event, EventType
from mirror.settings import Settings
from mirror.store.migrate import apply_migrations
from mirror.store.outbox import append_events
from mirror.store.pool import create_pool
from mirror.upstream.simulator.generator import RegistryModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Relay"
TABLE_HEAD = (
    "| date | command | throughput (events/s) | steady rate (events/s) | p50 (ms) | p99 (ms) "
    "| max (ms) | runs | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)
PREFILL_CHUNK = 1000
PAYLOAD_IMAGES = 2000
LATENCY_TX_EVENTS = 50  # events per writer transaction (an ingest page commits many)
WRITERS = 4  # concurrent writers in the latency run (as ingest walks scopes concurrently)


# -- payloads


@functools.cache
def payload_images() -> list[dict[str, Any]]:
    model = RegistryModel(images=PAYLOAD_IMAGES, seed=7)
    return [image.to_json() for image in model.iter_images(0, PAYLOAD_IMAGES)]


def payload_events(count: int, start: int = 0) -> Iterator[Event]:
    """Events shaped like the ingest's: image JSON from the simulator, blob events between."""
    images = payload_images()
    for n in range(start, start + count):
        image = images[n % PAYLOAD_IMAGES]
        if n % 5 == 4:
            layer = image["layers"][0]
            yield Event(
                EventType.BLOB_ADDED,
                layer["digest"],
                {"digest": layer["digest"], "size": layer["size"], "image": image["id"], "seq": n},
            )
        else:
            yield Event(
                EventType.IMAGE_UPDATED,
                image["id"],
                {"image": image, "changes": {"tagsAdded": [f"v{n}"]}, "seq": n},
            )


# -- services


@contextlib.contextmanager
def postgres(database_url: str | None) -> Iterator[str]:
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


@contextlib.contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from mirror.devservices.kafka import KafkaBroker

    with KafkaBroker() as broker:
        yield broker.bootstrap


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    name = f"relay_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = with_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# -- throughput


async def throughput_run(admin_dsn: str, bootstrap: str, events: int, batch_size: int) -> float:
    async with fresh_database(admin_dsn) as dsn:
        pool = await create_pool(dsn, max_size=4)
        try:
            batch: list[Event] = []
            for event in payload_events(events):
                batch.append(event)
                if len(batch) == PREFILL_CHUNK:
                    async with pool.acquire() as conn, conn.transaction():
                        await append_events(conn, batch)
                    batch = []
            if batch:
                async with pool.acquire() as conn, conn.transaction():
                    await append_events(conn, batch)
            await pool.execute("VACUUM ANALYZE outbox")
            settings = Settings.load(env={}).with_(
                kafka_bootstrap=bootstrap, kafka_topic_prefix=f"bench{uuid.uuid4().hex[:8]}"
            )
            started = time.perf_counter()
            result = await run_relay(
                pool,
                settings,
                stop=asyncio.Event(),
                once=True,
                options=RelayOptions(batch_size=batch_size),
            )
            elapsed = time.perf_counter() - started
            if result.published != events:
                raise RuntimeError(f"published {result.published} of {events} events")
            return events / elapsed
        finally:
            await pool.close()


# -- latency


@dataclass
class LatencyRun:
    p50_ms: float
    p99_ms: float
    max_ms: float
    achieved_rate: float


async def latency_run(
    admin_dsn: str, bootstrap: str, rate: int, duration: float, batch_size: int
) -> LatencyRun:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    async with fresh_database(admin_dsn) as dsn:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
        env.update(
            MIRROR_DATABASE_URL=dsn,
            MIRROR_KAFKA_BOOTSTRAP=bootstrap,
            MIRROR_KAFKA_TOPIC_PREFIX=prefix,
            MIRROR_LOG_LEVEL="WARNING",
        )
        relay = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mirror", "relay", "--batch-size", str(batch_size),
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        pool = await create_pool(dsn, max_size=WRITERS + 2)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        try:
            committed: dict[int, float] = {}
            received: dict[int, float] = {}
            # Warm up: the relay creates the topics on its first start.
            await _write(pool, list(payload_events(1, start=-1)), committed)
            await consumer.start()
            partitions = await _assign(consumer, prefix)
            await _read_until(consumer, received, {-1}, time.monotonic() + 60)
            committed.clear()
            received.clear()
            del partitions

            reader = asyncio.create_task(_read_forever(consumer, received))
            started = time.monotonic()
            await asyncio.gather(
                *(
                    _steady_writer(pool, w, rate, duration, started, committed)
                    for w in range(WRITERS)
                )
            )
            achieved = len(committed) / (time.monotonic() - started)
            deadline = time.monotonic() + 60
            while len(received.keys() & committed.keys()) < len(committed):
                if time.monotonic() > deadline:
                    raise RuntimeError("not every event reached the consumer in 60 s")
                await asyncio.sleep(0.05)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            latencies = sorted((received[s] - committed[s]) * 1000 for s in committed)
            return LatencyRun(
                p50_ms=_percentile(latencies, 50),
                p99_ms=_percentile(latencies, 99),
                max_ms=latencies[-1],
                achieved_rate=achieved,
            )
        finally:
            await consumer.stop()
            await pool.close()
            relay.terminate()
            try:
                await asyncio.wait_for(relay.wait(), 15)
            except TimeoutError:
                relay.kill()
                await relay.wait()


async def _steady_writer(
    pool: asyncpg.Pool,
    writer: int,
    rate: int,
    duration: float,
    started: float,
    committed: dict[int, float],
) -> None:
    """One of WRITERS writers; together they commit ``rate`` events/s on a fixed schedule."""
    per_second = rate / LATENCY_TX_EVENTS / WRITERS
    for tx in range(int(duration * per_second)):
        # Transaction `tx` of this writer is due at started + tx / per_second (staggered).
        delay = started + (tx + writer / WRITERS) / per_second - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        first = (tx * WRITERS + writer) * LATENCY_TX_EVENTS
        await _write(pool, list(payload_events(LATENCY_TX_EVENTS, start=first)), committed)


async def _write(pool: asyncpg.Pool, events: list[Event], committed: dict[int, float]) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            await append_events(conn, events)
        now = time.monotonic()
    for event in events:
        committed[event.data["seq"]] = now


async def _assign(consumer: AIOKafkaConsumer, prefix: str) -> list[TopicPartition]:
    deadline = time.monotonic() + 60
    partitions: list[TopicPartition] = []
    for topic in (f"{prefix}.images", f"{prefix}.blobs"):
        while not (found := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} never appeared")
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        partitions += [TopicPartition(topic, p) for p in found]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    return partitions


async def _read_until(
    consumer: AIOKafkaConsumer, received: dict[int, float], want: set[int], deadline: float
) -> None:
    while not want <= received.keys():
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up event never arrived")
        await _read_once(consumer, received)


async def _read_forever(consumer: AIOKafkaConsumer, received: dict[int, float]) -> None:
    while True:
        await _read_once(consumer, received)


async def _read_once(consumer: AIOKafkaConsumer, received: dict[int, float]) -> None:
    batches = await consumer.getmany(timeout_ms=100)
    now = time.monotonic()
    for records in batches.values():
        for record in records:
            seq = orjson.loads(record.value)["seq"]
            received.setdefault(seq, now)


def _percentile(sorted_values: list[float], pct: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# -- results


def record(row: str) -> None:
    """Append a row to the Relay section of bench/RESULTS.md (created when absent)."""
    append_to_section(SECTION, f"{SECTION}\n\n{TABLE_HEAD}", [row], RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="outbox rows to drain")
    parser.add_argument("--rate", type=int, default=2000, help="steady events/s (latency)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds (latency)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--database-url", default=os.environ.get("MIRROR_BENCH_DATABASE_URL"))
    parser.add_argument("--kafka-bootstrap", default=os.environ.get("MIRROR_BENCH_KAFKA_BOOTSTRAP"))
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    if args.rate * args.duration < LATENCY_TX_EVENTS * WRITERS:
        parser.error(
            f"--rate x --duration must be at least {LATENCY_TX_EVENTS * WRITERS} events "
            f"({WRITERS} writers commit {LATENCY_TX_EVENTS} events a transaction)"
        )
    command = "python -m bench.relay_bench " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={os.environ['PYTHONPATH']} {command}"
    load_before = os.getloadavg()[0]

    with postgres(args.database_url) as admin_dsn, kafka(args.kafka_bootstrap) as bootstrap:
        throughputs = []
        for run in range(args.runs):
            value = asyncio.run(throughput_run(admin_dsn, bootstrap, args.events, args.batch_size))
            throughputs.append(value)
            print(f"throughput run {run + 1}: {value:,.0f} events/s ({args.events:,} events)")
        latencies = []
        for run in range(args.runs):
            result = asyncio.run(
                latency_run(admin_dsn, bootstrap, args.rate, args.duration, args.batch_size)
            )
            latencies.append(result)
            print(
                f"latency run {run + 1}: p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, "
                f"max {result.max_ms:.0f} ms at {result.achieved_rate:,.0f} events/s"
            )

    throughput = statistics.median(throughputs)
    p50 = statistics.median(r.p50_ms for r in latencies)
    p99 = statistics.median(r.p99_ms for r in latencies)
    worst = statistics.median(r.max_ms for r in latencies)
    rate = statistics.median(r.achieved_rate for r in latencies)
    print(
        f"median of {args.runs}: {throughput:,.0f} events/s; "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms at {rate:,.0f} events/s"
    )
    notes = (
        f"{args.events:,} rows prefilled; batch {args.batch_size}; {compression_type()}; "
        f"{os.cpu_count()} cores, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after (shared machine); Python {platform.python_version()}; "
        f"services: {'given' if args.database_url else 'embedded PG'}, "
        f"{'given broker' if args.kafka_bootstrap else 'local broker'}"
    )
    row = (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} UTC | `{command.strip()}` | {throughput:,.0f} "
        f"| {rate:,.0f} | {p50:.0f} | {p99:.0f} | {worst:.0f} | {args.runs} | {notes} |"
    )
    if not args.no_record:
        record(row)
        print(f"recorded in {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
