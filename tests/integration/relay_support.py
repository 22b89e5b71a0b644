"""What the relay tests share: writing events, reading topics back, the delivery check."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from mirror.api.events_feed import SELECT_EVENTS
from mirror.events.pending import RELAY_LOCK_KEY, claim_outbox_batch
from mirror.events.producer import TOPICS
from mirror.model import Event, EventType
from mirror.store.outbox import append_events

ROOT = Path(__file__).resolve().parents[2]
# The relay's claim as it was before sql/100 (every payload stored in data) and
# sql/103 (a sent mark on every row): what the upgrade tests compare with.
CLAIM_BATCH_BEFORE_100 = """
SELECT id, event_id, topic, key, type, source, time, data::text AS data
FROM outbox
WHERE sent_at IS NULL AND id > $2
ORDER BY id
LIMIT $1
"""
WAIT = 60.0  # upper bound of every wait in these tests
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)


def image_event(key: str, n: int, etype: EventType = EventType.IMAGE_UPDATED) -> Event:
    return Event(etype, key, {"image": {"id": key, "tags": [f"v{n}"]}, "n": n})


def blob_event(digest: str, n: int) -> Event:
    return Event(EventType.BLOB_ADDED, digest, {"digest": digest, "size": str(n), "image": "crp"})


def keyed_events(count: int, keys: int, start: int = 0) -> list[Event]:
    """``count`` events over ``keys`` subjects, interleaved, images and blobs."""
    events = []
    for n in range(start, start + count):
        k = n % keys
        events.append(
            blob_event(f"sha256:{k:064x}", n) if k % 5 == 4 else image_event(f"crp{k:017d}", n)
        )
    return events


async def append(pool: asyncpg.Pool, events: Sequence[Event], per_transaction: int = 10) -> None:
    """Write events in transactions of ``per_transaction``, as ingest would."""
    for i in range(0, len(events), per_transaction):
        async with pool.acquire() as conn, conn.transaction():
            await append_events(conn, events[i : i + per_transaction])


async def committed_events(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every event with its sent time (None: not sent), from the view the relay reads."""
    return await pool.fetch(
        "SELECT id, event_id::text, key, sent_at FROM outbox_events ORDER BY id"
    )


async def unsent_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox_events WHERE sent_at IS NULL"))


async def sent_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox_events WHERE sent_at IS NOT NULL"))


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, limit: float = WAIT
) -> None:
    deadline = time.monotonic() + limit
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting until {what}")
        await asyncio.sleep(0.05)


async def wait_all_sent(pool: asyncpg.Pool, limit: float = WAIT) -> None:
    async def drained() -> bool:
        return await unsent_count(pool) == 0

    await wait_until(drained, "every outbox row is marked sent", limit)


async def wait_sent_above(pool: asyncpg.Pool, count: int, limit: float = WAIT) -> None:
    async def above() -> bool:
        return await sent_count(pool) > count

    await wait_until(above, f"more than {count} rows are marked sent", limit)


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    key: str
    headers: dict[str, bytes]
    value: bytes

    @property
    def event_id(self) -> str:
        return self.headers["ce_id"].decode()


async def read_topics(
    bootstrap: str, prefix: str, *, expect_ids: set[str], limit: float = WAIT
) -> list[Delivered]:
    """Every record of ``<prefix>.images``, ``.blobs`` and ``.tags`` from the start, read
    until each id in ``expect_ids`` was seen and the topics are read to their end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        topics = [f"{prefix}.{topic}" for topic in TOPICS]
        deadline = time.monotonic() + limit
        partitions: list[TopicPartition] = []
        for topic in topics:
            while not (found := consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise AssertionError(f"topic {topic} never appeared")
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
            partitions += [TopicPartition(topic, p) for p in found]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        delivered: list[Delivered] = []
        seen: set[str] = set()
        while True:
            end = await consumer.end_offsets(partitions)
            positions = [await consumer.position(tp) for tp in partitions]
            at_end = all(pos >= end[tp] for pos, tp in zip(positions, partitions, strict=True))
            if at_end and expect_ids <= seen:
                return delivered
            if time.monotonic() > deadline:
                missing = len(expect_ids - seen)
                raise AssertionError(f"{missing} of {len(expect_ids)} events never reached Kafka")
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for r in records:
                    headers = {name: value for name, value in r.headers}
                    item = Delivered(
                        tp.topic, tp.partition, r.offset, (r.key or b"").decode(), headers,
                        r.value or b"",
                    )  # fmt: skip
                    delivered.append(item)
                    seen.add(item.event_id)
    finally:
        await consumer.stop()


def assert_exactly_once_in_commit_order(
    delivered: Sequence[Delivered], committed: Sequence[asyncpg.Record]
) -> dict[str, Any]:
    """Every committed event arrived, nothing else did, and after dropping repeated
    ``ce_id``s each key's events came in commit (outbox id) order. Returns counts."""
    outbox_id = {r["event_id"]: r["id"] for r in committed}
    key_of = {r["event_id"]: r["key"] for r in committed}
    first_seen: set[str] = set()
    per_key: dict[str, list[int]] = defaultdict(list)
    partition_of: dict[str, tuple[str, int]] = {}
    duplicates = 0
    for d in sorted(delivered, key=lambda d: (d.topic, d.partition, d.offset)):
        assert d.event_id in outbox_id, f"event {d.event_id} was never committed"
        assert d.key == key_of[d.event_id], "the Kafka key is not the event's subject"
        assert partition_of.setdefault(d.key, (d.topic, d.partition)) == (d.topic, d.partition), (
            f"key {d.key} was spread over partitions"
        )
        if d.event_id in first_seen:
            duplicates += 1
            continue
        first_seen.add(d.event_id)
        per_key[d.key].append(outbox_id[d.event_id])
    missing = set(outbox_id) - first_seen
    assert not missing, f"{len(missing)} committed events never arrived"
    for key, ids in per_key.items():
        assert ids == sorted(ids), f"events of {key} arrived out of commit order"
    return {"events": len(first_seen), "duplicates": duplicates, "keys": len(per_key)}


# -- the relay as a separate process (`python -m mirror relay`)


def relay_env(database_url: str, bootstrap: str, prefix: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    env.update(
        MIRROR_DATABASE_URL=database_url,
        MIRROR_DATA_DIR=str(data_dir),
        MIRROR_KAFKA_BOOTSTRAP=bootstrap,
        MIRROR_KAFKA_TOPIC_PREFIX=prefix,
        MIRROR_LOG_LEVEL="INFO",
    )
    return env


def start_relay_process(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "mirror", "relay", *args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


LOCK_HOLDERS = """
SELECT a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1
"""


async def relay_lock_holders(pool: asyncpg.Pool) -> list[int]:
    """OS pids of the relays holding the active-relay lock (their application_name says)."""
    rows = await pool.fetch(LOCK_HOLDERS, RELAY_LOCK_KEY >> 32, RELAY_LOCK_KEY & 0xFFFF_FFFF)
    pids = []
    for row in rows:
        match = re.search(r"pid (\d+)", row["application_name"] or "")
        pids.append(int(match.group(1)) if match else -1)
    return pids


async def assert_read_as_written(db_pool: asyncpg.Pool, events: Sequence[Event]) -> None:
    """The feed and the relay read every key and payload of ``events`` (the whole
    outbox, in order) as they were written, byte for byte."""
    feed = await db_pool.fetch(SELECT_EVENTS, 0, None, None, len(events) + 1)
    assert [(r["key"], r["type"], orjson.loads(r["data"])) for r in feed] == [
        (e.subject, e.type.value, e.data) for e in events
    ]
    async with db_pool.acquire() as conn:
        claimed = await claim_outbox_batch(conn, len(events) + 1)
    assert [(e.key, e.data) for e in claimed] == [
        (e.subject, orjson.dumps(e.data).decode()) for e in events
    ]
